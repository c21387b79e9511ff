"""What the engine knows about each worker: capacity, liveness, what it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tether_types.views import WorkerFacts
from tether_types.wire import LossReason


@dataclass(slots=True)
class WorkerState:
    worker_id: str
    pod: str
    node: str
    incarnation: str
    workflows: dict[str, str | None]
    """workflow name -> sticky strategy it was registered with."""
    activities: frozenset[str]
    slots: int
    session_capacity: int
    last_seen: float
    pool: str = ""
    """The worker pool it belongs to ("" for none): runs naming a pool use only its workers."""
    namespace: str = ""
    """The namespace it serves: it runs tasks of that namespace's runs only (a trust
    boundary: a run's input never reaches another namespace's pods)."""
    alive: bool = True
    draining: bool = False
    """Its pod is terminating or its process got SIGTERM: it gets no new tasks, but the
    attempts it runs go on and their outcomes count (`Engine.worker_draining`)."""
    lost_reason: LossReason | None = None
    """Why it is draining or was lost (the most specific report so far)."""
    running: set[str] = field(default_factory=set)
    """Activity task ids dispatched here and not finished: never more than `slots`."""
    workflow_tasks: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    """Sessions bound here (plus broken HARD sessions waiting for this worker)."""
    strays: frozenset[str] = frozenset()
    """Task ids its last heartbeat listed that the engine does not know: attempts it
    still runs whose start a scheduler crash lost (dispatched before it was written).
    The replay schedules them again with the same ids; they go back here."""

    @classmethod
    def from_registration(cls, req: dict[str, Any], now: float) -> WorkerState:
        wid = req["worker_id"]
        return cls(
            worker_id=wid,
            pod=req.get("pod") or wid,
            node=req.get("node") or "",
            incarnation=req["incarnation"],
            workflows={w["name"]: w.get("sticky") for w in req.get("workflows", [])},
            activities=frozenset(a["name"] for a in req.get("activities", [])),
            slots=int(req.get("slots", 8)),
            session_capacity=int(req.get("session_capacity", 4)),
            last_seen=now,
            pool=req.get("pool") or "",
            namespace=req.get("namespace") or "",
        )

    def serves(self, namespace: str, pool: str | None) -> bool:
        """Whether the worker may run tasks of a run of `namespace` restricted to `pool`
        (None: any pool of that namespace)."""
        return self.namespace == namespace and (not pool or self.pool == pool)

    @property
    def usable(self) -> bool:
        """Alive and not draining: it may be given new tasks and sessions."""
        return self.alive and not self.draining

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.running) if self.usable else 0

    @property
    def free_sessions(self) -> int:
        return self.session_capacity - len(self.sessions) if self.usable else 0

    def facts(self) -> WorkerFacts:
        """Where it runs and whether it is alive, for a host to act on."""
        return WorkerFacts(
            self.worker_id, self.pod, self.node, self.pool, self.alive, self.lost_reason
        )

    def view(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "pod": self.pod,
            "node": self.node,
            "pool": self.pool,
            "namespace": self.namespace,
            "alive": self.alive,
            "draining": self.draining,
            "slots": self.slots,
            "running": len(self.running),
            "session_capacity": self.session_capacity,
            "sessions": sorted(self.sessions),
            "workflows": sorted(self.workflows),
            "activities": sorted(self.activities),
            "lost_reason": self.lost_reason,
        }
