"""What a due deadline does: one handler per `DeadlineKind`."""

from __future__ import annotations

from collections.abc import Callable
from typing import assert_never

from .deadlines import Deadline, DeadlineKind
from .effects import Outbox
from .lifecycle import Lifecycle
from .retry import Retries
from .state import EngineState
from .tasks import Tasks

Handler = Callable[["Timeouts", Deadline], None]


class Timeouts:
    """Fires due deadlines: worker silence, attempt timeouts, retries, timers, HARD waits,
    and the end of a restart's grace for workers that have not come back.

    Deadlines are never removed when they stop mattering; each handler checks that
    its deadline still applies and ignores it otherwise.
    """

    def __init__(
        self,
        state: EngineState,
        out: Outbox,
        *,
        tasks: Tasks,
        retries: Retries,
        lifecycle: Lifecycle,
    ) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks
        self.retries = retries
        self.lifecycle = lifecycle

    def fire(self, d: Deadline) -> None:
        """Carry out deadline `d`, which is due."""
        _HANDLERS[d.kind](self, d)

    def _worker_silent(self, d: Deadline) -> None:
        st = self.state
        w = st.workers.get(d.key[0])
        if w is None or not w.alive:
            return
        timeout = st.config.worker_heartbeat_timeout
        due = w.last_seen + timeout
        if due <= self.out.now:
            self.lifecycle.lose_worker(w, "HeartbeatTimeout", f"no heartbeat for {timeout:g}s")
        else:
            st.deadlines.add(due, DeadlineKind.WORKER, w.worker_id)

    def _attempt_timed_out(self, d: Deadline) -> None:
        st = self.state
        task = st.tasks.get(d.key[0])
        if task is None or task.worker_id is None:
            return
        if d.kind is DeadlineKind.HEARTBEAT:
            due = task.last_heartbeat + float(task.heartbeat_timeout or 0)
            if due > self.out.now:
                st.deadlines.add(due, DeadlineKind.HEARTBEAT, task.task_id)
                return
            err = {
                "type": "HeartbeatTimeout",
                "reason": "HeartbeatTimeout",
                "message": f"no heartbeat for {task.heartbeat_timeout:g}s",
            }
        else:
            err = {
                "type": "StartToCloseTimeout",
                "reason": "StartToCloseTimeout",
                "message": "the attempt exceeded start_to_close_timeout",
            }
        self.tasks.cancel(task, err["reason"])
        self.retries.attempt_failed(task, err, immediate=False)

    def _backoff_over(self, d: Deadline) -> None:
        run = self.state.runs.get(d.key[0])
        if run is None or run.terminal:
            return
        rec = run.activities.get(int(d.key[1]))
        if rec is not None and rec.state == "Backoff" and rec.attempt == d.token:
            self.tasks.enqueue_activity(run, rec)

    def _timer_fired(self, d: Deadline) -> None:
        run = self.state.runs.get(d.key[0])
        seq = int(d.key[1])
        if run is None or run.terminal or run.timers[seq].fired:
            return
        self.out.record(run, "TimerFired", seq=seq)
        self.tasks.resolve(run, seq, ok=True)

    def _hard_session_waited(self, d: Deadline) -> None:
        run = self.state.runs.get(d.key[0])
        if run is None or run.terminal:
            return
        s = run.sessions[d.key[1]]
        if (
            s.state == "Broken"
            and s.broken_at is not None
            and s.broken_at + run.schedule_timeout <= self.out.now + 1e-9
        ):
            self.lifecycle.fail_session_broken(run, s)

    def _restart_grace_over(self, d: Deadline) -> None:
        self.lifecycle.worker_not_back(d.key[0])


def _handler(kind: DeadlineKind) -> Handler:
    """The handler of each kind: adding a kind fails the type check until it has one."""
    match kind:
        case DeadlineKind.WORKER:
            return Timeouts._worker_silent
        case DeadlineKind.START_TO_CLOSE | DeadlineKind.HEARTBEAT:
            return Timeouts._attempt_timed_out
        case DeadlineKind.RETRY:
            return Timeouts._backoff_over
        case DeadlineKind.TIMER:
            return Timeouts._timer_fired
        case DeadlineKind.HARD_SESSION:
            return Timeouts._hard_session_waited
        case DeadlineKind.RESTART_GRACE:
            return Timeouts._restart_grace_over
        case _:
            assert_never(kind)


_HANDLERS: dict[DeadlineKind, Handler] = {kind: _handler(kind) for kind in DeadlineKind}
"""One handler per kind, as plain functions (bound methods would make each engine a cycle)."""
