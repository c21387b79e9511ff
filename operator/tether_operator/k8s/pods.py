"""Worker pods of a WorkerPool: the pod the pool's template becomes, and reading pods back.

Pure functions over plain Kubernetes objects (dicts, as the API server sends them);
the controller in `pools.py` does the I/O.
"""

from __future__ import annotations

import copy
import random
from datetime import datetime
from typing import Any

from tether_operator.engine import WorkerLoad
from tether_operator.k8s.naming import pool_id_for
from tether_operator.k8s.resources import API_VERSION
from tether_operator.scheduler.auth import SCHEDULER_AUDIENCE

__all__ = [
    "DEFAULT_TERMINATION_GRACE_SECONDS",
    "DELETION_COST",
    "POOL_LABEL",
    "build_pod",
    "created_at",
    "deletion_cost",
    "evicted",
    "failed",
    "new_pod_name",
    "terminating",
    "worker_env",
]

POOL_LABEL = "tether.dev/pool"
"""Label on every pod of a pool: the pool's name."""
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
"""Annotation other controllers (ReplicaSets, autoscalers) read: lower goes first."""
DEFAULT_TERMINATION_GRACE_SECONDS = 20
"""Grace when the template sets none: a stopping worker finishes running activities
for up to 10 s and drains unacknowledged reports for 5 s more."""

TOKEN_DIR = "/var/run/secrets/tether.dev"
"""Where worker containers find their scheduler token (`TETHER_TOKEN_FILE`)."""
TOKEN_VOLUME = "tether-token"
TOKEN_EXPIRATION_SECONDS = 3600
"""Lifetime of the projected token; the kubelet renews it well before (at 80%)."""

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the one generateName uses: no vowels
_MAX_POD_NAME = 63  # pod names become hostnames: a DNS label


def new_pod_name(pool: str, rng: random.Random | None = None) -> str:
    """`<pool>-<5 random characters>`, shortening the pool part to fit a DNS label."""
    pick = rng or random.SystemRandom()
    suffix = "".join(pick.choice(_NAME_ALPHABET) for _ in range(5))
    stem = pool[: _MAX_POD_NAME - len(suffix) - 1].rstrip("-.")
    return f"{stem}-{suffix}"


def _field_env(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def worker_env(pool: dict[str, Any], scheduler_url: str) -> list[dict[str, Any]]:
    """What every container of the pool's pods is told about itself and the scheduler."""
    meta, spec = pool["metadata"], pool["spec"]
    return [
        _field_env("TETHER_WORKER_ID", "metadata.name"),
        _field_env("TETHER_POD_NAME", "metadata.name"),
        _field_env("TETHER_NODE_NAME", "spec.nodeName"),
        _field_env("TETHER_POD_NAMESPACE", "metadata.namespace"),
        {"name": "TETHER_POOL", "value": pool_id_for(meta["namespace"], meta["name"])},
        {"name": "TETHER_SCHEDULER_URL", "value": scheduler_url},
        {"name": "TETHER_SLOTS", "value": str(spec.get("slots", 8))},
        {"name": "TETHER_SESSION_CAPACITY", "value": str(spec.get("sessionCapacity", 4))},
        {"name": "TETHER_TOKEN_FILE", "value": f"{TOKEN_DIR}/token"},
    ]


def _add_token_volume(spec: dict[str, Any]) -> None:
    """The pod's projected service-account token for the scheduler (audience
    `tether.dev/scheduler`, bound to the pod), mounted read-only in every container."""
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != TOKEN_VOLUME]
    token = {
        "audience": SCHEDULER_AUDIENCE,
        "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
        "path": "token",
    }
    volumes.append(
        {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}
    )
    spec["volumes"] = volumes
    for container in spec["containers"]:
        mounts = [m for m in container.get("volumeMounts") or [] if m.get("name") != TOKEN_VOLUME]
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": True})
        container["volumeMounts"] = mounts


def build_pod(pool: dict[str, Any], *, name: str, scheduler_url: str) -> dict[str, Any]:
    """The pod `name` of WorkerPool `pool` (the object as the API server sends it).

    The template is kept as written; Tether adds the pool label, an owner reference
    (the pod is garbage-collected with the pool), a deletion cost, the worker's
    environment in every container (replacing variables of the same name), the
    scheduler token volume, and a termination grace period if the template sets none.
    """
    meta = pool["metadata"]
    template = copy.deepcopy(pool["spec"]["template"])
    tmeta = template.get("metadata") or {}
    labels = {
        **(tmeta.get("labels") or {}),
        POOL_LABEL: meta["name"],
        "app.kubernetes.io/managed-by": "tether",
        "app.kubernetes.io/component": "worker",
    }
    annotations = {**(tmeta.get("annotations") or {}), DELETION_COST: "0"}
    spec = template["spec"]
    env = worker_env(pool, scheduler_url)
    ours = {e["name"] for e in env}
    for container in spec["containers"]:
        theirs = [e for e in container.get("env") or [] if e.get("name") not in ours]
        container["env"] = [*theirs, *env]
    _add_token_volume(spec)
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_SECONDS)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": "WorkerPool",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": spec,
    }


def deletion_cost(load: WorkerLoad | None) -> int:
    """The pod's `pod-deletion-cost`: 0 when idle, 10 while it runs tasks, plus 1000 per
    open session. Coarse on purpose: it changes when a pod turns busy or idle or a
    session opens or closes, not with every task (each change is a pod PATCH)."""
    if load is None:
        return 0
    return min(load.sessions * 1000 + (10 if load.tasks else 0), 2**31 - 1)


def terminating(pod: dict[str, Any]) -> bool:
    """The pod is being deleted (it has a deletionTimestamp)."""
    return bool(pod["metadata"].get("deletionTimestamp"))


def failed(pod: dict[str, Any]) -> bool:
    """The pod ended for good (phase Failed or Succeeded): it will not run again."""
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def evicted(pod: dict[str, Any]) -> bool:
    """The pod was evicted: by the kubelet (node pressure) or through the Eviction API."""
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return True
    return any(
        c.get("type") == "DisruptionTarget"
        and c.get("status") == "True"
        and c.get("reason") == "EvictionByEvictionAPI"
        for c in status.get("conditions") or []
    )


def created_at(pod: dict[str, Any]) -> float:
    """The pod's creationTimestamp as Unix seconds (0 when absent)."""
    stamp = pod["metadata"].get("creationTimestamp")
    if not stamp:
        return 0.0
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
