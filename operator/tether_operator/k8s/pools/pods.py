"""Worker pods of a WorkerPool: the pod the pool's template becomes, and reading pods back.

Pure functions over plain Kubernetes objects (dicts, as the API server sends them);
the controller in `controller.py` does the I/O.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from tether_operator.engine import WorkerLoad
from tether_operator.k8s.resources.naming import POOL_LABEL, pool_id_for
from tether_operator.k8s.resources.specs import API_VERSION
from tether_operator.scheduler.auth import SCHEDULER_AUDIENCE

__all__ = [
    "DEFAULT_TERMINATION_GRACE_SECONDS",
    "DELETION_COST",
    "MAX_TERMINATION_GRACE_SECONDS",
    "REPORT_MARGIN_SECONDS",
    "SESSIONS_ANNOTATION",
    "STICKY_LABEL",
    "TEMPLATE_HASH",
    "build_pod",
    "created_at",
    "default_grace",
    "deletion_cost",
    "evicted",
    "failed",
    "metadata_patch",
    "new_pod_name",
    "node_of",
    "pod_template_hash",
    "session_metadata",
    "shutdown_grace",
    "template_hash",
    "terminating",
    "trouble",
    "worker_env",
]

TEMPLATE_HASH = "tether.dev/template-hash"
"""Annotation on every pod of a pool: `template_hash` of the pool it was made from."""
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
"""Annotation other controllers (ReplicaSets, autoscalers) read: lower goes first."""
STICKY_LABEL = "tether.dev/sticky"
"""Label `true` on a pod while it hosts sticky sessions (absent otherwise)."""
SESSIONS_ANNOTATION = "tether.dev/sessions"
"""Annotation on a pod hosting sessions: their ids, comma-separated, sorted."""
DEFAULT_TERMINATION_GRACE_SECONDS = 60
"""Grace when the template sets none and no registered activity needs more."""
MAX_TERMINATION_GRACE_SECONDS = 3600
"""The longest default grace: an activity longer than an hour is not waited for."""
REPORT_MARGIN_SECONDS = 5
"""Of the grace period, what a stopping worker keeps for reporting its last results
(`TETHER_SHUTDOWN_GRACE` is the rest)."""

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


def default_grace(longest_activity: float | None) -> int:
    """The termination grace of a pod whose template sets none: 60 s, or long enough for
    the longest `start_to_close_timeout` the pool's workers registered plus the report
    margin, at most an hour."""
    if longest_activity is None:
        return DEFAULT_TERMINATION_GRACE_SECONDS
    wanted = math.ceil(longest_activity) + REPORT_MARGIN_SECONDS
    return max(DEFAULT_TERMINATION_GRACE_SECONDS, min(wanted, MAX_TERMINATION_GRACE_SECONDS))


WORKER_METRICS_PORT = 9091
"""Where a pool pod's worker serves Prometheus `/metrics` (its first container's port
`tether-metrics`), unless the template sets `TETHER_METRICS_PORT` itself (0: none)."""


def _add_metrics_port(container: dict[str, Any]) -> None:
    """Tell the worker container to serve `/metrics` and name the port, unless the
    template already chose (`TETHER_METRICS_PORT`) or the port is taken."""
    if any(e.get("name") == "TETHER_METRICS_PORT" for e in container.get("env") or []):
        return
    ports = container.get("ports") or []
    if any(p.get("containerPort") == WORKER_METRICS_PORT for p in ports):
        return
    container["env"] = [
        *(container.get("env") or []),
        {"name": "TETHER_METRICS_PORT", "value": str(WORKER_METRICS_PORT)},
    ]
    container["ports"] = [
        *ports,
        {"name": "tether-metrics", "containerPort": WORKER_METRICS_PORT, "protocol": "TCP"},
    ]


def shutdown_grace(termination_grace: int) -> int:
    """Seconds a worker gives running attempts after SIGTERM (`TETHER_SHUTDOWN_GRACE`):
    the pod's grace minus the report margin, at least 1."""
    return max(1, termination_grace - REPORT_MARGIN_SECONDS)


def worker_env(
    pool: dict[str, Any], scheduler_url: str, grace: int = DEFAULT_TERMINATION_GRACE_SECONDS
) -> list[dict[str, Any]]:
    """What every container of the pool's pods is told about itself and the scheduler;
    `grace` is the pod's termination grace period."""
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
        {"name": "TETHER_SHUTDOWN_GRACE", "value": str(shutdown_grace(grace))},
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


def _prefer_nodes(spec: dict[str, Any], nodes: Iterable[str]) -> None:
    """Add a preferred node affinity for `nodes` to pod spec `spec`, beside the
    template's own affinity: one term per node (a node field selector takes one value)."""
    wanted = sorted(set(nodes))
    if not wanted:
        return
    affinity = spec.setdefault("affinity", {})
    node_affinity = affinity.setdefault("nodeAffinity", {})
    preferred = node_affinity.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
    for node in wanted:
        term = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
        preferred.append({"weight": 100, "preference": term})


