"""Resuming a run rebuilt from stored history after a scheduler restart.

A restart loses no work a worker still holds: an attempt that was running keeps its
task id and its worker, and an open session its worker, for `restart_grace` seconds.
A worker that registers again within it picks up where it was (its completions are
accepted; a task its heartbeats do not list is dispatched again by the lost-task
rule). A worker that does not come back fails its attempts and breaks its sessions
with `SchedulerRestarted` (see `Lifecycle.worker_not_back`). Workflow tasks are
replayed from history on a new workflow task, as after any loss.
"""

from __future__ import annotations

from .deadlines import DeadlineKind
from .effects import Outbox
from .runs import ActivityRecord, Run
from .sessions import Sessions
from .state import EngineState, LiveTask
from .tasks import Tasks
from .workers import WorkerState


class Restore:
    """Puts a replayed run back to work: deadlines, queued and running attempts, and
    sessions kept for the workers that come back (`restart_grace`)."""

    def __init__(
        self, state: EngineState, out: Outbox, *, tasks: Tasks, sessions: Sessions
    ) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks
        self.sessions = sessions

    def resume(self, run: Run) -> None:
        """Resume live run `run`, already replayed and added to the state.

        Running attempts and open sessions wait up to `restart_grace` for their
        worker; the workflow task is replayed.
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
                w = st.workers.get(s.worker)
                if w is None:
                    st.reserved.setdefault(s.worker, set()).add(s.id)
                    self._await_worker(s.worker)
                elif w.alive:
                    w.sessions.add(s.id)
                else:
                    self.out.record(
                        run,
                        "SessionBroken",
                        session_id=s.id,
                        reason="SchedulerRestarted",
                        message=f"the scheduler restarted and worker {s.worker} is gone",
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
            if rec.state == "Running" and self._resume_attempt(run, rec):
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

    def _resume_attempt(self, run: Run, rec: ActivityRecord) -> bool:
        """Keep running attempt `rec` on its worker; False if that worker is known lost."""
        st, now = self.state, self.out.now
        if rec.task_id is None or rec.worker is None:
            return False
        w = st.workers.get(rec.worker)
        if w is not None and not w.alive:
            return False
        task = LiveTask(
            task_id=rec.task_id,
            kind="activity",
            run_id=run.run_id,
            seq=rec.seq,
            name=rec.name,
            attempt=rec.attempt,
            session_id=rec.session_id,
            worker_id=rec.worker,
            started_at=now,
            last_heartbeat=now,
            heartbeat_details=rec.heartbeat_details,
            heartbeat_timeout=rec.options.get("heartbeat_timeout"),
        )
        st.adopt_task(task)
        if w is not None:
            w.running.add(task.task_id)
        else:
            self._await_worker(rec.worker)
            st.restored[rec.worker].add(task.task_id)
        stc = rec.options.get("start_to_close_timeout")
        if stc:
            began = rec.started_at if rec.started_at is not None else now
            st.deadlines.add(began + float(stc), DeadlineKind.START_TO_CLOSE, task.task_id)
        if task.heartbeat_timeout:
            due = now + float(task.heartbeat_timeout)
            st.deadlines.add(due, DeadlineKind.HEARTBEAT, task.task_id)
        return True

    def _await_worker(self, worker_id: str) -> None:
        """Give `worker_id` `restart_grace` to register again (once per worker)."""
        st = self.state
        if worker_id not in st.restored:
            st.restored[worker_id] = set()
            due = self.out.now + st.config.restart_grace
            st.deadlines.add(due, DeadlineKind.RESTART_GRACE, worker_id)

    def worker_back(self, w: WorkerState) -> None:
        """`w` registered after a restore: it goes on with the attempts it was running
        (its heartbeats say whether it still holds them)."""
        st = self.state
        for tid in sorted(st.restored.pop(w.worker_id, ())):
            task = st.tasks.get(tid)
            if task is not None and task.worker_id == w.worker_id:
                w.running.add(tid)
                task.started_at = task.last_heartbeat = self.out.now
                task.missing_since = None
