"""Smoke tests of the cluster itself: the behaviours later e2e tests rely on.

Each is something Tether's operator depends on and a fake cluster would get
wrong: real controllers replacing and removing pods, the real scheduler honouring
node affinity, node loss detected from missed heartbeats, cluster DNS across
namespaces, and bound service-account tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kube import (
    Kube,
    KubectlError,
    Obj,
    condition,
    eventually,
    install_crds,
    running_and_ready,
)
from tests.e2e.nodes import NodePower, worker_nodes

SCHEDULER_PORT = 7233


def scheduler_deployment(image: str, replicas: int, **pod_spec: Any) -> Obj:
    """A Deployment running Tether's dev scheduler (plus one worker) from the project image."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "tether"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "tether"}},
            "template": {
                "metadata": {"labels": {"app": "tether"}},
                "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [
                        {
                            "name": "tether",
                            "image": image,
                            "args": [
                                "dev",
                                "/app/examples/ml_inference.py",
                                "--host=0.0.0.0",
                                "--workers=1",
                            ],
                            "ports": [{"containerPort": SCHEDULER_PORT}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": SCHEDULER_PORT},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                    **pod_spec,
                },
            },
        },
    }


def probe_pod(image: str, name: str, command: list[str], **pod_spec: Any) -> Obj:
    """A pod that runs ``command`` once in the project image."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": name, "image": image, "command": command}],
            **pod_spec,
        },
    }


def ready_pods(ns: Kube, count: int) -> list[Obj]:
    pods = [p for p in ns.pods("app=tether") if running_and_ready(p)]
    return pods if len(pods) == count and len(ns.pods("app=tether")) == count else []


def finished(ns: Kube, pod: str) -> str:
    phase = ns.get("pod", pod)["status"].get("phase", "")
    return phase if phase in ("Succeeded", "Failed") else ""


def test_nodes_are_ready_in_distinct_zones(kube: Kube) -> None:
    nodes = [kube.get("node", name) for name in worker_nodes(kube)]
    assert len(nodes) >= 2
    assert all(condition(n, "Ready") == "True" for n in nodes)
    labels = [n["metadata"]["labels"] for n in nodes]
    assert len({lab["kubernetes.io/hostname"] for lab in labels}) == len(nodes)
    assert len({lab["topology.kubernetes.io/zone"] for lab in labels}) >= 2


def test_deployment_pods_run_and_a_deleted_pod_is_replaced(namespace: Kube, image: str) -> None:
    namespace.apply(scheduler_deployment(image, replicas=2))
    pods = eventually(lambda: ready_pods(namespace, 2), what="2 ready tether pods")

    victim = pods[0]["metadata"]["name"]
    namespace.delete("pod", victim, "--wait=false")

    def replaced() -> list[Obj]:
        now = ready_pods(namespace, 2)
        return now if victim not in {p["metadata"]["name"] for p in now} else []

    eventually(replaced, what=f"a ready replacement for deleted pod {victim}")


def test_scaling_down_removes_a_pod(namespace: Kube, image: str) -> None:
    namespace.apply(scheduler_deployment(image, replicas=2))
    eventually(lambda: ready_pods(namespace, 2), what="2 ready tether pods")

    namespace.run("scale", "deployment/tether", "--replicas=1")

    eventually(lambda: len(namespace.list("pods", "app=tether")) == 1, what="one pod left")
    assert ready_pods(namespace, 1)


@pytest.mark.parametrize("key", ["kubernetes.io/hostname", "topology.kubernetes.io/zone"])
def test_required_node_affinity_is_honoured(
    kube: Kube, namespace: Kube, image: str, key: str
) -> None:
    target = kube.get("node", worker_nodes(kube)[-1])
    value = target["metadata"]["labels"][key]
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": key, "operator": "In", "values": [value]}]}
                ]
            }
        }
    }
    namespace.apply(probe_pod(image, "pinned", ["true"], affinity=affinity))

    eventually(lambda: finished(namespace, "pinned") == "Succeeded", what="pod pinned to run")
    assert namespace.get("pod", "pinned")["spec"]["nodeName"] == target["metadata"]["name"]


def test_a_pod_reaches_a_service_in_another_namespace_by_dns_name(
    kube: Kube, namespace: Kube, image: str
) -> None:
    server = namespace
    server.apply(
        scheduler_deployment(image, replicas=1),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "tether"},
            "spec": {
                "selector": {"app": "tether"},
                "ports": [{"port": SCHEDULER_PORT, "targetPort": SCHEDULER_PORT}],
            },
        },
    )
    eventually(lambda: ready_pods(server, 1), what="the tether scheduler to be ready")

    with kube.scratch_namespace(f"{server.namespace}-client") as client:
        url = f"http://tether.{server.namespace}.svc.cluster.local:{SCHEDULER_PORT}"
        client.apply(
            probe_pod(image, "client", ["tether", "--server", url, "get", "workers", "-o", "json"])
        )
        phase = eventually(lambda: finished(client, "client"), what="the client pod to finish")
        output = client.logs("client")
        assert phase == "Succeeded", output
        workers = json.loads(output)
        assert len(workers) == 1, workers


def test_a_pod_authenticates_with_its_bound_service_account_token(
    kube: Kube, namespace: Kube, image: str
) -> None:
    # The pod asks the apiserver who it is, through the kubernetes Service, using
    # the projected (bound, audience-scoped, expiring) token kubelet mounted.
    script = """
