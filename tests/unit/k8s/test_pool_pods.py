"""The pod a WorkerPool's template becomes, and what the controller reads back from pods."""

from __future__ import annotations

import random
from typing import Any

import pytest

from tether_operator.engine import WorkerLoad
from tether_operator.k8s.pools.pods import (
    DEFAULT_TERMINATION_GRACE_SECONDS,
    DELETION_COST,
    SESSIONS_ANNOTATION,
    STICKY_LABEL,
    TEMPLATE_HASH,
    build_pod,
    created_at,
    default_grace,
    deletion_cost,
    evicted,
    failed,
    metadata_patch,
    new_pod_name,
    node_of,
    session_metadata,
    shutdown_grace,
    template_hash,
    terminating,
)
from tether_operator.k8s.resources.naming import POOL_LABEL
from tether_operator.k8s.resources.specs import WorkerPool


def pool(**spec: Any) -> dict[str, Any]:
    template = {
        "metadata": {"labels": {"team": "ml"}, "annotations": {"note": "x"}},
        "spec": {
            "containers": [
                {
                    "name": "worker",
                    "image": "tether:dev",
                    "env": [
                        {"name": "KEEP", "value": "1"},
                        {"name": "TETHER_SLOTS", "value": "99"},
                    ],
                },
                {"name": "sidecar", "image": "busybox"},
            ],
            "nodeSelector": {"gpu": "yes"},
        },
    }
    return {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": "gpu", "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": {"template": template, "slots": 2, "sessionCapacity": 3, **spec},
    }


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_pod_keeps_the_template_and_gets_labels_owner_and_env() -> None:
    body = pool()
    pod = build_pod(body, name="gpu-x7k2p", scheduler_url="http://sched:7233")
    meta = pod["metadata"]
    assert (meta["name"], meta["namespace"]) == ("gpu-x7k2p", "ml")
    assert meta["labels"] == {
        "team": "ml",
        POOL_LABEL: "gpu",
        "app.kubernetes.io/managed-by": "tether",
        "app.kubernetes.io/component": "worker",
    }
    assert meta["annotations"] == {
        "note": "x",
        DELETION_COST: "0",
        TEMPLATE_HASH: template_hash(body),
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "tether.dev/v1alpha1",
            "kind": "WorkerPool",
            "name": "gpu",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"]["nodeSelector"] == {"gpu": "yes"}
    assert pod["spec"]["terminationGracePeriodSeconds"] == DEFAULT_TERMINATION_GRACE_SECONDS == 60
    assert "affinity" not in pod["spec"]
    for container in pod["spec"]["containers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
        env = env_of(container)
        assert env["TETHER_WORKER_ID"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
        }
        assert env["TETHER_POD_NAME"] == env["TETHER_WORKER_ID"]
        assert env["TETHER_NODE_NAME"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        assert env["TETHER_POD_NAMESPACE"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        assert env["TETHER_POOL"] == "ml.gpu"
        assert env["TETHER_SCHEDULER_URL"] == "http://sched:7233"
        assert (env["TETHER_SLOTS"], env["TETHER_SESSION_CAPACITY"]) == ("2", "3")
    worker_env = env_of(pod["spec"]["containers"][0])
    assert worker_env["KEEP"] == "1"  # the template's own variables stay; ours replace clashes
    assert [e["name"] for e in pod["spec"]["containers"][0]["env"]].count("TETHER_SLOTS") == 1
    # The pool object itself is untouched.
    assert "TETHER_POOL" not in env_of(body["spec"]["template"]["spec"]["containers"][0])


def test_the_first_container_serves_worker_metrics_unless_the_template_chose() -> None:
    first, *others = build_pod(pool(), name="gpu-x7k2p", scheduler_url="u")["spec"]["containers"]
    assert env_of(first)["TETHER_METRICS_PORT"] == "9091"
    assert {"name": "tether-metrics", "containerPort": 9091, "protocol": "TCP"} in first["ports"]
    assert all("TETHER_METRICS_PORT" not in env_of(c) for c in others)  # one network per pod
    chosen = pool()
    chosen["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {"name": "TETHER_METRICS_PORT", "value": "0"}
    )
    (mine, *_) = build_pod(chosen, name="gpu-x7k2p", scheduler_url="u")["spec"]["containers"]
    assert env_of(mine)["TETHER_METRICS_PORT"] == "0"
    assert "tether-metrics" not in [port.get("name") for port in mine.get("ports") or []]


def test_every_container_gets_the_pods_scheduler_token() -> None:
    body = pool()
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = [
        {"name": "data", "mountPath": "/data"}
    ]
    spec = build_pod(body, name="gpu-x7k2p", scheduler_url="u")["spec"]
    assert spec["volumes"] == [
        {"name": "data", "emptyDir": {}},
        {
            "name": "tether-token",
            "projected": {
                "sources": [
                    {
                        "serviceAccountToken": {
                            "audience": "tether.dev/scheduler",
                            "expirationSeconds": 3600,
                            "path": "token",
                        }
                    }
                ]
            },
        },
    ]
    token_mount = {
        "name": "tether-token",
        "mountPath": "/var/run/secrets/tether.dev",
        "readOnly": True,
    }
    worker, sidecar = spec["containers"]
    assert worker["volumeMounts"] == [{"name": "data", "mountPath": "/data"}, token_mount]
    assert sidecar["volumeMounts"] == [token_mount]
    for container in spec["containers"]:
        assert env_of(container)["TETHER_TOKEN_FILE"] == "/var/run/secrets/tether.dev/token"


def test_the_templates_grace_period_and_defaults_are_kept() -> None:
    body = pool()
    body["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 90
    del body["spec"]["slots"], body["spec"]["sessionCapacity"]
    pod = build_pod(body, name="gpu-bcdfg", scheduler_url="u", longest_activity=600)
    assert pod["spec"]["terminationGracePeriodSeconds"] == 90  # the template's word wins
    env = env_of(pod["spec"]["containers"][0])
    assert (env["TETHER_SLOTS"], env["TETHER_SESSION_CAPACITY"]) == ("8", "4")
    assert env["TETHER_SHUTDOWN_GRACE"] == "85"


@pytest.mark.parametrize(
    ("longest", "grace"),
    [(None, 60), (10.0, 60), (55.0, 60), (55.5, 61), (300.0, 305), (7200.0, 3600)],
)
def test_the_default_grace_fits_the_longest_activity_within_an_hour(
    longest: float | None, grace: int
) -> None:
    assert default_grace(longest) == grace
    pod = build_pod(pool(), name="gpu-bcdfg", scheduler_url="u", longest_activity=longest)
    assert pod["spec"]["terminationGracePeriodSeconds"] == grace
    for container in pod["spec"]["containers"]:
        assert env_of(container)["TETHER_SHUTDOWN_GRACE"] == str(grace - 5)


def test_the_shutdown_grace_leaves_five_seconds_to_report_and_is_at_least_one() -> None:
    assert (shutdown_grace(60), shutdown_grace(6), shutdown_grace(5), shutdown_grace(0)) == (
        55,
        1,
        1,
        1,
    )


def test_a_pod_for_soft_sessions_prefers_their_nodes_beside_the_templates_affinity() -> None:
    body = pool()
    theirs = {
        "weight": 10,
        "preference": {"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
    }
    required = {"nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}
    body["spec"]["template"]["spec"]["affinity"] = {
        "nodeAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [theirs],
            "requiredDuringSchedulingIgnoredDuringExecution": required,
        }
    }
    pod = build_pod(body, name="gpu-bcdfg", scheduler_url="u", prefer_nodes=["b", "a", "b"])
    node_affinity = pod["spec"]["affinity"]["nodeAffinity"]
    assert node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] == required
    ours = [
        {
            "weight": 100,
            "preference": {
                "matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]
            },
        }
        for node in ("a", "b")  # a node field selector takes one value: a term per node
    ]
    assert node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] == [theirs, *ours]
    # The pool object itself is untouched.
    assert body["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ] == [theirs]


def test_session_label_and_annotation_and_the_patch_that_sets_them() -> None:
    assert session_metadata({"r/s2", "r/s1"}) == (
        {STICKY_LABEL: "true"},
        {SESSIONS_ANNOTATION: "r/s1,r/s2"},
    )
    assert session_metadata(()) == ({STICKY_LABEL: None}, {SESSIONS_ANNOTATION: None})
    pod: dict[str, Any] = {"metadata": {"labels": {"a": "1"}, "annotations": {DELETION_COST: "0"}}}
    labels, annotations = session_metadata({"r/s1"})
    annotations[DELETION_COST] = "1000"
    assert metadata_patch(pod, labels, annotations) == {
        "metadata": {
            "labels": {STICKY_LABEL: "true"},
            "annotations": {SESSIONS_ANNOTATION: "r/s1", DELETION_COST: "1000"},
        }
    }
    labels, annotations = session_metadata(())
    assert metadata_patch(pod, labels, annotations) is None  # absent already: no patch
    pod["metadata"]["labels"][STICKY_LABEL] = "true"
    assert metadata_patch(pod, labels, annotations) == {
        "metadata": {"labels": {STICKY_LABEL: None}}
    }


def test_a_pod_built_from_a_pool_is_what_the_model_accepts() -> None:
    WorkerPool.model_validate(pool())  # the fixture is a valid pool


def test_pod_names_are_the_pool_and_five_random_characters() -> None:
    name = new_pod_name("gpu", random.Random(1))
    assert name.startswith("gpu-")
    assert len(name) == len("gpu-") + 5
    assert name != new_pod_name("gpu", random.Random(2))
    long = new_pod_name("p" * 80, random.Random(1))
    assert len(long) == 63


@pytest.mark.parametrize(
    ("load", "cost"),
    [
        (None, 0),
        (WorkerLoad(tasks=0, sessions=0), 0),
        (WorkerLoad(tasks=1, sessions=0), 10),
        (WorkerLoad(tasks=5, sessions=0), 10),
        (WorkerLoad(tasks=1, sessions=2), 2010),
    ],
)
def test_deletion_cost_grows_with_sessions_and_is_10_while_busy(
    load: WorkerLoad | None, cost: int
) -> None:
    assert deletion_cost(load) == cost


def test_deletion_cost_counts_sessions_pinned_to_a_worker_that_is_away() -> None:
    assert deletion_cost(None, {"r/s1"}) == 1000  # a HARD session waits for this pod
    assert deletion_cost(WorkerLoad(tasks=1, sessions=1), {"r/s1"}) == 1010


def test_reading_pods_back() -> None:
    pod: dict[str, Any] = {
        "metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:10Z"},
        "status": {"phase": "Running"},
    }
    assert created_at(pod) == 1767225610.0
    assert node_of(pod) == ""
    assert node_of({"metadata": {}, "spec": {"nodeName": "worker-a"}}) == "worker-a"
    assert not terminating(pod)
    assert not failed(pod)
    assert not evicted(pod)
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    assert terminating(pod)
    assert failed({"metadata": {}, "status": {"phase": "Succeeded"}})
    assert evicted({"metadata": {}, "status": {"phase": "Failed", "reason": "Evicted"}})
    by_api = {
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "EvictionByEvictionAPI",
    }
    assert evicted({"metadata": {}, "status": {"phase": "Running", "conditions": [by_api]}})


def test_the_template_hash_follows_what_a_pod_is_made_from() -> None:
    base = template_hash(pool())
    assert template_hash(pool()) == base
    assert template_hash(pool(replicas=5, autoscale=True)) == base, "the count is no template"
    assert template_hash(pool(slots=4)) != base, "a worker limit is in the pod's env"
    changed = pool()
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "tether:v2"
    assert template_hash(changed) != base
