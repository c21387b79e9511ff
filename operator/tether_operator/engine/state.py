"""The engine's state and how one call's effects are collected (the base of the engine)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from worker_runtime.wire import EventType, TaskMessage

from .deadlines import Deadlines
from .effects import Deliver, Effect, Notice, Persist
from .errors import RunNotFound
from .runs import Event, Run, SessionRecord, event
from .workers import WorkerState


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


class EngineState:
    """Runs, workers, live tasks and deadlines; collects the effects of one public call."""

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

    def _record(self, run: Run, type_: EventType, **data: Any) -> None:
        ev = event(type_, self._now, **data)
        run.apply(ev)
        self._new_events.setdefault(run.run_id, []).append(ev)

    def _deliver(self, worker_id: str, message: TaskMessage) -> None:
        # A TypedDict is a plain dict at runtime: no copy.
        self._fx.append(Deliver(worker_id, cast("dict[str, Any]", message)))

    def _notice(self, run_id: str | None, level: str, reason: str, message: str) -> None:
        self._fx.append(
            Notice(run_id, "Warning" if level == "Warning" else "Normal", reason, message)
        )

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

    def _get_run(self, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return run

    def _held_sessions(self, w: WorkerState) -> Iterator[tuple[Run, SessionRecord]]:
        """The sessions `w` holds, in id order; forgets those whose run ended or is gone."""
        for sid in sorted(w.sessions):
            run = self._run_of_session(sid)
            if run is None or run.terminal:
                w.sessions.discard(sid)
                continue
            yield run, run.sessions[sid]

    def _run_of_session(self, sid: str) -> Run | None:
        run_id = sid.rsplit("/", 1)[0]
        run = self.runs.get(run_id)
        return run if run is not None and sid in run.sessions else None

    def _live_task_on(self, worker_id: str, task_id: str) -> LiveTask | None:
        task = self.tasks.get(task_id)
        if task is None or task.kind != "activity" or task.worker_id != worker_id:
            return None
        return task

    def _place(self) -> None:
        """Place pending tasks on workers: the dispatch layer fills this in."""
