"""Wire messages between workers, clients and the scheduler (HTTP + JSON).

Every request and response body of the scheduler's HTTP API is one of these
pydantic models, so the OpenAPI document is generated from them and both sides
validate the same shapes. Times are seconds (floats); timestamps are Unix time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tether_types.wire import (
    DEFAULT_BACKOFF_COEFFICIENT,
    DEFAULT_INITIAL_INTERVAL,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_INTERVAL,
    DEFAULT_SCHEDULE_TIMEOUT,
    LOSS_REASONS,
    LossReason,
)

API_PREFIX = "/v1"
MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""Activity and workflow input/output limit, measured on the JSON encoding."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest HTTP body the scheduler accepts (a batch of several payloads)."""

StickyName = Literal["SOFT", "HARD"]
RunPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"]
SessionStateName = Literal["Open", "Broken", "Closed"]
ActivityStateName = Literal["Scheduled", "Running", "Backoff", "Completed", "Failed", "Cancelled"]
AttemptStateName = Literal["Running", "Completed", "Failed", "Cancelled"]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


# --------------------------------------------------------------------------- errors


class ErrorInfo(Model):
    """A failure, carried across the wire and recorded in history."""

    type: str = Field(
        description="Exception class name, e.g. 'ValueError' or 'StartToCloseTimeout'."
    )
    message: str = ""
    reason: str | None = Field(
        default=None,
        description="CamelCase reason a user can grep for (SessionBroken, HeartbeatTimeout, ...).",
    )
    non_retryable: bool = False
    traceback: str | None = None
    attempts: int | None = Field(
        default=None, description="For a final activity failure: how many attempts were made."
    )


# --------------------------------------------------------------------------- options


class RetryPolicy(Model):
    """Exponential backoff: interval = initial * coefficient**(attempt-1), capped."""

    max_attempts: int = Field(
        default=DEFAULT_MAX_ATTEMPTS, ge=1, description="Total attempts, including the first."
    )
    initial_interval: float = Field(default=DEFAULT_INITIAL_INTERVAL, ge=0)
    backoff_coefficient: float = Field(default=DEFAULT_BACKOFF_COEFFICIENT, ge=1.0)
    max_interval: float = Field(default=DEFAULT_MAX_INTERVAL, ge=0)
    non_retryable_errors: list[str] = Field(default_factory=list)


RetryField = Literal[
    "max_attempts",
    "initial_interval",
    "backoff_coefficient",
    "max_interval",
    "non_retryable_errors",
]


class RetryDefaults(Model):
    """Some fields of a retry policy: those a workflow sets for its activities."""

    max_attempts: int | None = Field(default=None, ge=1)
    initial_interval: float | None = Field(default=None, ge=0)
    backoff_coefficient: float | None = Field(default=None, ge=1.0)
    max_interval: float | None = Field(default=None, ge=0)
    non_retryable_errors: list[str] | None = None


class ActivityOptions(Model):
    start_to_close_timeout: float | None = Field(default=None, gt=0)
    heartbeat_timeout: float | None = Field(default=None, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    retry_set: list[RetryField] | None = Field(
        default=None,
        description="The retry fields the activity's code set; the others take the "
        "workflow's defaults (a Workflow's spec.retry) before the built-in ones. "
        "null: every field is the code's.",
    )
    sticky_to_worker: bool = False


# --------------------------------------------------------------------------- registration


_INPUT_SCHEMA_DESCRIPTION = (
    "JSON Schema (an object) of the parameters, from their type hints; "
    "null: inputs are not checked."
)


class WorkflowSpec(Model):
    name: str = Field(min_length=1)
    sticky: StickyName | None = None
    input_schema: dict[str, Any] | None = Field(
        default=None, description="Entrypoint parameters: " + _INPUT_SCHEMA_DESCRIPTION
    )
    schedules: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="Cron expressions declared in code (`define(schedule=...)`): dev mode "
        "starts a run at each time they name (UTC).",
    )


