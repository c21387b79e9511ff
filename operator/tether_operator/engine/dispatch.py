"""Placement of pending tasks: which worker runs each queued task, and delivering it."""

from __future__ import annotations

from . import placement
from .deadlines import DeadlineKind
from .effects import Outbox
from .sessions import Sessions
from .state import EngineState, LiveTask


class Dispatch:
    """Hands queued tasks to workers (sessions and placement.py decide which)."""

    def __init__(self, state: EngineState, out: Outbox, sessions: Sessions) -> None:
        self.state = state
        self.out = out
        self.sessions = sessions

    def place(self) -> None:
        """Place every pending task that has somewhere to go, oldest first."""
        st = self.state
        if st.pending_workflows:
            placed = [tid for tid in list(st.pending_workflows) if self._workflow(st.tasks[tid])]
            for tid in placed:
                del st.pending_workflows[tid]
        if not st.pending_activities:
            return
        # Only workers that run activities count: a workflow-only worker's idle slots
        # would otherwise make every event rescan the whole queue.
        room = sum(w.free_slots for w in st.workers.values() if w.activities)
        placed = []
        # Stops at the first moment no worker has a free slot, so a long queue costs
        # nothing per event while the workers are busy.
        for tid in st.pending_activities:
            if room <= 0:
                break
            if self._activity(st.tasks[tid]):
                placed.append(tid)
                room -= 1
        for tid in placed:
            del st.pending_activities[tid]

    def _activity(self, task: LiveTask) -> bool:
        st, out = self.state, self.out
        run = st.runs[task.run_id]
        eligible = [
            w
            for w in st.workers.values()
            if w.usable
            and task.name in w.activities
            and w.free_slots > 0
            and w.serves(run.namespace, run.worker_pool)
        ]
        if not eligible:
            return False
        # A worker still running this very attempt (its start was lost with a scheduler
        # crash) gets it back: it ignores the duplicate and its completion counts, so
        # the attempt does not run twice.
        holder = next((w for w in eligible if task.task_id in w.strays), None)
        binds = False
        s = run.sessions.get(task.session_id) if task.session_id else None
        if s is not None:
            if s.id == run.workflow_session_id and s.state != "Open":
                # The workflow's own session must (re)bind where the workflow can run too,
                # or its next workflow task would have nowhere to go.
                eligible = [w for w in eligible if run.workflow in w.workflows]
            target, binds = self.sessions.target(run, s, eligible)
            rebind_to_holder = binds and holder is not None and holder.free_sessions > 0
            if rebind_to_holder and any(w is holder for w in eligible):
                target = holder
        else:
            target = holder or placement.pick_least_loaded(eligible)
        if target is None:
            return False
        if target is holder:
            target.strays = target.strays - {task.task_id}
        rec = run.activities[task.seq]
        if s is not None and binds:
            self.sessions.bind(run, s, target)
        # True for a session's first activity on a worker: after every binding, and after
        # its HARD worker came back from a restart.
        cold_start = s is not None and s.state == "Open" and s.cold
        now = out.now
        task.worker_id = target.worker_id
        task.started_at = task.last_heartbeat = now
        target.running.add(task.task_id)
        out.record(
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
            st.deadlines.add(now + float(stc), DeadlineKind.START_TO_CLOSE, task.task_id)
        if task.heartbeat_timeout:
            hb_due = now + float(task.heartbeat_timeout)
            st.deadlines.add(hb_due, DeadlineKind.HEARTBEAT, task.task_id)
        out.deliver(
            target.worker_id,
            run.run_id,
            {
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
            },
        )
        return True

    def _workflow(self, task: LiveTask) -> bool:
        st, out = self.state, self.out
        run = st.runs[task.run_id]
        eligible = [
            w
            for w in st.workers.values()
            if w.usable and run.workflow in w.workflows and w.serves(run.namespace, run.worker_pool)
        ]
        if not eligible:
            return False
        if not run.sticky:
            sticky = eligible[0].workflows.get(run.workflow)
            if sticky:  # the strategy became known only now that a worker registered it
                out.record(
                    run, "SessionOpened", session_id=run.workflow_session_id, strategy=sticky, seq=0
                )
                task.session_id = run.workflow_session_id
        s = run.sessions.get(run.workflow_session_id) if run.sticky else None
        binds = False
        if s is not None:
            prefer = run.placement_worker if not s.workers else None
            if prefer is not None and not s.workers:
                w = st.workers.get(prefer)
                if w is None or not w.usable:
                    return False  # a sticky child waits for its parent's worker
            target, binds = self.sessions.target(run, s, eligible, prefer=prefer)
        else:
            target = min(eligible, key=lambda w: (len(w.workflow_tasks), w.worker_id))
        if target is None:
            return False
        if s is not None and binds:
            self.sessions.bind(run, s, target)
        task.worker_id = target.worker_id
        task.started_at = out.now
        target.workflow_tasks.add(task.task_id)
        out.record(
            run,
            "WorkflowTaskStarted",
            task_id=task.task_id,
            attempt=task.attempt,
            worker=target.worker_id,
            pod=target.pod,
            node=target.node,
        )
        out.deliver(
            target.worker_id,
            run.run_id,
            {
                "kind": "workflow",
                "task_id": task.task_id,
                "run_id": run.run_id,
                "workflow": run.workflow,
                "input": run.input,
                "attempt": task.attempt,
                "history": list(run.history),
                "session_id": task.session_id,
                "parent_run_id": run.parent_run_id,
                "retry_defaults": st.retry_defaults.get((run.namespace, run.workflow)),
            },
        )
        return True
