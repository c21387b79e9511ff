"""What the engine knows: runs, workers, live tasks, queues and deadlines.

`EngineState` is plain data plus the bookkeeping that keeps its indexes
consistent; the collaborators (dispatch, sessions, retries, lifecycle, ...) are
each handed the state they work on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .deadlines import Deadlines
from .errors import RunNotFound
from .runs import Run, SessionRecord
from .workers import WorkerState


@dataclass(slots=True)
class EngineConfig:
    """Tunables. Times are seconds."""

    worker_heartbeat_interval: float = 0.25
    """How often workers are asked to send a liveness heartbeat."""
    worker_heartbeat_timeout: float = 1.0
    """A worker silent this long is lost (`HeartbeatTimeout`) and its sessions break."""
    restart_grace: float = 5.0
    """After a restore, how long a worker that held running attempts or open sessions
    of restored runs has to register again (five heartbeat timeouts by default). If it
    does, its attempts go on and its sessions stay Open; if not, the attempts are
    retried and the sessions break with `SchedulerRestarted`."""
    require_registered_workflows: bool = True
    """Refuse runs of a workflow no worker has registered (a typo would wait forever).
    Off, such a run stays Pending until a worker registers the workflow."""


@dataclass(slots=True)
class LiveTask:
    """An activity attempt or workflow task that is queued or dispatched."""

    task_id: str
    kind: Literal["activity", "workflow"]
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
    missing_since: float | None = None
    """When the worker's heartbeat first left this dispatched task out (None: it listed it)."""
    resolutions_sent: int = 0
    """Outcomes (resolutions) sent to this workflow task's worker."""
    outcomes_due: int | None = None
    """How many outcomes had been sent when the worker's count was first seen short
    (`outcomes_since`); None while its count is whole."""
    outcomes_since: float = 0.0


@dataclass(slots=True)
class EngineState:
    """Runs, workers, live tasks and deadlines of one engine."""

    config: EngineConfig = field(default_factory=EngineConfig)
    runs: dict[str, Run] = field(default_factory=dict)
    workers: dict[str, WorkerState] = field(default_factory=dict)
    tasks: dict[str, LiveTask] = field(default_factory=dict)
    """Every live task by id: queued or dispatched."""
    pending_activities: dict[str, None] = field(default_factory=dict)
    """Activity task ids waiting for a worker slot, oldest first (an ordered set)."""
    pending_workflows: dict[str, None] = field(default_factory=dict)
    """Workflow task ids waiting for a worker, oldest first (an ordered set)."""
    tasks_of_run: dict[str, set[str]] = field(default_factory=dict)
    workflow_task_of: dict[str, str] = field(default_factory=dict)
    """run_id -> the id of its live workflow task."""
    deadlines: Deadlines = field(default_factory=Deadlines)
    reserved: dict[str, set[str]] = field(default_factory=dict)
    """HARD sessions of restored runs, by worker: reserved until the worker registers."""
    restored: dict[str, set[str]] = field(default_factory=dict)
    """Workers of restored runs that have not registered since the restore, with the
    activity task ids they were running; each has `restart_grace` to come back."""
    run_counter: int = 0
    """Makes generated run ids unique."""
    retry_defaults: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(namespace, workflow) -> retry fields its activities take where their code sets
    none (on Kubernetes: the Workflow's spec.retry)."""

    def get_run(self, run_id: str) -> Run:
        """The run, or RunNotFound naming it."""
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFound(f"run {run_id!r} not found", field="run_id")
        return run

    def add_task(self, task: LiveTask) -> None:
        """Queue a new task for placement."""
        self.tasks[task.task_id] = task
        self.tasks_of_run.setdefault(task.run_id, set()).add(task.task_id)
        if task.kind == "activity":
            self.pending_activities[task.task_id] = None
        else:
            self.pending_workflows[task.task_id] = None

    def adopt_task(self, task: LiveTask) -> None:
        """Track a task that is already dispatched (restored from history): not queued."""
        self.tasks[task.task_id] = task
        self.tasks_of_run.setdefault(task.run_id, set()).add(task.task_id)

    def drop_task(self, task: LiveTask) -> None:
        """Forget a task everywhere: queues, its run, its worker."""
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

    def live_task_on(self, worker_id: str, task_id: str) -> LiveTask | None:
        """The activity attempt `task_id` if it is live and dispatched to `worker_id`."""
        task = self.tasks.get(task_id)
        if task is None or task.kind != "activity" or task.worker_id != worker_id:
            return None
        return task

    def touch(self, worker_id: str, now: float) -> None:
        """A live worker was heard from."""
        w = self.workers.get(worker_id)
        if w is not None and w.alive:
            w.last_seen = now

    def held_sessions(self, w: WorkerState) -> Iterator[tuple[Run, SessionRecord]]:
        """The sessions `w` holds, in id order; forgets those whose run ended or is gone."""
        for sid in sorted(w.sessions):
            run = self.run_of_session(sid)
            if run is None or run.terminal:
                w.sessions.discard(sid)
                continue
            yield run, run.sessions[sid]

    def run_of_session(self, sid: str) -> Run | None:
        """The run that opened session `sid`, if it is known."""
        run_id = sid.rsplit("/", 1)[0]
        run = self.runs.get(run_id)
        return run if run is not None and sid in run.sessions else None