class ActivitySpec(Model):
    name: str = Field(min_length=1)
    options: ActivityOptions = Field(default_factory=ActivityOptions)
    input_schema: dict[str, Any] | None = Field(
        default=None, description="Activity parameters: " + _INPUT_SCHEMA_DESCRIPTION
    )


class RegisterWorkerRequest(Model):
    worker_id: str = Field(
        min_length=1, max_length=253, description="Stable identity: the pod name."
    )
    pod: str = ""
    node: str = ""
    pool: str = Field(
        default="",
        max_length=253,
        description="The worker pool it belongs to (TETHER_POOL); runs naming a pool use "
        "only that pool's workers.",
    )
    incarnation: str = Field(min_length=1, description="Unique per process start.")
    workflows: list[WorkflowSpec] = Field(default_factory=list)
    activities: list[ActivitySpec] = Field(default_factory=list)
    slots: int = Field(default=8, ge=1, le=10_000, description="Concurrent activities.")
    session_capacity: int = Field(default=4, ge=1, le=10_000, description="Concurrent sessions.")
    namespace: str = Field(
        default="",
        max_length=63,
        description="The worker pod's namespace (TETHER_POD_NAMESPACE): where the operator "
        "publishes the Workflows it registers; empty: the operator's namespace.",
    )


class RegisterWorkerResponse(Model):
    worker_id: str
    heartbeat_interval: float
    namespace: str


class WhoAmI(Model):
    scheduler_url: str
    namespace: str
    tls: bool
    worker_id: str | None = None


# ---------------------------------------------------------------- tasks (scheduler -> worker)


class ActivityTask(Model):
    kind: Literal["activity"] = "activity"
    task_id: str
    run_id: str
    seq: int
    workflow: str
    activity: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    attempt: int
    options: ActivityOptions
    session_id: str | None = None
    cold_start: bool = False
    heartbeat_details: Any = None


class HistoryEventModel(Model):
    """One recorded history event; `data` holds the event's fields."""

    type: str
    time: float
    data: dict[str, Any] = Field(default_factory=dict)


class WorkflowTask(Model):
    kind: Literal["workflow"] = "workflow"
    task_id: str
    run_id: str
    workflow: str
    input: Any = None
    attempt: int
    history: list[HistoryEventModel] = Field(default_factory=list)
    session_id: str | None = None
    parent_run_id: str | None = None
    retry_defaults: RetryDefaults | None = Field(
        default=None,
        description="Retry fields the workflow's activities take where their code sets "
        "none (a Workflow's spec.retry): local activities apply them on the worker.",
    )


class Resolution(Model):
    """The outcome of a workflow command (activity, child, timer), sent to the workflow's worker."""

    kind: Literal["resolution"] = "resolution"
    run_id: str
    workflow_task_id: str
    seq: int
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int | None = Field(
        default=None, description="Attempts made, for an activity's final outcome (optional)."
    )
    time: float | None = Field(
        default=None,
        description="When history recorded the outcome (that event's time): the workflow's "
        "clock moves to it, as it does when a replay reads the event.",
    )


class CancelTask(Model):
    """Stop an activity attempt (timed out, run cancelled) or a workflow task (run ended)."""

    kind: Literal["cancel"] = "cancel"
    task_id: str
    reason: str


Task = Annotated[ActivityTask | WorkflowTask | Resolution | CancelTask, Field(discriminator="kind")]


class PollRequest(Model):
    max_tasks: int = Field(default=64, ge=1, le=10_000)
    wait: float = Field(default=20.0, ge=0, le=60, description="Seconds to hold the request open.")
    incarnation: str | None = Field(
        default=None,
        description="The polling process's incarnation (from registration). A poll of an "
        "incarnation the scheduler no longer knows gets no tasks.",
    )