def template_hash(pool: dict[str, Any]) -> str:
    """What a pod of `pool` is made from, hashed: its template and the worker limits
    it is told (`slots`, `sessionCapacity`). A pod with another hash is outdated."""
    spec = pool["spec"]
    made_from = {
        "template": spec["template"],
        "slots": spec.get("slots", 8),
        "sessionCapacity": spec.get("sessionCapacity", 4),
    }
    text = json.dumps(made_from, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pod_template_hash(pod: dict[str, Any]) -> str | None:
    """The `template_hash` a pod was made from; None for a pod made before pods carried
    one (it counts as current: an operator upgrade does not roll every pool)."""
    return (pod["metadata"].get("annotations") or {}).get(TEMPLATE_HASH)


def build_pod(
    pool: dict[str, Any],
    *,
    name: str,
    scheduler_url: str,
    longest_activity: float | None = None,
    prefer_nodes: Iterable[str] = (),
) -> dict[str, Any]:
    """The pod `name` of WorkerPool `pool` (the object as the API server sends it).

    The template is kept as written; Tether adds the pool label, an owner reference
    (the pod is garbage-collected with the pool), a deletion cost, the worker's
    environment in every container (replacing variables of the same name), the
    scheduler token volume, `terminationMessagePolicy: FallbackToLogsOnError` where a
    container sets none, a termination grace period if the template sets none (`default_grace` of
    `longest_activity`, the longest `start_to_close_timeout` its workers registered)
    and, for SOFT sessions waiting to rebind, a preferred node affinity to
    `prefer_nodes` (their old nodes).
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
    annotations = {
        **(tmeta.get("annotations") or {}),
        DELETION_COST: "0",
        TEMPLATE_HASH: template_hash(pool),
    }
    spec = template["spec"]
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is None:
        grace = spec["terminationGracePeriodSeconds"] = default_grace(longest_activity)
    env = worker_env(pool, scheduler_url, int(grace))
    ours = {e["name"] for e in env}
    for container in spec["containers"]:
        theirs = [e for e in container.get("env") or [] if e.get("name") not in ours]
        container["env"] = [*theirs, *env]
        # A crash without a message of its own shows its log's tail on the pool.
        container.setdefault("terminationMessagePolicy", "FallbackToLogsOnError")
    _add_metrics_port(spec["containers"][0])  # the pod's network is shared: one worker serves
    _add_token_volume(spec)
    _prefer_nodes(spec, prefer_nodes)
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


def deletion_cost(load: WorkerLoad | None, pinned: Collection[str] = ()) -> int:
    """The pod's `pod-deletion-cost`: 0 when idle, 10 while it runs tasks, plus 1000 per
    session pinned to it (`pinned`, or what `load` counts if more). Coarse on purpose:
    it changes when a pod turns busy or idle or a session opens or closes, not with
    every task (each change is a pod PATCH)."""
    sessions = max(load.sessions if load is not None else 0, len(pinned))
    busy = load is not None and load.tasks > 0
    return min(sessions * 1000 + (10 if busy else 0), 2**31 - 1)


def session_metadata(
    pinned: Collection[str],
) -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(labels, annotations) saying which sessions a pod hosts: `tether.dev/sticky=true`
    and `tether.dev/sessions=<ids>` while it hosts some, both None (removed) when none."""
    if not pinned:
        return {STICKY_LABEL: None}, {SESSIONS_ANNOTATION: None}
    return {STICKY_LABEL: "true"}, {SESSIONS_ANNOTATION: ",".join(sorted(pinned))}


def metadata_patch(
    pod: dict[str, Any],
    labels: dict[str, str | None],
    annotations: dict[str, str | None],
) -> dict[str, Any] | None:
    """The merge patch that gives `pod` these labels and annotations (None: absent),
    with only the keys that change; None when nothing does."""
    meta = pod["metadata"]
    patch: dict[str, Any] = {}
    for section, wanted in (("labels", labels), ("annotations", annotations)):
        current = meta.get(section) or {}
        changed = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changed:
            patch[section] = changed
    return {"metadata": patch} if patch else None


def node_of(pod: dict[str, Any]) -> str:
    """The node the pod is bound to ("" while unscheduled)."""
    return str((pod.get("spec") or {}).get("nodeName") or "")


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


_STUCK_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons of a container that will not start without a change to the pod."""


def trouble(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Why the pod's worker cannot start or keeps ending, in Kubernetes' words: (reason,
    message), e.g. ("ErrImagePull", "container worker: ..."); None if nothing says so."""
    status = pod.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "Unschedulable":
            return "Unschedulable", str(cond.get("message") or "no node can run the pod")
    containers = [*(status.get("initContainerStatuses") or [])]
    containers += status.get("containerStatuses") or []
    for cs in containers:
        name = cs.get("name", "?")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        ended = (cs.get("lastState") or {}).get("terminated") or {}
        if waiting.get("reason") in _STUCK_WAITING:
            detail = waiting.get("message") or waiting["reason"]
            return str(waiting["reason"]), f"container {name}: {detail}"
        if ended.get("reason") == "OOMKilled":
            return "OOMKilled", (
                f"container {name} was killed for using more memory than its limit "
                f"({cs.get('restartCount', 0)} restarts): raise resources.limits.memory"
            )
        if waiting.get("reason") == "CrashLoopBackOff":
            said = str(ended.get("message") or "").strip().splitlines()
            why = f": {said[-1]}" if said else ""
            return "CrashLoopBackOff", (
                f"container {name} keeps exiting (exit code {ended.get('exitCode', '?')}, "
                f"{cs.get('restartCount', 0)} restarts){why}"
            )
    return None
