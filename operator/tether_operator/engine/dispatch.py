"""Queueing and placement: which worker runs each pending task, and session binding."""

from __future__ import annotations

from worker_runtime.wire import ActivityTaskMessage, WorkflowTaskMessage

from . import placement
from .deadlines import DeadlineKind
from .runs import ActivityRecord, Run, SessionRecord
from .state import EngineState, LiveTask
from .workers import WorkerState


class Dispatch(EngineState):
    """Puts tasks in the queues and places them on workers (placement.py decides where)."""

    def _enqueue_activity(self, run: Run, rec: ActivityRecord) -> None:
        attempt = rec.attempt + 1
        tid = f"{run.run_id}/{rec.seq}/{attempt}"
        opts = rec.options
        self._add_task(
            LiveTask(
                task_id=tid,
                kind="activity",
                run_id=run.run_id,
                seq=rec.seq,
                name=rec.name,
                attempt=attempt,
                session_id=rec.session_id,
                heartbeat_details=rec.heartbeat_details,
                heartbeat_timeout=opts.get("heartbeat_timeout"),
            )
        )

    def _enqueue_workflow_task(self, run: Run) -> None:
        attempt = run.workflow_attempt + 1
        tid = f"{run.run_id}/wf/{attempt}"
        while tid in self.tasks:
            attempt += 1
            tid = f"{run.run_id}/wf/{attempt}"
        self._add_task(
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
        self.workflow_task_of[run.run_id] = tid

    def _place(self) -> None:
        if self.pending_workflows:
            placed = [
                tid for tid in list(self.pending_workflows) if self._place_workflow(self.tasks[tid])
            ]
            for tid in placed:
                del self.pending_workflows[tid]
        if not self.pending_activities:
            return
        # Only workers that run activities count: a workflow-only worker's idle slots
        # would otherwise make every event rescan the whole queue.
        room = sum(w.free_slots for w in self.workers.values() if w.activities)
        placed = []
        # Stops at the first moment no worker has a free slot, so a long queue costs
        # nothing per event while the workers are busy.
        for tid in self.pending_activities:
            if room <= 0:
                break
            if self._place_activity(self.tasks[tid]):
                placed.append(tid)
                room -= 1
        for tid in placed:
            del self.pending_activities[tid]

    def _session_target(
        self, run: Run, s: SessionRecord, eligible: list[WorkerState], prefer: str | None = None
    ) -> tuple[WorkerState | None, bool]:
        """(worker, binds_now) for a task of session `s`; (None, _) means wait."""
        if s.state == "Closed":
            return placement.pick_least_loaded(eligible), False
        if s.state == "Open" and s.worker is not None:
            w = self.workers.get(s.worker)
            if w is not None and w.alive and w in eligible:
                return w, False
            return None, False
        if s.state == "Broken" and s.strategy == "HARD":
            w = self.workers.get(s.worker or "")
            if w is not None and w.alive and w in eligible:
                return w, True
            return None, False
        # New (unbound) or SOFT Broken: bind to a worker with a free session slot.
        if prefer is not None:
            w = self.workers.get(prefer)
            if w is not None and w in eligible and (s.id in w.sessions or w.free_sessions > 0):
                return w, True
        return placement.pick_new_binding(eligible, prefer_node=s.node), True

    def _place_activity(self, task: LiveTask) -> bool:
        run = self.runs[task.run_id]
        eligible = [
            w
            for w in self.workers.values()
            if w.alive and task.name in w.activities and w.free_slots > 0
        ]
        if not eligible:
            return False
        binds = False
        s = run.sessions.get(task.session_id) if task.session_id else None
        if s is not None:
            if s.id == run.workflow_session_id and s.state != "Open":
                # The workflow's own session must (re)bind where the workflow can run too,
                # or its next workflow task would have nowhere to go.
                eligible = [w for w in eligible if run.workflow in w.workflows]
            target, binds = self._session_target(run, s, eligible)
        else:
            target = placement.pick_least_loaded(eligible)
        if target is None:
            return False
        rec = run.activities[task.seq]
        if s is not None and binds:
            self._bind(run, s, target)
        # True for a session's first activity on a worker: after every binding, and after
        # its HARD worker came back from a restart.
        cold_start = s is not None and s.state == "Open" and s.cold
        task.worker_id = target.worker_id
        task.started_at = task.last_heartbeat = self._now
        target.running.add(task.task_id)
        self._record(
            run,
            "ActivityStarted",
            seq=task.seq,
            task_id=task.task_id,
            attempt=task.attempt,
            worker=target.worker_id,
            pod=target.pod,
            node=target.node,
            cold_start=cold_start,
        )
        opts = rec.options
        stc = opts.get("start_to_close_timeout")
        if stc:
            self.deadlines.add(self._now + float(stc), DeadlineKind.START_TO_CLOSE, task.task_id)
        if task.heartbeat_timeout:
            self.deadlines.add(
                self._now + float(task.heartbeat_timeout), DeadlineKind.HEARTBEAT, task.task_id
            )
        message: ActivityTaskMessage = {
            "kind": "activity",
            "task_id": task.task_id,
            "run_id": run.run_id,
            "seq": task.seq,
            "workflow": run.workflow,
            "activity": rec.name,
            "args": rec.args,
            "kwargs": rec.kwargs,
            "attempt": task.attempt,
            "options": opts,
            "session_id": task.session_id,
            "cold_start": cold_start,
            "heartbeat_details": task.heartbeat_details,
        }
        self._deliver(target.worker_id, message)
        return True

    def _place_workflow(self, task: LiveTask) -> bool:
        run = self.runs[task.run_id]
        eligible = [w for w in self.workers.values() if w.alive and run.workflow in w.workflows]
        if not eligible:
            return False
        if not run.sticky:
            sticky = eligible[0].workflows.get(run.workflow)
            if sticky:  # the strategy became known only now that a worker registered it
                self._record(
                    run, "SessionOpened", session_id=run.workflow_session_id, strategy=sticky, seq=0
                )
                task.session_id = run.workflow_session_id
        s = run.sessions.get(run.workflow_session_id) if run.sticky else None
        binds = False
        if s is not None:
            prefer = run.placement_worker if not s.workers else None
            if prefer is not None and not s.workers:
                w = self.workers.get(prefer)
                if w is None or not w.alive:
                    return False  # a sticky child waits for its parent's worker
            target, binds = self._session_target(run, s, eligible, prefer=prefer)
        else:
            target = min(eligible, key=lambda w: (len(w.workflow_tasks), w.worker_id))
        if target is None:
            return False
        if s is not None and binds:
            self._bind(run, s, target)
        task.worker_id = target.worker_id
        task.started_at = self._now
        target.workflow_tasks.add(task.task_id)
        self._record(
            run,
            "WorkflowTaskStarted",
            task_id=task.task_id,
            attempt=task.attempt,
            worker=target.worker_id,
            pod=target.pod,
            node=target.node,
        )
        wf_message: WorkflowTaskMessage = {
            "kind": "workflow",
            "task_id": task.task_id,
            "run_id": run.run_id,
            "workflow": run.workflow,
            "input": run.input,
            "attempt": task.attempt,
            "history": list(run.history),
            "session_id": task.session_id,
            "parent_run_id": run.parent_run_id,
        }
        self._deliver(target.worker_id, wf_message)
        return True

    def _bind(self, run: Run, s: SessionRecord, w: WorkerState) -> None:
        previous = s.worker
        for other in self.workers.values():
            if other is not w:
                other.sessions.discard(s.id)
        w.sessions.add(s.id)
        self._record(
            run, "SessionBound", session_id=s.id, worker=w.worker_id, pod=w.pod, node=w.node
        )
        if previous is None:
            self._notice(
                run.run_id,
                "Normal",
                "SessionBound",
                f"session {s.id} ({s.strategy}) bound to {w.worker_id}",
            )
        else:
            self._notice(
                run.run_id,
                "Normal",
                "SessionRebound",
                f"session {s.id} ({s.strategy}) moved from {previous} to {w.worker_id}"
                if previous != w.worker_id
                else f"session {s.id} ({s.strategy}) back on {w.worker_id}",
            )

    def _rebind_hard_sessions(self, w: WorkerState) -> None:
        """The pod of broken HARD sessions is back: they continue here, cold."""
        for run, s in self._held_sessions(w):
            if s.state == "Broken" and s.strategy == "HARD" and s.worker == w.worker_id:
                self._bind(run, s, w)