class WorkerHeartbeat(Model):
    """Liveness, and the tasks the worker process holds."""

    incarnation: str | None = Field(
        default=None, description="The process's incarnation; a stale one must register again."
    )
    tasks: list[str] | None = Field(
        default=None,
        description="Ids of the activity attempts and workflow tasks this process holds "
        "(running, or finished with the report not yet acknowledged). The scheduler "
        "dispatches again any task it handed this worker that stays missing from this list "
        "for a heartbeat interval. Omitted: nothing is checked.",
    )
    outcomes: dict[str, int] | None = Field(
        default=None,
        description="For each workflow task this process runs: how many outcomes "
        "(resolutions) it has received. The scheduler replays a workflow task that stays "
        "short of the outcomes it sent for a heartbeat interval (one was lost on the way). "
        "Omitted: nothing is checked.",
    )


class PollResponse(Model):
    tasks: list[Task] = Field(default_factory=list)


# ---------------------------------------------------------------- reports (worker -> scheduler)


class ActivityCompletion(Model):
    task_id: str
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class ActivityHeartbeat(Model):
    task_id: str
    details: Any = None


class ScheduleActivity(Model):
    type: Literal["schedule_activity"] = "schedule_activity"
    seq: int
    activity: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    options: ActivityOptions = Field(default_factory=ActivityOptions)
    session_id: str | None = None


class RecordLocalActivity(Model):
    type: Literal["record_local_activity"] = "record_local_activity"
    seq: int
    activity: str
    attempts: int = 1
    ok: bool
    result: Any = None
    error: ErrorInfo | None = None


class OpenSession(Model):
    type: Literal["open_session"] = "open_session"
    seq: int
    session_id: str
    strategy: StickyName = "SOFT"


class CloseSession(Model):
    type: Literal["close_session"] = "close_session"
    seq: int
    session_id: str


class StartChild(Model):
    type: Literal["start_child"] = "start_child"
    seq: int
    workflow: str
    input: Any = None
    sticky: bool = False
    session_id: str | None = Field(
        default=None,
        description="For sticky children: the parent session whose worker runs the child.",
    )


class StartTimer(Model):
    type: Literal["start_timer"] = "start_timer"
    seq: int
    seconds: float = Field(ge=0)


class CompleteWorkflow(Model):
    type: Literal["complete_workflow"] = "complete_workflow"
    seq: int
    result: Any = None


class FailWorkflow(Model):
    type: Literal["fail_workflow"] = "fail_workflow"
    seq: int
    error: ErrorInfo


WorkflowCommand = Annotated[
    ScheduleActivity
    | RecordLocalActivity
    | OpenSession
    | CloseSession
    | StartChild
    | StartTimer
    | CompleteWorkflow
    | FailWorkflow,
    Field(discriminator="type"),
]


class WorkflowCommands(Model):
    run_id: str
    workflow_task_id: str
    commands: list[WorkflowCommand]


class ReportRequest(Model):
    """Everything a worker has to say since its last report, in one request."""

    completions: list[ActivityCompletion] = Field(default_factory=list)
    heartbeats: list[ActivityHeartbeat] = Field(default_factory=list)
    workflows: list[WorkflowCommands] = Field(default_factory=list)
    max_tasks: int = Field(default=0, ge=0, le=10_000, description="Tasks the worker can take now.")


class ReportResponse(Model):
    cancelled: list[str] = Field(
        default_factory=list, description="Task ids whose heartbeats arrived after the task ended."
    )
    tasks: list[Task] = Field(default_factory=list, description="Tasks ready for this worker.")


class WorkerDrainingRequest(Model):
    """A worker says it is going away (it got SIGTERM): see `POST /workers/{id}/drain`."""

    reason: LossReason = Field(
        default="ProcessExited",
        description="Why the worker is going: " + ", ".join(LOSS_REASONS) + ".",
    )
    message: str = ""
    incarnation: str | None = Field(
        default=None, description="The process that drains (a newer one is left alone)."
    )
    tasks: list[str] | None = Field(
        default=None,
        description="Every task the process holds (runs, or has an unacknowledged outcome "
        "of); a task sent to it and not listed was never started and is dispatched again "
        "at once. None: unknown.",
    )


