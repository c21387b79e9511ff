"""Live tasks: queueing activity attempts and workflow tasks, and messages about them."""

from __future__ import annotations

from typing import Any

from tether_types.wire import CancelMessage

from .effects import Outbox
from .runs import ActivityRecord, Run
from .state import EngineState, LiveTask


class Tasks:
    """Creates the live tasks placement hands out; tells workers outcomes and cancellations."""

    def __init__(self, state: EngineState, out: Outbox) -> None:
        self.state = state
        self.out = out

    def enqueue_activity(self, run: Run, rec: ActivityRecord) -> None:
        """Queue the next attempt of activity step `rec`."""
        attempt = rec.attempt + 1
        self.state.add_task(
            LiveTask(
                task_id=f"{run.run_id}/{rec.seq}/{attempt}",
                kind="activity",
                run_id=run.run_id,
                seq=rec.seq,
                name=rec.name,
                attempt=attempt,
                session_id=rec.session_id,
                heartbeat_details=rec.heartbeat_details,
                heartbeat_timeout=rec.options.get("heartbeat_timeout"),
            )
        )

    def enqueue_workflow_task(self, run: Run) -> None:
        """Queue a new workflow task for `run`: its code runs (or replays) from history."""
        attempt = run.workflow_attempt + 1
        tid = f"{run.run_id}/wf/{attempt}"
        while tid in self.state.tasks:
            attempt += 1
            tid = f"{run.run_id}/wf/{attempt}"
        self.state.add_task(
            LiveTask(
                task_id=tid,
                kind="workflow",
                run_id=run.run_id,
                seq=0,
                name=run.workflow,
                attempt=attempt,
                session_id=run.workflow_session_id if run.sticky else None,
            )
        )
        self.state.workflow_task_of[run.run_id] = tid

    def resolve(
        self,
        run: Run,
        seq: int,
        *,
        ok: bool,
        result: Any = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        """Tell the workflow's worker the outcome of step `seq`, if the workflow is running."""
        tid = self.state.workflow_task_of.get(run.run_id)
        task = self.state.tasks.get(tid) if tid else None
        if task is None or task.worker_id is None:
            return  # the next workflow task gets it from the history
        task.resolutions_sent += 1
        self.out.deliver(
            task.worker_id,
            run.run_id,
            {
                "kind": "resolution",
                "run_id": run.run_id,
                "workflow_task_id": task.task_id,
                "seq": seq,
                "ok": ok,
                "result": result,
                "error": error,
                "time": self.out.now,  # the outcome's event time: the workflow clock
            },
        )

    def cancel(self, task: LiveTask, reason: str) -> None:
        """Tell the worker of `task` to stop it."""
        if task.worker_id is not None:
            message: CancelMessage = {"kind": "cancel", "task_id": task.task_id, "reason": reason}
            self.out.deliver(task.worker_id, task.run_id, message)
