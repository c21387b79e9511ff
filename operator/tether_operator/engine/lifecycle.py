"""How runs start and end, and what losing a worker does to its sessions and tasks."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

from tether_types.notices import NoticeReason
from tether_types.wire import (
    DEFAULT_SCHEDULE_TIMEOUT,
    LossReason,
    RunEndType,
    is_loss_reason,
    is_permanent_loss,
    refines,
)

from .deadlines import DeadlineKind
from .effects import Outbox, RunEnded, WorkerGone
from .errors import WorkflowNotFound
from .notices import (
    loss_detail,
    loss_phrase,
    pod_on_node,
    run_losses,
    worker_loss_consequences,
)
from .retry import Retries
from .runs import Run, SessionRecord, event
from .sessions import Sessions
from .state import EngineState, LiveTask
from .tasks import Tasks
from .workers import WorkerState

_SLUG = re.compile(r"[^a-z0-9-]+")


class Lifecycle:
    """Run start and end, worker loss and broken sessions."""

    def __init__(
        self,
        state: EngineState,
        out: Outbox,
        *,
        tasks: Tasks,
        sessions: Sessions,
        retries: Retries,
    ) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks
        self.sessions = sessions
        self.retries = retries

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        run_id: str,
        req: dict[str, Any],
        parent: tuple[Run, int] | None,
        placement_worker: str | None = None,
    ) -> Run:
        """Record RunStarted (and the workflow's session) and queue the first workflow task."""
        out = self.out
        data = {
            "run_id": run_id,
            "workflow": req["workflow"],
            "input": req.get("input"),
            "schedule_timeout": float(req.get("schedule_timeout") or DEFAULT_SCHEDULE_TIMEOUT),
            "parent_run_id": parent[0].run_id if parent else None,
            "parent_seq": parent[1] if parent else None,
            "placement_worker": placement_worker,
            # A child runs in its parent's namespace, and in its pool unless it names its own.
            "namespace": parent[0].namespace if parent else req.get("namespace") or "",
            "worker_pool": req.get("worker_pool") or (parent[0].worker_pool if parent else None),
        }
        ev = event("RunStarted", out.now, **data)
        run = Run.started(ev)
        self.state.runs[run_id] = run
        out.persist(run_id, ev)
        sticky = req.get("sticky") or self.registered_sticky(run.workflow, run.namespace)
        if sticky:
            out.record(
                run, "SessionOpened", session_id=run.workflow_session_id, strategy=sticky, seq=0
            )
        out.run_started(run_id, run.workflow, run.parent_run_id)
        self.tasks.enqueue_workflow_task(run)
        return run

    def check_registered(self, workflow: str, namespace: str) -> None:
        """WorkflowNotFound unless a worker of `namespace` registered `workflow` (when so
        configured)."""
        if self.state.config.require_registered_workflows:
            self.require_registered(workflow, namespace)

    def require_registered(self, workflow: str, namespace: str) -> None:
        """WorkflowNotFound, naming the workflows live workers of `namespace` serve (and
        no other namespace's, nor those of workers gone), unless a worker of `namespace`
        registered `workflow` (one gone may come back, or its pool scale up again)."""
        ours = [w for w in self.state.workers.values() if w.namespace == namespace]
        if not any(workflow in w.workflows for w in ours):
            live = sorted({name for w in ours if w.alive for name in w.workflows})
            listed = ", ".join(repr(k) for k in live) or "none yet: start a worker first"
            where = f" in namespace {namespace!r}" if namespace else ""
            raise WorkflowNotFound(
                f"no worker{where} has registered workflow {workflow!r}; registered "
                f"workflows{where}: {listed}",
                field="workflow",
            )

    def registered_sticky(self, workflow: str, namespace: str) -> str | None:
        """The sticky strategy a worker of `namespace` registered `workflow` with, if any."""
        for w in self.state.workers.values():
            if w.namespace == namespace and workflow in w.workflows:
                return w.workflows[workflow]
        return None

    def new_run_id(self, workflow: str, now: float) -> str:
        """A readable, unused run id: the workflow's slug and a short stamp."""
        st = self.state
        st.run_counter += 1
        slug = _SLUG.sub("-", workflow.lower()).strip("-")[:40] or "run"
        stamp = _base36(int(now * 1000) % 36**6)
        rid = f"{slug}-{stamp}{_base36(st.run_counter % 36**2):0>2}"
        while rid in st.runs:
            st.run_counter += 1
            rid = f"{slug}-{stamp}{_base36(st.run_counter % 36**3):0>3}"
        return rid

    def finish_run(self, run: Run, type_: RunEndType, **data: Any) -> None:
        """End `run`: cancel its tasks and children, close its sessions, tell its parent."""
        st, out = self.state, self.out
        out.record(run, type_, **data)
        rid = run.run_id
        for tid in sorted(st.tasks_of_run.get(rid, ())):
            task = st.tasks[tid]
            st.drop_task(task)
            self.tasks.cancel(task, type_)
        st.workflow_task_of.pop(rid, None)
        for s in run.sessions.values():
            if s.state != "Closed":
                self.sessions.close(run, s)
        for child in run.children.values():
            crun = st.runs.get(child.run_id)
            if crun is not None and not crun.terminal:
                self.finish_run(crun, "RunCancelled", reason=f"parent run {rid} ended")
        level = "Normal" if run.phase == "Succeeded" else "Warning"
        reason: NoticeReason = (
            "RunSucceeded"
            if run.phase == "Succeeded"
            else "RunFailed"
            if run.phase == "Failed"
            else "RunCancelled"
        )
        msg = f"run {rid} {run.phase.lower()}"
        if run.error:
            msg += f": {run.error.get('message') or run.error.get('type')}"
        out.notice(rid, level, reason, msg)
        out.emit(RunEnded(rid))
        if run.parent_run_id and run.parent_seq is not None:
            parent = st.runs.get(run.parent_run_id)
            # A parent restored without its ChildStarted hears of the child on replay.
            if parent is not None and not parent.terminal and run.parent_seq in parent.children:
                self.child_ended(parent, run.parent_seq, run)

    def child_ended(self, parent: Run, seq: int, run: Run) -> None:
        """Tell `parent` that its child `run` (started at `seq`) ended."""
        if run.phase == "Succeeded":
            self.out.record(parent, "ChildCompleted", seq=seq, result=run.result)
            self.tasks.resolve(parent, seq, ok=True, result=run.result)
            return
        err = {
            "type": "ChildWorkflowError",
            "reason": (run.error or {}).get("reason"),
            "message": f"child run {run.run_id} ({run.workflow}) {run.phase.lower()}: "
            f"{(run.error or {}).get('message', '')}",
            "non_retryable": True,
        }
        self.out.record(parent, "ChildFailed", seq=seq, error=err)
        self.tasks.resolve(parent, seq, ok=False, error=err)

    def fail_run(self, run: Run, error: dict[str, Any]) -> None:
        """Fail `run` with `error`, unless it already ended."""
        if not run.terminal:
            self.finish_run(run, "RunFailed", error=error)

    def fail_session_broken(self, run: Run, s: SessionRecord) -> None:
        """Fail the run of HARD session `s`, whose pod is gone for good or away too long."""
        where = pod_on_node(s.pod or s.worker, s.node)
        lost = f"HARD session {s.id} lost worker {s.worker} ({where})"
        if s.reason is not None and is_loss_reason(s.reason) and is_permanent_loss(s.reason):
            message = (
                f"{lost}: the pod {loss_phrase(s.reason)} ({s.reason}); "
                "a HARD session never moves to another pod"
            )
        else:
            message = (
                f"{lost} ({s.reason}) and it did not come back within "
                f"scheduleTimeout={run.schedule_timeout:g}s"
            )
        error = {"type": "SessionBroken", "reason": "SessionBroken", "non_retryable": True}
        self.fail_run(run, {**error, "message": message})

    # ------------------------------------------------------------------ workers

    def drain_worker(
        self, w: WorkerState, reason: LossReason, message: str, unstarted: Collection[str]
    ) -> None:
        """`w` is going away (its pod terminates, its process got SIGTERM): its sessions
        break now, it gets no new task, and the attempts it runs go on there. Tasks in
        `unstarted` (it was sent them but never began them) are dispatched again at once,
        and its workflow tasks are replayed elsewhere."""
        st, out = self.state, self.out
        if not w.alive or w.draining:
            self.refine(w, reason, message)
        else:
            w.draining = True
            w.lost_reason = reason
            out.emit(WorkerGone(w.worker_id, reason))  # what waits in its mailbox is void
            broken = [sid for _, sid in self._break_sessions(w, reason, message)]
            running = sum(1 for tid in w.running if tid in st.tasks and tid not in unstarted)
            detail = f" ({message})" if message and message != reason else ""
            out.notice(
                None,
                "Warning",
                "WorkerDraining",
                f"worker {w.worker_id} ({pod_on_node(w.pod, w.node)}) is draining: "
                f"{reason}{detail}; it gets no new tasks"
                + (f"; sessions broken: {', '.join(broken)}" if broken else "")
                + (
                    f"; {running} running attempt{'s' if running != 1 else ''} may finish there"
                    if running
                    else ""
                ),
            )
            for tid in sorted(w.workflow_tasks):
                task = st.tasks.get(tid)
                if task is not None:
                    self._dispatch_again(
                        task, "WorkerDraining", reason, f"worker {w.worker_id} is draining"
                    )
            w.workflow_tasks.clear()
        if not w.alive:
            return
        for tid in sorted(unstarted):
            task = st.tasks.get(tid)
            if task is not None and task.kind == "activity" and task.worker_id == w.worker_id:
                self.retries.handed_back(
                    task,
                    {
                        "type": "WorkerDraining",
                        "reason": "WorkerDraining",
                        "non_retryable": False,
                        "message": f"worker {w.worker_id} is draining and had not started "
                        "the attempt; dispatching it again",
                    },
                )

    def lose_worker(self, w: WorkerState, reason: LossReason, message: str) -> None:
        """Declare `w` lost: break its sessions, retry its attempts, move its workflow tasks."""
        st, out = self.state, self.out
        if not w.alive:
            self.refine(w, reason, message)
            return
        draining = w.draining
        if draining:
            self.refine(w, reason, message)  # its sessions broke when it began to drain
        else:
            w.lost_reason = reason
        w.alive = False
        w.draining = False
        out.emit(WorkerGone(w.worker_id, reason))
        detail = message or reason
        live = [st.tasks[tid] for tid in sorted(w.running) if tid in st.tasks]
        replaying = [st.tasks[tid] for tid in sorted(w.workflow_tasks) if tid in st.tasks]
        broken = [
            (run.run_id, s.id)
            for run, s in st.held_sessions(w)
            if s.state == "Open" and s.worker == w.worker_id
        ]
        out.worker_lost(
            w.worker_id,
            reason,
            f"worker {w.worker_id} lost: {reason}"
            + (f" ({message})" if message and message != reason else "")
            + worker_loss_consequences([sid for _, sid in broken], len(live), len(replaying)),
            run_losses(
                broken,
                [(t.run_id, t.seq, t.attempt) for t in live if t.kind == "activity"],
                [t.run_id for t in replaying],
            ),
        )
        # Sessions first, so the retried activities below see them Broken.
        if not draining:
            self._break_sessions(w, reason, message)
        lost = f"worker {w.worker_id} lost while running the activity: {detail}"
        for tid in sorted(w.running):
            task = st.tasks.get(tid)
            if task is not None:
                self._dispatch_again(task, "WorkerLost", reason, lost)
        w.running.clear()
        for tid in sorted(w.workflow_tasks):
            task = st.tasks.get(tid)
            if task is not None:
                self._dispatch_again(task, "WorkerLost", reason, lost)
        w.workflow_tasks.clear()

    def _break_sessions(
        self, w: WorkerState, reason: LossReason, message: str
    ) -> list[tuple[str, str]]:
        """Break the sessions open on `w`; HARD ones wait for it (or fail at once when
        its pod is gone for good), SOFT ones let go of it. Returns (run, session) of each
        broken one."""
        st, out = self.state, self.out
        permanent = is_permanent_loss(reason)
        where = pod_on_node(w.pod, w.node)
        detail = loss_detail(w.pod, reason, message)
        broken = []
        for run, s in st.held_sessions(w):
            sid = s.id
            if s.state == "Open" and s.worker == w.worker_id:
                broken.append((run.run_id, sid))
                out.record(
                    run,
                    "SessionBroken",
                    session_id=sid,
                    reason=reason,
                    message=f"{where} {loss_phrase(reason)}{detail}",
                )
                out.notice(
                    run.run_id,
                    "Warning",
                    "SessionBroken",
                    f"session {sid} ({s.strategy}) broken: {where} {loss_phrase(reason)} "
                    f"({reason})",
                )
            if s.strategy == "HARD":
                if permanent:
                    self.fail_session_broken(run, s)
                else:
                    due = out.now + run.schedule_timeout
                    st.deadlines.add(due, DeadlineKind.HARD_SESSION, run.run_id, sid)
            else:
                w.sessions.discard(sid)
        return broken

    def refine(self, w: WorkerState, reason: LossReason, message: str) -> None:
        """A later report about `w`, already draining or lost, says more about why (e.g.
        NodeLost after HeartbeatTimeout): its broken sessions take the new reason, and a
        permanent one fails the HARD sessions still waiting for it."""
        st, out = self.state, self.out
        old = w.lost_reason
        if old is None or not refines(reason, old):
            return
        w.lost_reason = reason
        where = pod_on_node(w.pod, w.node)
        detail = loss_detail(w.pod, reason, message)
        for run in st.runs.values():
            if run.terminal:
                continue
            for s in run.sessions.values():
                if s.state != "Broken" or s.worker != w.worker_id or s.reason != old:
                    continue
                out.record(
                    run,
                    "SessionBroken",
                    session_id=s.id,
                    reason=reason,
                    message=f"{where} {loss_phrase(reason)}{detail}",
                    refined=True,
                )
                out.notice(
                    run.run_id,
                    "Warning",
                    "SessionBroken",
                    f"session {s.id} ({s.strategy}) broken: {where} {loss_phrase(reason)} "
                    f"({reason}; first reported as {old})",
                )
        if is_permanent_loss(reason):
            self._fail_hard_sessions_of(w)

    def worker_not_back(self, worker_id: str) -> None:
        """A worker of restored runs did not register within `restart_grace`: its open
        sessions break and its attempts are retried, with `SchedulerRestarted`."""
        st, out = self.state, self.out
        tids = st.restored.pop(worker_id, None)
        if tids is None:
            return  # it came back
        grace = st.config.restart_grace
        detail = f"worker {worker_id} did not come back within {grace:g}s of the scheduler restart"
        broken = []
        reserved = st.reserved.get(worker_id, set())
        for sid in sorted(reserved):
            run = st.run_of_session(sid)
            if run is None or run.terminal:
                reserved.discard(sid)
                continue
            s = run.sessions[sid]
            if s.state != "Open" or s.worker != worker_id:
                continue
            broken.append((run.run_id, sid))
            out.record(
                run, "SessionBroken", session_id=sid, reason="SchedulerRestarted", message=detail
            )
            out.notice(
                run.run_id,
                "Warning",
                "SessionBroken",
                f"session {sid} ({s.strategy}) broken: {detail}",
            )
            if s.strategy == "HARD":
                due = out.now + run.schedule_timeout
                st.deadlines.add(due, DeadlineKind.HARD_SESSION, run.run_id, sid)
            else:
                reserved.discard(sid)
        if not reserved:
            st.reserved.pop(worker_id, None)
        tasks = [st.tasks[t] for t in sorted(tids) if t in st.tasks]
        tasks = [t for t in tasks if t.worker_id == worker_id]
        if broken or tasks:
            out.worker_lost(
                worker_id,
                "SchedulerRestarted",
                detail + worker_loss_consequences([sid for _, sid in broken], len(tasks), 0),
                run_losses(broken, [(t.run_id, t.seq, t.attempt) for t in tasks], []),
            )
        err = {
            "type": "SchedulerRestarted",
            "reason": "SchedulerRestarted",
            "non_retryable": False,
            "message": f"{detail} to report the attempt",
        }
        for task in tasks:
            self.retries.attempt_failed(task, err, immediate=True)

    def task_lost(self, w: WorkerState, task: LiveTask, outcomes_got: int | None = None) -> None:
        """A live worker does not hold a task it was sent, or (`outcomes_got` not None) a
        workflow task of it got fewer outcomes than were sent: dispatch it again. An
        activity attempt counts as failed (retried at once, like a lost worker's); a
        workflow task is replayed from history. The worker is told to drop it, in case it
        has it after all."""
        self.tasks.cancel(task, "TaskLost")
        what = (
            f"attempt {task.attempt} of activity {task.name}"
            if task.kind == "activity"
            else f"workflow task {task.task_id}"
        )
        if outcomes_got is None:
            message = f"worker {w.worker_id} does not hold {what} it was sent; dispatching it again"
        else:
            message = (
                f"worker {w.worker_id} got {outcomes_got} of the {task.resolutions_sent} "
                f"outcomes sent to {what}; replaying it"
            )
        self.out.notice(task.run_id, "Warning", "TaskLost", message)
        self._dispatch_again(task, "TaskLost", "TaskLost", message)

    def _dispatch_again(self, task: LiveTask, error_type: str, reason: str, message: str) -> None:
        """Its worker lost `task`: an activity attempt fails and is retried at once (it
        counts); a workflow task is replayed from history as a new one."""
        st = self.state
        if task.kind == "activity":
            err = {"type": error_type, "reason": reason, "non_retryable": False, "message": message}
            self.retries.attempt_failed(task, err, immediate=True)
            return
        st.drop_task(task)
        run = st.runs[task.run_id]
        st.workflow_task_of.pop(run.run_id, None)
        if not run.terminal:
            self.out.record(run, "WorkflowTaskLost", task_id=task.task_id, reason=reason)
            self.tasks.enqueue_workflow_task(run)

    def _fail_hard_sessions_of(self, w: WorkerState) -> None:
        for run, s in self.state.held_sessions(w):
            if s.state == "Broken":
                self.fail_session_broken(run, s)
        w.sessions.clear()


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
