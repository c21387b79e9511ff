"""The cluster's nodes as the tests need them: which run workloads, how to cut their
power (on kind), and where their pods reach this machine."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

from tests.e2e.kube import Kube, condition, eventually


def worker_nodes(kube: Kube) -> list[str]:
    """The names of the nodes that run workloads (not kind's control plane), sorted."""
    return sorted(
        n["metadata"]["name"]
        for n in kube.list("nodes")
        if "node-role.kubernetes.io/control-plane" not in n["metadata"].get("labels", {})
    )


@dataclass
class NodePower:
    """Cuts and restores a kind node's power: `docker stop --time 0` of the node's
    container (SIGKILL, no shutdown), then `docker start`."""

    kube: Kube

    def provider(self, node: str) -> str | None:
        """`kind` for a kind node (the only kind of node whose power the tests can cut)."""
        provider_id = str(self.kube.get("node", node)["spec"].get("providerID", ""))
        return "kind" if provider_id.startswith("kind://") else None

    def stop(self, node: str) -> None:
        self._run(node, stop=True)

    def start(self, node: str) -> None:
        """Power the node on and wait until it is Ready again."""
        self._run(node, stop=False)

    def _run(self, node: str, *, stop: bool) -> None:
        if self.provider(node) != "kind":
            raise RuntimeError(f"do not know how to power {node} off and on: not a kind node")
        # kind://docker/CLUSTER/CONTAINER: the node's name differs from its container's.
        container = self.kube.get("node", node)["spec"]["providerID"].rsplit("/", 1)[-1]
        command = ["docker", "stop", "--time", "0"] if stop else ["docker", "start"]
        subprocess.run([*command, container], check=True, capture_output=True, timeout=180)
        if not stop:
            eventually(
                lambda: condition(self.kube.get("node", node), "Ready") == "True",
                timeout=180,
                what=f"{node} Ready again",
            )


def host_from_pods() -> str:
    """The address at which pods reach this machine: the gateway of kind's docker
    network (`TETHER_E2E_HOST_IP` overrides, for another cluster)."""
    if address := os.environ.get("TETHER_E2E_HOST_IP"):
        return address
    out = subprocess.run(
        ["docker", "network", "inspect", "kind", "--format", "{{json .IPAM.Config}}"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return next(c["Gateway"] for c in json.loads(out) if "." in c.get("Gateway", ""))
