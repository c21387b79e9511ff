"""The wire vocabulary both sides of the purity wall share: names, shapes and defaults.

The engine (pure, no pydantic) and the SDK (pydantic models in `protocol.py`) import
this module, so a message shape, a default, a reason or a history event name is
written once. It imports nothing but the standard library's typing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final, Literal, TypedDict, TypeGuard, assert_never, get_args

# --------------------------------------------------------------------------- defaults

DEFAULT_SCHEDULE_TIMEOUT: Final = 300.0
"""Seconds a HARD session waits for its lost worker (`StartRunRequest.schedule_timeout`)."""


class RetryPolicyDict(TypedDict):
    """An activity's retry policy (`protocol.RetryPolicy`) as plain data."""

    max_attempts: int
    initial_interval: float
    backoff_coefficient: float
    max_interval: float
    non_retryable_errors: list[str]


DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_INITIAL_INTERVAL: Final = 1.0
DEFAULT_BACKOFF_COEFFICIENT: Final = 2.0
DEFAULT_MAX_INTERVAL: Final = 100.0


def default_retry_policy() -> RetryPolicyDict:
    """A fresh retry policy with every default filled in."""
    return {
        "max_attempts": DEFAULT_MAX_ATTEMPTS,
        "initial_interval": DEFAULT_INITIAL_INTERVAL,
        "backoff_coefficient": DEFAULT_BACKOFF_COEFFICIENT,
        "max_interval": DEFAULT_MAX_INTERVAL,
        "non_retryable_errors": [],
    }


