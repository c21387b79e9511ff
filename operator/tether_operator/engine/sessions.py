"""Sticky sessions: which worker a session's task may go to, binding and closing."""

from __future__ import annotations

from . import placement
from .effects import Outbox
from .runs import Run, SessionRecord
from .state import EngineState
from .workers import WorkerState


class Sessions:
    """Binds sessions to workers (placement.py ranks the candidates) and closes them."""

    def __init__(self, state: EngineState, out: Outbox) -> None:
        self.state = state
        self.out = out

    def target(
        self, run: Run, s: SessionRecord, eligible: list[WorkerState], prefer: str | None = None
    ) -> tuple[WorkerState | None, bool]:
        """(worker, binds_now) for a task of session `s`; (None, _) means wait."""
        workers = self.state.workers
        if s.state == "Closed":
            return placement.pick_least_loaded(eligible), False
        if s.state == "Open" and s.worker is not None:
            w = workers.get(s.worker)
            if w is not None and w.usable and w in eligible:
                return w, False
            return None, False
        if s.state == "Broken" and s.strategy == "HARD":
            w = workers.get(s.worker or "")
            if w is not None and w.usable and w in eligible:
                return w, True
            return None, False
        # New (unbound) or SOFT Broken: bind to a worker with a free session slot.
        if prefer is not None:
            w = workers.get(prefer)
            if w is not None and w in eligible and (s.id in w.sessions or w.free_sessions > 0):
                return w, True
        return placement.pick_new_binding(eligible, prefer_node=s.node), True

    def bind(self, run: Run, s: SessionRecord, w: WorkerState) -> None:
        """Bind session `s` to worker `w` (and to no other)."""
        previous = s.worker
        for other in self.state.workers.values():
            if other is not w:
                other.sessions.discard(s.id)
        w.sessions.add(s.id)
        self.out.record(
            run, "SessionBound", session_id=s.id, worker=w.worker_id, pod=w.pod, node=w.node
        )
        if previous is None:
            self.out.notice(
                run.run_id,
                "Normal",
                "SessionBound",
                f"session {s.id} ({s.strategy}) bound to {w.worker_id}",
            )
        else:
            self.out.notice(
                run.run_id,
                "Normal",
                "SessionRebound",
                f"session {s.id} ({s.strategy}) moved from {previous} to {w.worker_id}"
                if previous != w.worker_id
                else f"session {s.id} ({s.strategy}) back on {w.worker_id}",
            )

    def rebind_hard(self, w: WorkerState) -> None:
        """The pod of broken HARD sessions is back: they continue here, cold."""
        for run, s in self.state.held_sessions(w):
            if (
                s.state == "Broken"
                and s.strategy == "HARD"
                and s.worker == w.worker_id
                and run.namespace == w.namespace
            ):
                self.bind(run, s, w)

    def close(self, run: Run, s: SessionRecord) -> None:
        """Close session `s`: no worker holds it any more."""
        self.out.record(run, "SessionClosed", session_id=s.id)
        for w in self.state.workers.values():
            w.sessions.discard(s.id)
