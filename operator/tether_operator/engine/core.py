"""The engine: events in, history and effects out. Pure: no I/O, time is passed in.

Every public method records history events on the runs it touches (the runs'
state is a fold of those events, see `runs.py`), places pending tasks on workers,
and returns the effects for the host to carry out, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, assert_never

from worker_runtime.wire import LOSS_REASONS, is_loss_reason, is_permanent_loss

from .commands import Commands
from .deadlines import Deadline, DeadlineKind
from .effects import Effect
from .errors import InvalidCommand, RunAlreadyExists, UnknownWorker
from .runs import Run
from .state import EngineConfig, LiveTask
from .views import run_view
from .workers import WorkerState

__all__ = ["Engine", "EngineConfig", "LiveTask"]


class Engine(Commands):
    """Run state machines, retries, timeouts, sessions and placement for one scheduler."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        super().__init__(config)
        self._on_deadline = {kind: self._deadline_handler(kind) for kind in DeadlineKind}

    def register_worker(self, req: dict[str, Any], now: float) -> list[Effect]:
        """A worker process (re)starts and says what it can run."""
        with self._batch(now) as out:
            new = WorkerState.from_registration(req, now)
            old = self.workers.get(new.worker_id)
            if old is not None and old.alive and old.incarnation == new.incarnation:
                old.workflows, old.activities = new.workflows, new.activities
                old.slots, old.session_capacity = new.slots, new.session_capacity
                old.last_seen = now
                return out
            if old is not None:
                if old.alive:
                    self._lose_worker(old, "ProcessExited", "the worker restarted", permanent=False)
                # Broken HARD sessions keep their reservation so the worker's capacity
                # is still theirs when it comes back.
                new.sessions = set(old.sessions)
            else:
                new.sessions = self._reserved.pop(new.worker_id, set())
            self.workers[new.worker_id] = new
            self._rebind_hard_sessions(new)
            self.deadlines.add(
                now + self.config.worker_heartbeat_timeout, DeadlineKind.WORKER, new.worker_id
            )
            self._notice(
                None,
                "Normal",
                "WorkerRegistered",
                f"worker {new.worker_id} registered "
                f"(node {new.node or '-'}, {new.slots} slots, "
                f"{new.session_capacity} sessions)",
            )
        return out

    def worker_seen(self, worker_id: str, now: float) -> list[Effect]:
        """Liveness: any request from the worker counts."""
        w = self.workers.get(worker_id)
        if w is None or not w.alive:
            raise UnknownWorker(
                f"worker {worker_id!r} is not registered; register it again", field="worker_id"
            )
        w.last_seen = now
        return []

    def worker_lost(self, worker_id: str, reason: str, message: str, now: float) -> list[Effect]:
        """The worker's process or pod is gone (or stopped heartbeating)."""
        with self._batch(now) as out:
            w = self.workers.get(worker_id)
            if w is None:
                raise UnknownWorker(f"worker {worker_id!r} is not registered", field="worker_id")
            if not is_loss_reason(reason):
                raise InvalidCommand(
                    f"unknown worker loss reason {reason!r}; use one of {', '.join(LOSS_REASONS)}",
                    field="reason",
                )
            self._lose_worker(w, reason, message, permanent=is_permanent_loss(reason))
        return out

    def start_run(self, req: dict[str, Any], now: float) -> tuple[str, list[Effect]]:
        """Start a run of a workflow; it stays Pending until a worker can take it."""
        with self._batch(now) as out:
            self._check_registered(req["workflow"])
            run_id = req.get("run_id") or self._new_run_id(req["workflow"], now)
            if run_id in self.runs:
                raise RunAlreadyExists(f"run {run_id!r} already exists", field="run_id")
            self._create_run(run_id, req, parent=None)
        return run_id, out

    def cancel_run(self, run_id: str, now: float) -> list[Effect]:
        with self._batch(now) as out:
            run = self._get_run(run_id)
            if not run.terminal:
                self._finish_run(run, "RunCancelled", reason="cancelled by a client")
        return out

    def workflow_commands(
        self,
        worker_id: str,
        run_id: str,
        workflow_task_id: str,
        commands: list[dict[str, Any]],
        now: float,
    ) -> list[Effect]:
        """Commands emitted by workflow code running on `worker_id`."""
        with self._batch(now) as out:
            self.worker_seen(worker_id, now)
            run = self._get_run(run_id)
            if run.terminal or self.workflow_task_of.get(run_id) != workflow_task_id:
                return out  # a stale workflow task (its worker was replaced): ignore
            task = self.tasks[workflow_task_id]
            if task.worker_id != worker_id:
                return out
            for cmd in commands:
                if run.terminal:
                    break
                try:
                    self._apply_command(run, worker_id, cmd)
                except (InvalidCommand, KeyError, TypeError, ValueError) as exc:
                    msg = exc.message if isinstance(exc, InvalidCommand) else repr(exc)
                    self._fail_run(
                        run,
                        {
                            "type": "InvalidCommand",
                            "reason": "InvalidCommand",
                            "non_retryable": True,
                            "message": f"worker {worker_id} sent a bad "
                            f"{cmd.get('type')!r} command: {msg}",
                        },
                    )
        return out

    def activity_completed(
        self, worker_id: str, task_id: str, result: Any, now: float
    ) -> list[Effect]:
        with self._batch(now) as out:
            self._touch(worker_id, now)
            task = self._live_task_on(worker_id, task_id)
            if task is None:
                return out
            self._drop_task(task)
            run = self.runs[task.run_id]
            self._record(
                run, "ActivityCompleted", seq=task.seq, attempt=task.attempt, result=result
            )
            self._resolve(run, task.seq, ok=True, result=result)
        return out

    def activity_failed(
        self, worker_id: str, task_id: str, error: dict[str, Any], now: float
    ) -> list[Effect]:
        with self._batch(now) as out:
            self._touch(worker_id, now)
            task = self._live_task_on(worker_id, task_id)
            if task is not None:
                self._attempt_failed(task, error, immediate=False)
        return out

    def activity_heartbeat(
        self, worker_id: str, task_id: str, details: Any, now: float
    ) -> tuple[bool, list[Effect]]:
        """Record heartbeat details; False means the task is gone and should stop."""
        self._touch(worker_id, now)
        task = self._live_task_on(worker_id, task_id)
        if task is None:
            return False, []
        task.last_heartbeat = now
        task.heartbeat_details = details
        return True, []

    def next_deadline(self) -> float | None:
        return self.deadlines.next_time()

    def advance(self, now: float) -> list[Effect]:
        """Fire every deadline that is due at `now`."""
        with self._batch(now) as out:
            while (d := self.deadlines.pop_due(now)) is not None:
                self._fire(d)
        return out

    def _fire(self, d: Deadline) -> None:
        self._on_deadline[d.kind](d)

    def _deadline_handler(self, kind: DeadlineKind) -> Callable[[Deadline], None]:
        """The handler of each kind: adding a kind fails the type check until it has one."""
        match kind:
            case DeadlineKind.WORKER:
                return self._worker_due
            case DeadlineKind.START_TO_CLOSE | DeadlineKind.HEARTBEAT:
                return self._attempt_due
            case DeadlineKind.RETRY:
                return self._retry_due
            case DeadlineKind.TIMER:
                return self._timer_due
            case DeadlineKind.HARD_SESSION:
                return self._hard_session_due
            case _:
                assert_never(kind)

    def _worker_due(self, d: Deadline) -> None:
        w = self.workers.get(d.key[0])
        if w is None or not w.alive:
            return
        due = w.last_seen + self.config.worker_heartbeat_timeout
        if due <= self._now:
            self._lose_worker(
                w,
                "HeartbeatTimeout",
                f"no heartbeat for {self.config.worker_heartbeat_timeout:g}s",
                permanent=False,
            )
        else:
            self.deadlines.add(due, DeadlineKind.WORKER, w.worker_id)

    def _attempt_due(self, d: Deadline) -> None:
        task = self.tasks.get(d.key[0])
        if task is None or task.worker_id is None:
            return
        if d.kind is DeadlineKind.HEARTBEAT:
            due = task.last_heartbeat + float(task.heartbeat_timeout or 0)
            if due > self._now:
                self.deadlines.add(due, DeadlineKind.HEARTBEAT, task.task_id)
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
        worker_id = task.worker_id
        self._deliver(
            worker_id, {"kind": "cancel", "task_id": task.task_id, "reason": err["reason"]}
        )
        self._attempt_failed(task, err, immediate=False)

    def _retry_due(self, d: Deadline) -> None:
        run = self.runs.get(d.key[0])
        if run is None or run.terminal:
            return
        rec = run.activities.get(int(d.key[1]))
        if rec is not None and rec.state == "Backoff" and rec.attempt == d.token:
            self._enqueue_activity(run, rec)

    def _timer_due(self, d: Deadline) -> None:
        run = self.runs.get(d.key[0])
        seq = int(d.key[1])
        if run is None or run.terminal or run.timers[seq].fired:
            return
        self._record(run, "TimerFired", seq=seq)
        self._resolve(run, seq, ok=True)

    def _hard_session_due(self, d: Deadline) -> None:
        run = self.runs.get(d.key[0])
        if run is None or run.terminal:
            return
        s = run.sessions[d.key[1]]
        if (
            s.state == "Broken"
            and s.broken_at is not None
            and s.broken_at + run.schedule_timeout <= self._now + 1e-9
        ):
            self._fail_session_broken(run, s)

    def is_terminal(self, run_id: str) -> bool:
        return self._get_run(run_id).terminal

    def run_view(self, run_id: str) -> dict[str, Any]:
        return run_view(self._get_run(run_id), self.runs)

    def list_runs(self) -> list[dict[str, Any]]:
        return [run_view(r, self.runs) for r in self.runs.values()]

    def worker_views(self) -> list[dict[str, Any]]:
        return [w.view() for w in self.workers.values()]

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._get_run(run_id).history)

    def restore(self, run_id: str, events: list[dict[str, Any]], now: float) -> list[Effect]:
        """Rebuild a run from stored history after a scheduler restart.

        Attempts that were running are retried (their workers may be gone) and open
        sessions count as broken until their worker registers again.
        """
        with self._batch(now) as out:
            run = Run.replay(events)
            if run.run_id in self.runs:
                raise RunAlreadyExists(f"run {run.run_id!r} already exists", field="run_id")
            self.runs[run.run_id] = run
            if run.terminal:
                return out
            for s in run.sessions.values():
                if s.state == "Open" and s.worker is not None:
                    self._record(
                        run,
                        "SessionBroken",
                        session_id=s.id,
                        reason="SchedulerRestarted",
                        message="the scheduler restarted",
                    )
                if s.state == "Broken" and s.strategy == "HARD" and s.worker is not None:
                    broken_at = s.broken_at if s.broken_at is not None else now
                    due = max(now, broken_at + run.schedule_timeout)
                    self.deadlines.add(due, DeadlineKind.HARD_SESSION, run.run_id, s.id)
                    w = self.workers.get(s.worker)
                    if w is not None:
                        w.sessions.add(s.id)
                        if w.alive:
                            self._rebind_hard_sessions(w)
                    else:
                        self._reserved.setdefault(s.worker, set()).add(s.id)
            for rec in run.activities.values():
                if rec.local:
                    continue
                if rec.state == "Running":
                    self._record(
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
                    self.deadlines.add(
                        rec.retry_at,
                        DeadlineKind.RETRY,
                        run.run_id,
                        str(rec.seq),
                        token=rec.attempt,
                    )
                elif rec.state in ("Scheduled", "Backoff"):
                    self._enqueue_activity(run, rec)
            for t in run.timers.values():
                if not t.fired:
                    self.deadlines.add(t.fire_at, DeadlineKind.TIMER, run.run_id, str(t.seq))
            self._enqueue_workflow_task(run)
        return out
