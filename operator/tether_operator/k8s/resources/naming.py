"""How WorkflowRun and WorkerPool objects and the engine's ids map onto each other.

The engine knows a run by one string; on Kubernetes a run is a namespaced object.
A run id is `<namespace>.<name>`: a namespace is a DNS label (no dots), so the
first dot splits it back unambiguously. A worker pool's id (what its pods register
as `TETHER_POOL`, and what a run's `worker_pool` names) is built the same way, so
a run uses the pool of its own namespace.
"""

from __future__ import annotations

__all__ = ["POOL_LABEL", "pool_id_for", "pool_name", "pool_object", "run_id_for", "run_object"]

POOL_LABEL = "tether.dev/pool"
"""Label on every pod of a pool: the pool's name."""


def run_id_for(namespace: str, name: str) -> str:
    """The engine's run id for WorkflowRun `namespace/name`."""
    return f"{namespace}.{name}"


def run_object(run_id: str) -> tuple[str, str]:
    """`(namespace, name)` of the WorkflowRun behind `run_id`.

    Raises ValueError for a run id that no WorkflowRun has (one without a dot).
    """
    namespace, dot, name = run_id.partition(".")
    if not dot or not namespace or not name:
        raise ValueError(f"run id {run_id!r} does not name a WorkflowRun (<namespace>.<name>)")
    return namespace, name


def pool_id_for(namespace: str, name: str) -> str:
    """The engine's pool id for WorkerPool `namespace/name` (TETHER_POOL of its pods)."""
    return f"{namespace}.{name}"


def pool_object(pool_id: str) -> tuple[str, str]:
    """`(namespace, name)` of the WorkerPool behind `pool_id`; ValueError if none can be."""
    namespace, dot, name = pool_id.partition(".")
    if not dot or not namespace or not name:
        raise ValueError(f"pool id {pool_id!r} does not name a WorkerPool (<namespace>.<name>)")
    return namespace, name


def pool_name(pool_id: str) -> str:
    """The WorkerPool name in `pool_id` (the id itself when it names no WorkerPool)."""
    return pool_id.partition(".")[2] or pool_id