class WorkerLostRequest(Model):
    reason: LossReason = Field(
        default="ProcessExited",
        description="Why the worker is gone: " + ", ".join(LOSS_REASONS) + ".",
    )
    message: str = ""


# --------------------------------------------------------------------------- runs (clients)


class StartRunRequest(Model):
    workflow: str = Field(min_length=1)
    input: Any = None
    run_id: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
    sticky: StickyName | None = Field(
        default=None, description="Overrides the workflow's strategy."
    )
    schedule_timeout: float = Field(
        default=DEFAULT_SCHEDULE_TIMEOUT,
        gt=0,
        description="How long HARD waits for a lost session worker.",
    )
    worker_pool: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="Run every task of the run only on workers of this pool; absent: any worker.",
    )
    namespace: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
        description="On Kubernetes, the namespace to start the run in (the CLI's -n); "
        "absent: that of a `<namespace>.<name>` run_id, else the operator's. Dev mode has "
        "one namespace and ignores it.",
    )


class AttemptView(Model):
    """One attempt of an activity, as its history recorded it."""

    attempt: int
    state: AttemptStateName = Field(
        description="Cancelled: the run ended while the attempt was running."
    )
    worker: str | None = None
    pod: str | None = None
    node: str | None = None
    cold_start: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    retry_at: float | None = Field(
        default=None, description="When the next attempt was due, if this one was retried."
    )


class ActivityView(Model):
    seq: int
    name: str
    state: ActivityStateName
    attempt: int
    local: bool = False
    worker: str | None = None
    pod: str | None = None
    node: str | None = None
    session: str | None = None
    cold_start: bool = False
    scheduled_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: ErrorInfo | None = None
    attempts: list[AttemptView] = Field(
        default_factory=list, description="Every attempt so far, the first one first."
    )


class SessionBreak(Model):
    """One time a session lost its worker."""

    worker: str | None = None
    reason: str
    message: str | None = None
    time: float


class SessionBinding(Model):
    """One time a session was bound to a worker, and how that ended."""

    worker: str
    pod: str | None = None
    node: str | None = None
    bound_at: float
    ended_at: float | None = Field(default=None, description="None while the binding lasts.")
    reason: str | None = Field(
        default=None, description="Why it ended: a loss reason; None when the session closed."
    )


class SessionView(Model):
    id: str
    strategy: StickyName
    state: SessionStateName
    worker: str | None = None
    pod: str | None = None
    node: str | None = None
    reason: str | None = None
    message: str | None = None
    workers: list[str] = Field(
        default_factory=list, description="Every worker it was bound to, in order."
    )
    breaks: list[SessionBreak] = Field(
        default_factory=list, description="Every time it broke, even if it was rebound since."
    )
    broken_at: float | None = Field(default=None, description="When it broke, while Broken.")
    bindings: list[SessionBinding] = Field(
        default_factory=list, description="Every binding, oldest first."
    )


class ChildView(Model):
    seq: int
    run_id: str
    workflow: str
    phase: RunPhase


class RunView(Model):
    run_id: str
    workflow: str
    phase: RunPhase
    input: Any = None
    result: Any = None
    error: ErrorInfo | None = None
    sticky: StickyName | None = None
    worker: str | None = Field(default=None, description="Worker running the workflow code.")
    parent_run_id: str | None = None
    created_at: float
    finished_at: float | None = None
    activities: list[ActivityView] = Field(default_factory=list)
    sessions: list[SessionView] = Field(default_factory=list)
    children: list[ChildView] = Field(default_factory=list)
    history_length: int = 0
    message: str | None = Field(
        default=None, description="Why a run that has not started waits (on Kubernetes)."
    )