import json, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(f"{sa}/token").read()
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
req = urllib.request.Request(
    "https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=body.encode(), method="POST",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
print(urllib.request.urlopen(req, context=ctx).read().decode())
"""
    namespace.apply(probe_pod(image, "whoami", ["python", "-c", script]))
    phase = eventually(lambda: finished(namespace, "whoami"), what="the whoami pod to finish")
    output = namespace.logs("whoami")
    assert phase == "Succeeded", output
    user = json.loads(output)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{namespace.namespace}:default"
    pod_claims = user["extra"]["authentication.kubernetes.io/pod-name"]
    assert pod_claims == ["whoami"], "the token is bound to the pod"

    token = namespace.run("create", "token", "default", "--duration=10m").strip()
    review = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    result = json.loads(kube.run("create", "-o", "json", "-f", "-", stdin=json.dumps(review)))
    assert result["status"]["authenticated"] is True
    assert result["status"]["user"]["username"].endswith(f":{namespace.namespace}:default")


def test_a_stopped_node_goes_not_ready_and_its_pods_are_evicted(
    kube: Kube, namespace: Kube, image: str
) -> None:
    power = NodePower(kube)
    victim = worker_nodes(kube)[-1]
    if power.provider(victim) is None:
        pytest.skip(f"cannot power off {victim} on this cluster")
    pinned_first = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": 100,
                    "preference": {
                        "matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [victim]}
                        ]
                    },
                }
            ]
        }
    }
    namespace.apply(scheduler_deployment(image, replicas=1, affinity=pinned_first))
    (pod,) = eventually(lambda: ready_pods(namespace, 1), what="one ready pod")
    assert pod["spec"]["nodeName"] == victim
    doomed = pod["metadata"]["name"]

    power.stop(victim)
    try:
        eventually(
            lambda: condition(kube.get("node", victim), "Ready") == "Unknown",
            what=f"{victim} to be NotReady",
        )
        taints = {t["key"] for t in kube.get("node", victim)["spec"].get("taints", [])}
        assert "node.kubernetes.io/unreachable" in taints

        def evicted_and_replaced() -> bool:
            old = namespace.get("pod", doomed)
            fresh = [p for p in namespace.pods("app=tether") if running_and_ready(p)]
            return "deletionTimestamp" in old["metadata"] and any(
                p["spec"]["nodeName"] != victim for p in fresh
            )

        eventually(evicted_and_replaced, timeout=120, what=f"{doomed} evicted and replaced")
    finally:
        power.start(victim)
    eventually(lambda: condition(kube.get("node", victim), "Ready") == "True", what="node back")


def probe_object(minimum: int, maximum: int) -> Obj:
    spec = {"minReplicas": minimum, "maxReplicas": maximum}
    return {
        "apiVersion": "e2e.tether.dev/v1",
        "kind": "Probe",
        "metadata": {"name": "p"},
        "spec": spec,
    }


def test_crd_schemas_and_cel_rules_are_enforced(kube: Kube, namespace: Kube) -> None:
    (crd,) = install_crds(kube, [Path(__file__).parent / "testdata" / "probes-crd.yaml"])
    try:
        namespace.apply(probe_object(1, 2))
        with pytest.raises(KubectlError, match="minReplicas must not exceed maxReplicas"):
            namespace.apply(probe_object(3, 2))
        with pytest.raises(KubectlError, match=r"spec.minReplicas.*greater than or equal to 0"):
            namespace.apply(probe_object(-1, 2))
    finally:
        kube.delete("crd", crd, "--wait=false")
