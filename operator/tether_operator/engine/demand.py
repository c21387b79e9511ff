"""Demand per worker pool: work that waits for a worker, and how busy each worker is.

A pure query over the engine's state, read by whatever scales pools (the WorkerPool
controller on Kubernetes). It is meaningful after a public engine call, when every
task that some worker could take has been placed: what is still queued then waits
for a worker the pool does not have yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .runs import Run, SessionRecord
from .state import EngineState, LiveTask

NO_POOL = ""
"""The pool key of runs that name no pool and of workers that belong to none."""


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """What one live worker holds."""

    tasks: int
    """Activity attempts and workflow tasks running on it."""
    sessions: int
    """Sticky sessions bound to it (broken HARD sessions waiting for it included)."""

    @property
    def idle(self) -> bool:
        """Nothing runs there and no session needs it: removing it loses nothing."""
        return self.tasks == 0 and self.sessions == 0


@dataclass(slots=True)
class Demand:
    """One pool's waiting work and its live workers' load."""

    queued: int = 0
    """Tasks outside any session (or of a closed one) that no worker can take now."""
    sessions_waiting: int = 0
    """Sessions that need a worker with a free session slot: new ones, and SOFT
    sessions to rebind after their worker was lost."""
    hard_waiting: int = 0
    """Broken HARD sessions waiting for their own worker to come back (a new pod
    cannot take them)."""
    workers: dict[str, WorkerLoad] = field(default_factory=dict)
    """Live workers of the pool by worker id (on Kubernetes: the pod name)."""
    pinned: dict[str, frozenset[str]] = field(default_factory=dict)
    """Session ids pinned to each worker of the pool that holds any, live or lost: open
    sessions bound there and broken HARD sessions waiting for it (its pod is labelled
    and spared by scale-down)."""
    rebind_nodes: frozenset[str] = frozenset()
    """Nodes of broken SOFT sessions of the pool's unfinished runs that are not bound
    again yet: a pod created now should prefer them (node-local caches stay warm)."""

    @property
    def unmet(self) -> bool:
        """Whether a new worker of the pool would get work."""
        return self.queued > 0 or self.sessions_waiting > 0


def pool_demand(state: EngineState) -> dict[str, Demand]:
    """Demand of every pool that has live workers or waiting work."""
    demand: dict[str, Demand] = {}
    for w in state.workers.values():
        pinned = frozenset(sid for sid in w.sessions if _session_live(state, sid))
        if pinned:
            demand.setdefault(w.pool, Demand()).pinned[w.worker_id] = pinned
        if not w.usable:
            continue  # lost, or draining: its pod is on its way out and takes no work
        load = WorkerLoad(tasks=len(w.running) + len(w.workflow_tasks), sessions=len(pinned))
        demand.setdefault(w.pool, Demand()).workers[w.worker_id] = load
    rebind: dict[str, set[str]] = {}
    for run_id in state.tasks_of_run:  # the runs with live tasks: unfinished ones
        run = state.runs.get(run_id)
        if run is None or run.terminal:
            continue
        for record in run.sessions.values():
            if record.state == "Broken" and record.strategy == "SOFT" and record.node:
                rebind.setdefault(run.worker_pool or NO_POOL, set()).add(record.node)
    for pool, nodes in rebind.items():
        demand.setdefault(pool, Demand()).rebind_nodes = frozenset(nodes)
    waiting: dict[str, set[str]] = {}
    hard: dict[str, set[str]] = {}
    for tid in (*state.pending_workflows, *state.pending_activities):
        task = state.tasks[tid]
        run = state.runs[task.run_id]
        pool = run.worker_pool or NO_POOL
        if task.kind == "workflow" and run.placement_worker is not None:
            continue  # a sticky child waits for its parent's worker, not for a new one
        s = _session_of(run, task)
        if s is None:
            demand.setdefault(pool, Demand()).queued += 1
        elif s.state == "Broken" and s.strategy == "HARD":
            hard.setdefault(pool, set()).add(s.id)
        elif s.worker is None or s.state == "Broken":
            waiting.setdefault(pool, set()).add(s.id)
        # else: an open, bound session waits for a slot on its own worker
    for pool, ids in waiting.items():
        demand.setdefault(pool, Demand()).sessions_waiting = len(ids)
    for pool, ids in hard.items():
        demand.setdefault(pool, Demand()).hard_waiting = len(ids)
    return demand


def _session_of(run: Run, task: LiveTask) -> SessionRecord | None:
    if task.session_id is None:
        return None
    s = run.sessions.get(task.session_id)
    return None if s is None or s.state == "Closed" else s


def _session_live(state: EngineState, sid: str) -> bool:
    run = state.run_of_session(sid)
    return run is not None and not run.terminal and run.sessions[sid].state != "Closed"
