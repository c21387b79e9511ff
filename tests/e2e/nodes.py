"""Stopping and starting a node, whichever cluster the tests run on."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.kube import Kube

HACK_CLUSTER = Path(__file__).resolve().parents[2] / "hack" / "cluster"


@dataclass
class NodePower:
    """Cuts and restores a node's power: hack/cluster on the local cluster, docker on kind."""

    kube: Kube

    def provider(self, node: str) -> str | None:
        obj = self.kube.get("node", node)
        if obj["metadata"].get("labels", {}).get("tether.dev/local-cluster") == "true":
            return "local"
        if str(obj["spec"].get("providerID", "")).startswith("kind://"):
            return "kind"
        return None

    def stop(self, node: str) -> None:
        self._run(node, stop=True)

    def start(self, node: str) -> None:
        self._run(node, stop=False)

    def _run(self, node: str, *, stop: bool) -> None:
        match self.provider(node):
            case "local":
                verb = "stop-node" if stop else "start-node"
                sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
                command = [*sudo, str(HACK_CLUSTER), verb, node]
            case "kind":
                command = ["docker", "stop" if stop else "start", node]
            case _:
                raise RuntimeError(f"do not know how to power {node} off and on")
        subprocess.run(command, check=True, capture_output=True, timeout=180)
