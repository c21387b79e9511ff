"""Resuming a run rebuilt from stored history after a scheduler restart."""

from __future__ import annotations

from .deadlines import DeadlineKind
from .effects import Outbox
from .runs import Run
from .sessions import Sessions
from .state import EngineState
from .tasks import Tasks


class Restore:
    """Puts a replayed run back to work: deadlines, reserved sessions, retried attempts."""

    def __init__(
        self, state: EngineState, out: Outbox, *, tasks: Tasks, sessions: Sessions
    ) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks
        self.sessions = sessions

    def resume(self, run: Run) -> None:
        """Resume live run `run`, already replayed and added to the state.

        Attempts that were running are retried (their workers may be gone) and open
        sessions count as broken until their worker registers again.
        """
        self._resume_sessions(run)
        self._resume_activities(run)
        for t in run.timers.values():
            if not t.fired:
                self.state.deadlines.add(t.fire_at, DeadlineKind.TIMER, run.run_id, str(t.seq))
        self.tasks.enqueue_workflow_task(run)

    def _resume_sessions(self, run: Run) -> None:
        st, now = self.state, self.out.now
        for s in run.sessions.values():
            if s.state == "Open" and s.worker is not None:
                self.out.record(
                    run,
                    "SessionBroken",
                    session_id=s.id,
                    reason="SchedulerRestarted",
                    message="the scheduler restarted",
                )
            if s.state == "Broken" and s.strategy == "HARD" and s.worker is not None:
                broken_at = s.broken_at if s.broken_at is not None else now
                due = max(now, broken_at + run.schedule_timeout)
                st.deadlines.add(due, DeadlineKind.HARD_SESSION, run.run_id, s.id)
                w = st.workers.get(s.worker)
                if w is not None:
                    w.sessions.add(s.id)
                    if w.alive:
                        self.sessions.rebind_hard(w)
                else:
                    st.reserved.setdefault(s.worker, set()).add(s.id)

    def _resume_activities(self, run: Run) -> None:
        now = self.out.now
        for rec in run.activities.values():
            if rec.local:
                continue
            if rec.state == "Running":
                self.out.record(
                    run,
                    "ActivityFailed",
                    seq=rec.seq,
                    attempt=rec.attempt,
                    error={
                        "type": "SchedulerRestarted",
                        "reason": "SchedulerRestarted",
                        "message": "the scheduler restarted during the attempt",
                    },
                    retry_at=now,
                    heartbeat_details=rec.heartbeat_details,
                )
            if rec.state == "Backoff" and rec.retry_at is not None and rec.retry_at > now:
                seq = str(rec.seq)
                self.state.deadlines.add(
                    rec.retry_at, DeadlineKind.RETRY, run.run_id, seq, token=rec.attempt
                )
            elif rec.state in ("Scheduled", "Backoff"):
                self.tasks.enqueue_activity(run, rec)
