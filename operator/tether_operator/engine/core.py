"""The engine: events in, history and effects out. Pure: no I/O, time is passed in.

Every public method records history events on the runs it touches (the runs'
state is a fold of those events, see `runs.py`), places pending tasks on workers,
and returns the effects for the host to carry out, in order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import placement
from .deadlines import Deadline, Deadlines
from .effects import Deliver, Effect, Notice, Persist, RunEnded
from .errors import InvalidCommand, RunAlreadyExists, RunNotFound, UnknownWorker, WorkflowNotFound
from .retry import backoff, policy_of, should_retry
from .runs import ActivityRecord, Event, Run, SessionRecord, event
from .views import run_view
from .workers import PERMANENT_LOSS_REASONS, WorkerState


@dataclass(slots=True)
class EngineConfig:
    """Tunables. Times are seconds."""

    worker_heartbeat_interval: float = 0.25
    """How often workers are asked to send a liveness heartbeat."""
    worker_heartbeat_timeout: float = 1.0
    """A worker silent this long is lost (`HeartbeatTimeout`) and its sessions break."""
    require_registered_workflows: bool = True
    """Refuse runs of a workflow no worker has registered (a typo would wait forever).
    Off, such a run stays Pending until a worker registers the workflow."""


@dataclass(slots=True)
class LiveTask:
    """An activity attempt or workflow task that is queued or dispatched."""

    task_id: str
    kind: str  # "activity" | "workflow"
    run_id: str
    seq: int
    name: str
    attempt: int
    session_id: str | None
    worker_id: str | None = None
    started_at: float = 0.0
    last_heartbeat: float = 0.0
    heartbeat_details: Any = None
    heartbeat_timeout: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


_SLUG = re.compile(r"[^a-z0-9-]+")


class Engine:
    """Run state machines, retries, timeouts, sessions and placement for one scheduler."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.runs: dict[str, Run] = {}
        self.workers: dict[str, WorkerState] = {}
        self.tasks: dict[str, LiveTask] = {}
        # Ordered sets of task ids awaiting a worker (activities wait for slots).
        self.pending_activities: dict[str, None] = {}
        self.pending_workflows: dict[str, None] = {}
        self.tasks_of_run: dict[str, set[str]] = {}
        self.workflow_task_of: dict[str, str] = {}  # run_id -> live workflow task id
        self.deadlines = Deadlines()
        self._run_counter = 0
        self._fx: list[Effect] = []
        self._new_events: dict[str, list[Event]] = {}
        self._now = 0.0
        self._depth = 0
        self._leftover: list[Effect] = []
        # HARD sessions of restored runs, by worker: reserved until the worker registers.
        self._reserved: dict[str, set[str]] = {}

    # ================================================================== batching

    @contextmanager
    def _batch(self, now: float) -> Iterator[list[Effect]]:
        """Collect effects of one public call; place pending work at the end."""
        outer = self._depth == 0
        self._depth += 1
        if outer:
            self._now = now
            self._fx = []
            self._new_events = {}
        out: list[Effect] = []
        try:
            yield out
            if outer:
                self._place()
        except BaseException:
            if outer:
                # State already changed must still reach the store: hand the effects
                # to the next call instead of dropping them.
                self._leftover.extend(self._drain())
            raise
        finally:
            self._depth -= 1
        if outer:
            out.extend(self._leftover + self._drain())
            self._leftover = []

    def _drain(self) -> list[Effect]:
        persisted: list[Effect] = [Persist(rid, evs) for rid, evs in self._new_events.items()]
        fx = persisted + self._fx
        self._fx = []
        self._new_events = {}
        return fx

    def _record(self, run: Run, type_: str, **data: Any) -> None:
        ev = event(type_, self._now, **data)
        run.apply(ev)
        self._new_events.setdefault(run.run_id, []).append(ev)

    def _notice(self, run_id: str | None, level: str, reason: str, message: str) -> None:
        self._fx.append(
            Notice(run_id, "Warning" if level == "Warning" else "Normal", reason, message)
        )

    # ================================================================== workers

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
            self.deadlines.add(now + self.config.worker_heartbeat_timeout, "worker", new.worker_id)
            self._notice(
                None,
                "Normal",
                "WorkerRegistered",
                f"worker {new.worker_id} registered "
                f"(node {new.node or '-'}, {new.slots} slots, "
                f"{new.session_capacity} sessions)",
            )
        return out

    def _rebind_hard_sessions(self, w: WorkerState) -> None:
        """The pod of broken HARD sessions is back: they continue here, cold."""
        for sid in sorted(w.sessions):
            run = self._run_of_session(sid)
            if run is None or run.terminal:
                w.sessions.discard(sid)
                continue
            s = run.sessions[sid]
            if s.state == "Broken" and s.strategy == "HARD" and s.worker == w.worker_id:
                self._bind(run, s, w)

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
            self._lose_worker(w, reason, message, permanent=reason in PERMANENT_LOSS_REASONS)
        return out

    def _lose_worker(self, w: WorkerState, reason: str, message: str, *, permanent: bool) -> None:
        if not w.alive:
            if permanent:
                self._fail_hard_sessions_of(w, reason, message)
            return
        w.alive = False
        w.lost_reason = reason
        detail = message or reason
        self._notice(
            None,
            "Warning",
            "WorkerLost",
            f"worker {w.worker_id} lost: {reason}"
            + (f" ({message})" if message and message != reason else ""),
        )
        # Sessions first, so the retried activities below see them Broken.
        for sid in sorted(w.sessions):
            run = self._run_of_session(sid)
            if run is None or run.terminal:
                w.sessions.discard(sid)
                continue
            s = run.sessions[sid]
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
                    self.deadlines.add(self._now + run.schedule_timeout, "hard", run.run_id, sid)
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

    def _fail_hard_sessions_of(self, w: WorkerState, reason: str, message: str) -> None:
        for sid in sorted(w.sessions):
            run = self._run_of_session(sid)
            if run is not None and not run.terminal and run.sessions[sid].state == "Broken":
                self._fail_session_broken(run, run.sessions[sid])
        w.sessions.clear()

    # ================================================================== runs

    def start_run(self, req: dict[str, Any], now: float) -> tuple[str, list[Effect]]:
        """Start a run of a workflow; it stays Pending until a worker can take it."""
        with self._batch(now) as out:
            self._check_registered(req["workflow"])
            run_id = req.get("run_id") or self._new_run_id(req["workflow"], now)
            if run_id in self.runs:
                raise RunAlreadyExists(f"run {run_id!r} already exists", field="run_id")
            self._create_run(run_id, req, parent=None)
        return run_id, out

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
            "schedule_timeout": float(req.get("schedule_timeout") or 300.0),
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

    def cancel_run(self, run_id: str, now: float) -> list[Effect]:
        with self._batch(now) as out:
            run = self._get_run(run_id)
            if not run.terminal:
                self._finish_run(run, "RunCancelled", reason="cancelled by a client")
        return out

    def _get_run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return run

    def _finish_run(self, run: Run, type_: str, **data: Any) -> None:
        self._record(run, type_, **data)
        rid = run.run_id
        for tid in sorted(self.tasks_of_run.get(rid, ())):
            task = self.tasks[tid]
            self._drop_task(task)
            if task.worker_id is not None:
                self._fx.append(
                    Deliver(
                        task.worker_id, {"kind": "cancel", "task_id": task.task_id, "reason": type_}
                    )
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
        if s.reason in PERMANENT_LOSS_REASONS:
            message = f"{lost}: {s.reason}; a HARD session never moves to another worker"
        else:
            message = (
                f"{lost} ({s.reason}) and it did not come back within "
                f"scheduleTimeout={run.schedule_timeout:g}s"
            )
        error = {"type": "SessionBroken", "reason": "SessionBroken", "non_retryable": True}
        self._fail_run(run, {**error, "message": message})

    # ================================================================== workflow commands

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

    def _apply_command(self, run: Run, worker_id: str, cmd: dict[str, Any]) -> None:
        kind = cmd.get("type")
        seq = cmd.get("seq")
        if not isinstance(seq, int) or seq < 0:
            raise InvalidCommand(f"command {kind!r} needs a non-negative integer seq", field="seq")
        expected = _STEP_OF_COMMAND.get(str(kind))
        if expected is not None and seq in run.steps:
            name = cmd.get(expected[1], "") if expected[1] else ""
            got = (expected[0], str(name))
            if run.steps[seq] != got:
                self._nondeterminism(run, seq, run.steps[seq], got)
            return  # a replayed command for a step already recorded: idempotent
        if kind == "schedule_activity":
            self._schedule_activity(run, cmd)
        elif kind == "record_local_activity":
            self._record(
                run,
                "LocalActivityRecorded",
                seq=seq,
                activity=cmd["activity"],
                attempts=int(cmd.get("attempts", 1)),
                ok=bool(cmd["ok"]),
                result=cmd.get("result"),
                error=cmd.get("error"),
            )
        elif kind == "open_session":
            sid = cmd["session_id"]
            if sid not in run.sessions:
                self._record(
                    run,
                    "SessionOpened",
                    seq=seq,
                    session_id=sid,
                    strategy=cmd.get("strategy") or "SOFT",
                )
        elif kind == "close_session":
            s = run.sessions.get(cmd["session_id"])
            if s is not None and s.state != "Closed":
                self._close_session(run, s)
        elif kind == "start_child":
            self._start_child(run, worker_id, cmd)
        elif kind == "start_timer":
            fire_at = self._now + float(cmd.get("seconds", 0))
            self._record(run, "TimerStarted", seq=seq, fire_at=fire_at)
            self.deadlines.add(fire_at, "timer", run.run_id, str(seq))
        elif kind == "complete_workflow":
            self._finish_run(run, "RunCompleted", result=cmd.get("result"))
        elif kind == "fail_workflow":
            self._finish_run(run, "RunFailed", error=cmd.get("error") or {"type": "Error"})
        else:
            raise InvalidCommand(f"unknown workflow command type {kind!r}", field="type")

    def _nondeterminism(
        self, run: Run, seq: int, had: tuple[str, str], got: tuple[str, str]
    ) -> None:
        self._fail_run(
            run,
            {
                "type": "NonDeterminismError",
                "reason": "NonDeterminism",
                "non_retryable": True,
                "message": f"workflow {run.workflow} took a different path on replay: step "
                f"{seq} was {had[0]} {had[1]!r} in the history but the code now runs "
                f"{got[0]} {got[1]!r}; "
                "workflow code must be deterministic (move I/O and randomness into activities)",
            },
        )

    def _schedule_activity(self, run: Run, cmd: dict[str, Any]) -> None:
        sid = cmd.get("session_id")
        if sid is not None and sid not in run.sessions:
            raise InvalidCommand(
                f"activity {cmd['activity']!r} names session {sid!r}, which this run never opened",
                field="session_id",
            )
        self._record(
            run,
            "ActivityScheduled",
            seq=cmd["seq"],
            activity=cmd["activity"],
            args=cmd.get("args") or [],
            kwargs=cmd.get("kwargs") or {},
            options=cmd.get("options") or {},
            session_id=sid,
        )
        self._enqueue_activity(run, run.activities[cmd["seq"]])

    def _start_child(self, run: Run, worker_id: str, cmd: dict[str, Any]) -> None:
        seq, name, sticky = cmd["seq"], cmd["workflow"], bool(cmd.get("sticky"))
        child_id = f"{run.run_id}-c{seq}"
        placement_worker = None
        if sticky:
            target = worker_id
            sid = cmd.get("session_id")
            if sid and sid in run.sessions and run.sessions[sid].worker:
                target = run.sessions[sid].worker or worker_id
            w = self.workers.get(target)
            error = None
            if w is None or name not in w.workflows:
                error = (
                    "ChildNotRegistered",
                    f"sticky child workflow {name!r} is not registered "
                    f"on worker {target!r}, which runs the parent's session; register it in "
                    "run_worker([...]) on the same worker",
                )
            elif not w.workflows[name]:
                error = (
                    "StickyChildWithoutStrategy",
                    f"sticky child workflow {name!r} has no "
                    "sticky strategy; declare it with "
                    "@workflow.define(sticky=StickyStrategy.SOFT) or HARD",
                )
            if error is not None:
                err = {
                    "type": "ChildWorkflowError",
                    "reason": error[0],
                    "message": error[1],
                    "non_retryable": True,
                }
                self._record(
                    run,
                    "ChildStarted",
                    seq=seq,
                    child_run_id=child_id,
                    workflow=name,
                    sticky=sticky,
                )
                self._record(run, "ChildFailed", seq=seq, error=err)
                self._resolve(run, seq, ok=False, error=err)
                return
            placement_worker = target
        self._record(
            run, "ChildStarted", seq=seq, child_run_id=child_id, workflow=name, sticky=sticky
        )
        if child_id in self.runs:
            return
        self._create_run(
            child_id,
            {"workflow": name, "input": cmd.get("input"), "schedule_timeout": run.schedule_timeout},
            parent=(run, seq),
            placement_worker=placement_worker,
        )

    def _close_session(self, run: Run, s: SessionRecord) -> None:
        self._record(run, "SessionClosed", session_id=s.id)
        for w in self.workers.values():
            w.sessions.discard(s.id)

    def _run_of_session(self, sid: str) -> Run | None:
        run_id = sid.rsplit("/", 1)[0]
        run = self.runs.get(run_id)
        return run if run is not None and sid in run.sessions else None

    # ================================================================== activity results

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

    def _live_task_on(self, worker_id: str, task_id: str) -> LiveTask | None:
        task = self.tasks.get(task_id)
        if task is None or task.kind != "activity" or task.worker_id != worker_id:
            return None
        return task

    def _touch(self, worker_id: str, now: float) -> None:
        w = self.workers.get(worker_id)
        if w is not None and w.alive:
            w.last_seen = now

    def _add_task(self, task: LiveTask) -> None:
        self.tasks[task.task_id] = task
        self.tasks_of_run.setdefault(task.run_id, set()).add(task.task_id)
        if task.kind == "activity":
            self.pending_activities[task.task_id] = None
        else:
            self.pending_workflows[task.task_id] = None

    def _drop_task(self, task: LiveTask) -> None:
        self.tasks.pop(task.task_id, None)
        self.pending_activities.pop(task.task_id, None)
        self.pending_workflows.pop(task.task_id, None)
        ids = self.tasks_of_run.get(task.run_id)
        if ids is not None:
            ids.discard(task.task_id)
            if not ids:
                del self.tasks_of_run[task.run_id]
        if task.worker_id is not None:
            w = self.workers.get(task.worker_id)
            if w is not None:
                w.running.discard(task.task_id)
                w.workflow_tasks.discard(task.task_id)

    def _attempt_failed(self, task: LiveTask, error: dict[str, Any], *, immediate: bool) -> None:
        self._drop_task(task)
        run = self.runs[task.run_id]
        if run.terminal:
            return
        rec = run.activities[task.seq]
        policy = policy_of(rec.options)
        if should_retry(policy, error, task.attempt):
            retry_at = self._now if immediate else self._now + backoff(policy, task.attempt)
            self._record(
                run,
                "ActivityFailed",
                seq=task.seq,
                attempt=task.attempt,
                error=error,
                retry_at=retry_at,
                heartbeat_details=task.heartbeat_details,
            )
            if immediate:
                self._enqueue_activity(run, rec)
            else:
                self.deadlines.add(retry_at, "retry", run.run_id, str(task.seq), token=task.attempt)
        else:
            self._record(
                run,
                "ActivityFailed",
                seq=task.seq,
                attempt=task.attempt,
                error=error,
                retry_at=None,
                heartbeat_details=task.heartbeat_details,
            )
            # The SDK words it: "activity X failed after N attempt(s): Type: message".
            final = {**error, "attempts": task.attempt}
            self._resolve(run, task.seq, ok=False, error=final)

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
        self._fx.append(
            Deliver(
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
        )

    # ================================================================== queueing and placement

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
            self.deadlines.add(self._now + float(stc), "stc", task.task_id)
        if task.heartbeat_timeout:
            self.deadlines.add(self._now + float(task.heartbeat_timeout), "hb", task.task_id)
        self._fx.append(
            Deliver(
                target.worker_id,
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
        )
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
        self._fx.append(
            Deliver(
                target.worker_id,
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
                },
            )
        )
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

    # ================================================================== time

    def next_deadline(self) -> float | None:
        return self.deadlines.next_time()

    def advance(self, now: float) -> list[Effect]:
        """Fire every deadline that is due at `now`."""
        with self._batch(now) as out:
            while (d := self.deadlines.pop_due(now)) is not None:
                self._fire(d)
        return out

    def _fire(self, d: Deadline) -> None:
        if d.kind == "worker":
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
                self.deadlines.add(due, "worker", w.worker_id)
        elif d.kind in ("stc", "hb"):
            task = self.tasks.get(d.key[0])
            if task is None or task.worker_id is None:
                return
            if d.kind == "hb":
                due = task.last_heartbeat + float(task.heartbeat_timeout or 0)
                if due > self._now:
                    self.deadlines.add(due, "hb", task.task_id)
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
            self._fx.append(
                Deliver(
                    worker_id, {"kind": "cancel", "task_id": task.task_id, "reason": err["reason"]}
                )
            )
            self._attempt_failed(task, err, immediate=False)
        elif d.kind == "retry":
            run = self.runs.get(d.key[0])
            if run is None or run.terminal:
                return
            rec = run.activities.get(int(d.key[1]))
            if rec is not None and rec.state == "Backoff" and rec.attempt == d.token:
                self._enqueue_activity(run, rec)
        elif d.kind == "timer":
            run = self.runs.get(d.key[0])
            seq = int(d.key[1])
            if run is None or run.terminal or run.timers[seq].fired:
                return
            self._record(run, "TimerFired", seq=seq)
            self._resolve(run, seq, ok=True)
        elif d.kind == "hard":
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

    # ================================================================== queries and recovery

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
                    self.deadlines.add(due, "hard", run.run_id, s.id)
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
                        rec.retry_at, "retry", run.run_id, str(rec.seq), token=rec.attempt
                    )
                elif rec.state in ("Scheduled", "Backoff"):
                    self._enqueue_activity(run, rec)
            for t in run.timers.values():
                if not t.fired:
                    self.deadlines.add(t.fire_at, "timer", run.run_id, str(t.seq))
            self._enqueue_workflow_task(run)
        return out


_STEP_OF_COMMAND: dict[str, tuple[str, str]] = {
    "schedule_activity": ("activity", "activity"),
    "record_local_activity": ("local", "activity"),
    "open_session": ("session", "session_id"),
    "start_child": ("child", "workflow"),
    "start_timer": ("timer", ""),
}


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