class RunList(Model):
    runs: list[RunView]


class RunSummary(Model):
    """A run as `kubectl get workflowruns` lists it: no input, result or steps."""

    run_id: str
    namespace: str
    workflow: str
    phase: RunPhase
    worker: str | None = Field(default=None, description="Worker running the workflow code.")
    progress: str = Field(description="`done/total` of the activities and child runs so far.")
    sticky: StickyName | None = None
    parent_run_id: str | None = None
    created_at: float
    finished_at: float | None = None
    error: ErrorInfo | None = None
    message: str | None = Field(
        default=None, description="Why a run that has not started waits (on Kubernetes)."
    )


class RunSummaryList(Model):
    runs: list[RunSummary]


class ScheduleView(Model):
    """A schedule: a WorkflowSchedule on Kubernetes, one declared in code in dev mode."""

    namespace: str
    name: str
    workflow: str
    schedules: list[str] = Field(description="Its cron expressions.")
    time_zone: str = "UTC"
    suspend: bool = False
    concurrency_policy: str = "Allow"
    active: list[str] = Field(default_factory=list, description="Runs it started, not finished.")
    last_schedule_time: str | None = Field(
        default=None, description="The latest time a run was started for (RFC 3339)."
    )
    next_schedule_time: str | None = Field(
        default=None, description="The next time a run is due (RFC 3339); none while suspended."
    )
    last_run: str | None = None
    last_run_id: str | None = Field(default=None, description="The last run's run id.")
    last_run_phase: RunPhase | None = None
    message: str = Field(default="", description="Why it starts nothing, when it cannot.")


class ScheduleList(Model):
    schedules: list[ScheduleView]


class TriggeredRun(Model):
    """The run a trigger starts."""

    namespace: str
    run: str = Field(description="The run's name (a WorkflowRun's on Kubernetes).")
    run_id: str = Field(description="Its run id, for `/v1/runs/{run_id}` and `tether get run`.")


class WorkerView(Model):
    worker_id: str
    pod: str
    node: str
    pool: str = ""
    namespace: str = Field(default="", description="The namespace whose runs it serves.")
    alive: bool
    draining: bool = Field(
        default=False, description="Going away: no new tasks; its running attempts go on."
    )
    slots: int
    running: int
    session_capacity: int
    sessions: list[str]
    workflows: list[str]
    activities: list[str]
    lost_reason: str | None = None


class WorkerList(Model):
    workers: list[WorkerView]


class RegisteredWorkflow(Model):
    """A workflow some worker registered (the latest registration's schema wins)."""

    name: str
    namespace: str = Field(default="", description="The namespace it is registered in.")
    sticky: StickyName | None = None
    input_schema: dict[str, Any] | None = Field(
        default=None, description="Entrypoint parameters: " + _INPUT_SCHEMA_DESCRIPTION
    )
    schedules: list[str] = Field(
        default_factory=list, description="Cron expressions its code declares."
    )
    workers: list[str] = Field(
        default_factory=list, description="Live workers that registered it (none: runs wait)."
    )


class RegisteredActivity(Model):
    """An activity some worker registered (the latest registration wins)."""

    name: str
    namespace: str = Field(default="", description="The namespace it is registered in.")
    options: ActivityOptions = Field(default_factory=ActivityOptions)
    input_schema: dict[str, Any] | None = Field(
        default=None, description="Activity parameters: " + _INPUT_SCHEMA_DESCRIPTION
    )
    workers: list[str] = Field(default_factory=list, description="Live workers that registered it.")


class WorkflowList(Model):
    workflows: list[RegisteredWorkflow]
    activities: list[RegisteredActivity]


class History(Model):
    run_id: str
    events: list[HistoryEventModel]


class Problem(Model):
    """Every 4xx/5xx body: what went wrong, and which field or object."""

    error: str
    message: str
    field: str | None = None