def workflow_retry_fields(
    retry_set: Collection[str] | None, defaults: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The workflow's default retry fields an activity takes: those of `defaults` its
    code did not set (not in `retry_set`); none when its code does not say which it set
    (`retry_set` None). The scheduler applies them to remote activities, the SDK to
    local ones."""
    if not defaults or retry_set is None:
        return {}
    return {key: value for key, value in defaults.items() if key not in retry_set}


# --------------------------------------------------------------------------- worker loss

LossReason = Literal[
    "ProcessExited", "HeartbeatTimeout", "PodDeleted", "Evicted", "ScaledDown", "NodeLost"
]
"""Why a worker was declared lost (a `WorkerLostRequest.reason`, a session's break reason)."""

LOSS_REASONS: tuple[LossReason, ...] = get_args(LossReason)


def is_loss_reason(reason: str) -> TypeGuard[LossReason]:
    """True if `reason` is one of `LOSS_REASONS`."""
    return reason in LOSS_REASONS


def is_permanent_loss(reason: LossReason) -> bool:
    """True if the worker's pod is gone for good, so a HARD session cannot wait for it."""
    match reason:
        case "PodDeleted" | "Evicted" | "ScaledDown":
            return True
        case "ProcessExited" | "HeartbeatTimeout" | "NodeLost":
            return False
        case _:
            assert_never(reason)


def loss_specificity(reason: LossReason) -> int:
    """How much a loss reason says about the pod's fate: a later report with a higher
    value refines an earlier one (HeartbeatTimeout -> NodeLost, ProcessExited -> PodDeleted)."""
    match reason:
        case "HeartbeatTimeout":
            return 0
        case "ProcessExited":
            return 1
        case "NodeLost":
            return 2
        case "PodDeleted" | "Evicted" | "ScaledDown":
            return 3
        case _:
            assert_never(reason)


def refines(new: LossReason, old: LossReason) -> bool:
    """True if loss report `new` says more than `old`; a permanent reason is final."""
    return not is_permanent_loss(old) and loss_specificity(new) > loss_specificity(old)


# --------------------------------------------------------------------------- tasks


class ActivityTaskMessage(TypedDict):
    """`protocol.ActivityTask`: run one attempt of an activity."""

    kind: Literal["activity"]
    task_id: str
    run_id: str
    seq: int
    workflow: str
    activity: str
    args: list[Any]
    kwargs: dict[str, Any]
    attempt: int
    options: dict[str, Any]
    session_id: str | None
    cold_start: bool
    heartbeat_details: Any


class WorkflowTaskMessage(TypedDict):
    """`protocol.WorkflowTask`: run (or replay) a workflow's code with its history."""

    kind: Literal["workflow"]
    task_id: str
    run_id: str
    workflow: str
    input: Any
    attempt: int
    history: list[dict[str, Any]]
    session_id: str | None
    parent_run_id: str | None
    retry_defaults: dict[str, Any] | None


class ResolutionMessage(TypedDict):
    """`protocol.Resolution`: the outcome of workflow step `seq`."""

    kind: Literal["resolution"]
    run_id: str
    workflow_task_id: str
    seq: int
    ok: bool
    result: Any
    error: dict[str, Any] | None
    time: float


class CancelMessage(TypedDict):
    """`protocol.CancelTask`: stop an activity attempt or a workflow task."""

    kind: Literal["cancel"]
    task_id: str
    reason: str


TaskMessage = ActivityTaskMessage | WorkflowTaskMessage | ResolutionMessage | CancelMessage
"""What the scheduler delivers to a worker (`protocol.Task`)."""

# --------------------------------------------------------------------------- history

EventType = Literal[
    "RunStarted",
    "WorkflowTaskStarted",
    "WorkflowTaskLost",
    "ActivityScheduled",
    "ActivityStarted",
    "ActivityCompleted",
    "ActivityFailed",
    "LocalActivityRecorded",
    "SessionOpened",
    "SessionBound",
    "SessionBroken",
    "SessionClosed",
    "ChildStarted",
    "ChildCompleted",
    "ChildFailed",
    "TimerStarted",
    "TimerFired",
    "RunCompleted",
    "RunFailed",
    "RunCancelled",
]
"""Every history event type (docs/internals.md, History events)."""

EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)

RunEndType = Literal["RunCompleted", "RunFailed", "RunCancelled"]
"""The history events that end a run."""

StepKind = Literal[
    "schedule_activity", "record_local_activity", "open_session", "start_child", "start_timer"
]
"""The workflow commands history records per `seq`, so replay can check them."""

Step = tuple[StepKind, str | None]
"""What a workflow did at one `seq`: the command kind and its name (None for a timer)."""

STEP_OF_EVENT: Mapping[str, tuple[StepKind, str | None]] = {
    "ActivityScheduled": ("schedule_activity", "activity"),
    "LocalActivityRecorded": ("record_local_activity", "activity"),
    "SessionOpened": ("open_session", "session_id"),
    "ChildStarted": ("start_child", "workflow"),
    "TimerStarted": ("start_timer", None),
}
"""History event type -> (the command kind it records, the field that names the step).
The same field names the step in the event's data and in the command."""


def _name(value: Any) -> str | None:
    return None if value is None else str(value)


def recorded_step(event_type: str, data: Mapping[str, Any]) -> Step | None:
    """The step a history event records at `data["seq"]`, or None if it records none.

    The workflow's own session (SessionOpened with seq 0) is no step of the code.
    """
    entry = STEP_OF_EVENT.get(event_type)
    if entry is None:
        return None
    kind, name_field = entry
    if kind == "open_session" and not data.get("seq"):
        return None
    return kind, None if name_field is None else _name(data.get(name_field))


def describe_step(kind: str, name: str | None) -> str:
    """A step as messages word it: `schedule_activity 'predict'`, `start_timer`."""
    return kind if name is None else f"{kind} {name!r}"


def nondeterminism_message(workflow: str, seq: int, recorded: str, issued: str) -> str:
    """The NonDeterminism failure message, given both steps already described."""
    return (
        f"workflow {workflow!r} took a different path on replay: at seq {seq} the history "
        f"recorded {recorded} but the code now issued {issued}; workflow code must be "
        "deterministic (move I/O, time and randomness into activities)"
    )


def nondeterminism_error(message: str) -> dict[str, Any]:
    """The error a run fails with when its code took a different path on replay."""
    return {
        "type": "NonDeterminismError",
        "reason": "NonDeterminism",
        "non_retryable": True,
        "message": message,
    }


def nondeterminism(workflow: str, seq: int, recorded: Step, issued: Step) -> str | None:
    """The NonDeterminism message if `issued` differs from the step recorded at `seq`."""
    if issued == recorded:
        return None
    return nondeterminism_message(workflow, seq, describe_step(*recorded), describe_step(*issued))
