"""How many pods a WorkerPool wants, and which pods go first: pure decisions.

The controller (`controller.py`) feeds these with the pool's spec, its live pods and the
engine's demand; nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from tether_operator.engine import Demand, WorkerLoad
from tether_operator.k8s.resources.specs import WorkerPoolSpec, parse_duration

__all__ = ["PodState", "Target", "autoscale_target", "clamp", "scale_down_order"]


@dataclass(frozen=True, slots=True)
class PodState:
    """A live pod of the pool as the controller sees it."""

    name: str
    created_at: float
    """Unix seconds."""
    load: WorkerLoad | None
    """What its worker holds; None while no worker of that name is registered."""
    idle_for: float
    """Seconds since it last held a task or session (since it was first seen, if never)."""
    pinned: frozenset[str] = field(default_factory=frozenset)
    """Sessions pinned to its worker, alive or not (a HARD session waits for a worker
    whose container restarts)."""

    @property
    def sessions(self) -> int:
        """How many sessions need this pod."""
        return max(self.load.sessions if self.load is not None else 0, len(self.pinned))

    @property
    def busy(self) -> bool:
        return bool(self.pinned) or (self.load is not None and not self.load.idle)


@dataclass(frozen=True, slots=True)
class Target:
    """A pool's desired pod count and whether its limits held it back."""

    replicas: int
    limited: str = ""
    """Why the count was held at a limit (for the ScalingLimited condition); "" if not."""


def clamp(spec: WorkerPoolSpec, replicas: int) -> Target:
    """`replicas` within [minReplicas, maxReplicas]."""
    low = spec.min_replicas or 0
    if replicas < low:
        return Target(low, f"held at minReplicas={low} (wanted {replicas})")
    if spec.max_replicas is not None and replicas > spec.max_replicas:
        return Target(
            spec.max_replicas, f"held at maxReplicas={spec.max_replicas} (wanted {replicas})"
        )
    return Target(replicas)


def autoscale_target(
    spec: WorkerPoolSpec, pods: Iterable[PodState], demand: Demand | None
) -> Target:
    """The pod count an autoscaled pool wants now.

    Work waiting for a worker adds pods (one per `slots` queued tasks and one per
    `sessionCapacity` sessions waiting) on top of the busy ones, never fewer than
    exist; with nothing waiting, a pod idle for `idleTimeout` is no longer wanted, one
    pod at a time (the next one at the next decision, a tick later).
    """
    live = list(pods)
    busy = sum(1 for p in live if p.busy)
    if demand is not None and demand.unmet:
        extra = math.ceil(demand.queued / spec.slots) + math.ceil(
            demand.sessions_waiting / spec.session_capacity
        )
        return clamp(spec, max(len(live), busy + extra))
    idle_timeout = parse_duration(spec.idle_timeout)
    kept = sum(1 for p in live if p.busy or p.idle_for < idle_timeout)
    return clamp(spec, max(kept, len(live) - 1))


def scale_down_order(pods: Iterable[PodState]) -> list[PodState]:
    """Pods in the order scale-down removes them: idle ones (no session, no task; a pod
    whose worker has not registered counts as idle), then the fewest sessions (pinned
    ones included), then the fewest tasks, newest first among equals."""

    def key(p: PodState) -> tuple[bool, int, int, float, str]:
        tasks = p.load.tasks if p.load else 0
        return (p.busy, p.sessions, tasks, -p.created_at, p.name)

    return sorted(pods, key=key)
