"""How runs start and end, how attempts fail and retry, and what losing a worker does."""

from __future__ import annotations

import re
from typing import Any

from worker_runtime.wire import (
    DEFAULT_SCHEDULE_TIMEOUT,
    LossReason,
    RunEndType,
    is_loss_reason,
    is_permanent_loss,
)

from .deadlines import DeadlineKind
from .dispatch import Dispatch
from .effects import RunEnded, WorkerGone
from .errors import WorkflowNotFound
from .retry import backoff, policy_of, should_retry
from .runs import Run, SessionRecord, event
from .state import LiveTask
from .workers import WorkerState

_SLUG = re.compile(r"[^a-z0-9-]+")


class Lifecycle(Dispatch):
    """Run start and end, attempt failure and retry, worker loss and broken sessions."""

    def _create_run(
        self,
        run_id: str,
        req: dict[str, Any],
        parent: tuple[Run, int] | None,
        placement_worker: str | None = None,
    ) -> Run:
        data = {
            "run_id": run_id,
            "workflow": req["workflow"],
            "input": req.get("input"),
            "schedule_timeout": float(req.get("schedule_timeout") or DEFAULT_SCHEDULE_TIMEOUT),
            "parent_run_id": parent[0].run_id if parent else None,
            "parent_seq": parent[1] if parent else None,
            "placement_worker": placement_worker,
        }
        ev = event("RunStarted", self._now, **data)
        run = Run.started(ev)
        self.runs[run_id] = run
        self._new_events.setdefault(run_id, []).append(ev)
        sticky = req.get("sticky") or self._registered_sticky(run.workflow)
        if sticky:
            self._record(
                run, "SessionOpened", session_id=run.workflow_session_id, strategy=sticky, seq=0
            )
        self._notice(run_id, "Normal", "RunStarted", f"run {run_id} of {run.workflow} started")
        self._enqueue_workflow_task(run)
        return run

    def _check_registered(self, workflow: str) -> None:
        if not self.config.require_registered_workflows:
            return
        known = sorted({name for w in self.workers.values() for name in w.workflows})
        if workflow not in known:
            listed = ", ".join(repr(k) for k in known) or "none yet: start a worker first"
            raise WorkflowNotFound(
                f"no worker has registered workflow {workflow!r}; registered workflows: {listed}",
                field="workflow",
            )

    def _registered_sticky(self, workflow: str) -> str | None:
        for w in self.workers.values():
            if workflow in w.workflows:
                return w.workflows[workflow]
        return None

    def _new_run_id(self, workflow: str, now: float) -> str:
        self._run_counter += 1
        slug = _SLUG.sub("-", workflow.lower()).strip("-")[:40] or "run"
        stamp = _base36(int(now * 1000) % 36**6)
        rid = f"{slug}-{stamp}{_base36(self._run_counter % 36**2):0>2}"
        while rid in self.runs:
            self._run_counter += 1
            rid = f"{slug}-{stamp}{_base36(self._run_counter % 36**3):0>3}"
        return rid

    def _finish_run(self, run: Run, type_: RunEndType, **data: Any) -> None:
        self._record(run, type_, **data)
        rid = run.run_id
        for tid in sorted(self.tasks_of_run.get(rid, ())):
            task = self.tasks[tid]
            self._drop_task(task)
            if task.worker_id is not None:
                self._deliver(
                    task.worker_id, {"kind": "cancel", "task_id": task.task_id, "reason": type_}
                )
        self.workflow_task_of.pop(rid, None)
        for s in run.sessions.values():
            if s.state != "Closed":
                self._close_session(run, s)
        for child in run.children.values():
            crun = self.runs.get(child.run_id)
            if crun is not None and not crun.terminal:
                self._finish_run(crun, "RunCancelled", reason=f"parent run {rid} ended")
        level = "Normal" if run.phase == "Succeeded" else "Warning"
        reason = {"Succeeded": "RunSucceeded", "Failed": "RunFailed"}.get(run.phase, "RunCancelled")
        msg = f"run {rid} {run.phase.lower()}"
        if run.error:
            msg += f": {run.error.get('message') or run.error.get('type')}"
        self._notice(rid, level, reason, msg)
        self._fx.append(RunEnded(rid))
        if run.parent_run_id and run.parent_seq is not None:
            parent = self.runs.get(run.parent_run_id)
            if parent is not None and not parent.terminal:
                if run.phase == "Succeeded":
                    self._record(parent, "ChildCompleted", seq=run.parent_seq, result=run.result)
                    self._resolve(parent, run.parent_seq, ok=True, result=run.result)
                else:
                    err = {
                        "type": "ChildWorkflowError",
                        "reason": (run.error or {}).get("reason"),
                        "message": f"child run {rid} ({run.workflow}) {run.phase.lower()}: "
                        f"{(run.error or {}).get('message', '')}",
                        "non_retryable": True,
                    }
                    self._record(parent, "ChildFailed", seq=run.parent_seq, error=err)
                    self._resolve(parent, run.parent_seq, ok=False, error=err)

    def _fail_run(self, run: Run, error: dict[str, Any]) -> None:
        if not run.terminal:
            self._finish_run(run, "RunFailed", error=error)

    def _fail_session_broken(self, run: Run, s: SessionRecord) -> None:
        lost = f"HARD session {s.id} lost worker {s.worker}"
        if s.reason is not None and is_loss_reason(s.reason) and is_permanent_loss(s.reason):
            message = f"{lost}: {s.reason}; a HARD session never moves to another worker"
        else:
            message = (
                f"{lost} ({s.reason}) and it did not come back within "
                f"scheduleTimeout={run.schedule_timeout:g}s"
            )
        error = {"type": "SessionBroken", "reason": "SessionBroken", "non_retryable": True}
        self._fail_run(run, {**error, "message": message})

    def _close_session(self, run: Run, s: SessionRecord) -> None:
        self._record(run, "SessionClosed", session_id=s.id)
        for w in self.workers.values():
            w.sessions.discard(s.id)

    def _resolve(
        self,
        run: Run,
        seq: int,
        *,
        ok: bool,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Tell the workflow's worker the outcome of step `seq`, if the workflow is running."""
        tid = self.workflow_task_of.get(run.run_id)
        task = self.tasks.get(tid) if tid else None
        if task is None or task.worker_id is None:
            return  # the next workflow task gets it from the history
        self._deliver(
            task.worker_id,
            {
                "kind": "resolution",
                "run_id": run.run_id,
                "workflow_task_id": task.task_id,
                "seq": seq,
                "ok": ok,
                "result": result,
                "error": error,
            },
        )

    def _attempt_failed(self, task: LiveTask, error: dict[str, Any], *, immediate: bool) -> None:
        self._drop_task(task)
        run = self.runs[task.run_id]
        if run.terminal:
            return
        rec = run.activities[task.seq]
        policy = policy_of(rec.options)
        retry_at: float | None = None
        if should_retry(policy, error, task.attempt):
            retry_at = self._now if immediate else self._now + backoff(policy, task.attempt)
        self._record(
            run,
            "ActivityFailed",
            seq=task.seq,
            attempt=task.attempt,
            error=error,
            retry_at=retry_at,  # None: the final failure
            heartbeat_details=task.heartbeat_details,
        )
        if retry_at is not None:
            if immediate:
                self._enqueue_activity(run, rec)
            else:
                self.deadlines.add(
                    retry_at, DeadlineKind.RETRY, run.run_id, str(task.seq), token=task.attempt
                )
        else:
            # The SDK words it: "activity X failed after N attempt(s): Type: message".
            final = {**error, "attempts": task.attempt}
            self._resolve(run, task.seq, ok=False, error=final)

    def _lose_worker(
        self, w: WorkerState, reason: LossReason, message: str, *, permanent: bool
    ) -> None:
        if not w.alive:
            if permanent:
                self._fail_hard_sessions_of(w, reason, message)
            return
        w.alive = False
        w.lost_reason = reason
        self._fx.append(WorkerGone(w.worker_id, reason))
        detail = message or reason
        self._notice(
            None,
            "Warning",
            "WorkerLost",
            f"worker {w.worker_id} lost: {reason}"
            + (f" ({message})" if message and message != reason else ""),
        )
        # Sessions first, so the retried activities below see them Broken.
        for run, s in self._held_sessions(w):
            sid = s.id
            if s.state == "Open" and s.worker == w.worker_id:
                self._record(
                    run,
                    "SessionBroken",
                    session_id=sid,
                    reason=reason,
                    message=f"worker {w.worker_id} lost: {detail}",
                )
                self._notice(
                    run.run_id,
                    "Warning",
                    "SessionBroken",
                    f"session {sid} ({s.strategy}) broken: worker {w.worker_id} {reason}",
                )
            if s.strategy == "HARD":
                if permanent:
                    self._fail_session_broken(run, s)
                else:
                    self.deadlines.add(
                        self._now + run.schedule_timeout, DeadlineKind.HARD_SESSION, run.run_id, sid
                    )
            else:
                w.sessions.discard(sid)
        for tid in sorted(w.running):
            task = self.tasks.get(tid)
            if task is not None:
                err = {
                    "type": "WorkerLost",
                    "reason": reason,
                    "non_retryable": False,
                    "message": f"worker {w.worker_id} lost while running the activity: {detail}",
                }
                self._attempt_failed(task, err, immediate=True)
        w.running.clear()
        for tid in sorted(w.workflow_tasks):
            task = self.tasks.get(tid)
            if task is None:
                continue
            self._drop_task(task)
            run = self.runs[task.run_id]
            self.workflow_task_of.pop(run.run_id, None)
            if run.terminal:
                continue
            self._record(run, "WorkflowTaskLost", task_id=tid, reason=reason)
            self._enqueue_workflow_task(run)
        w.workflow_tasks.clear()

    def _fail_hard_sessions_of(self, w: WorkerState, reason: LossReason, message: str) -> None:
        for run, s in self._held_sessions(w):
            if s.state == "Broken":
                self._fail_session_broken(run, s)
        w.sessions.clear()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
