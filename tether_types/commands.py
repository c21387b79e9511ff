"""Workflow commands: what workflow code asks the engine for, one closed union.

The SDK sends them as JSON (`protocol.WorkflowCommand`, the pydantic models that
validate and document the wire); the scheduler hands the engine these typed commands,
which the engine handles with `match` and `assert_never`. Defaults are written here
once: a session's strategy, a failure's error, a child's stickiness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from .wire import Step

StickyName = Literal["SOFT", "HARD"]

CommandType = Literal[
    "schedule_activity",
    "record_local_activity",
    "open_session",
    "close_session",
    "start_child",
    "start_timer",
    "complete_workflow",
    "fail_workflow",
]
"""The `type` of a command on the wire."""


@dataclass(frozen=True, slots=True)
class ScheduleActivity:
    """Run activity `activity` as step `seq` (on the session's worker if `session_id`)."""

    type: ClassVar[CommandType] = "schedule_activity"
    seq: int
    activity: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    """`protocol.ActivityOptions` as plain data."""
    session_id: str | None = None

    @property
    def step(self) -> Step:
        return ("schedule_activity", self.activity)


@dataclass(frozen=True, slots=True)
class RecordLocalActivity:
    """Record the outcome of a local activity the workflow's worker ran itself."""

    type: ClassVar[CommandType] = "record_local_activity"
    seq: int
    activity: str
    ok: bool
    attempts: int = 1
    result: Any = None
    error: dict[str, Any] | None = None

    @property
    def step(self) -> Step:
        return ("record_local_activity", self.activity)


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Open sticky session `session_id` (a no-op when it is open already)."""

    type: ClassVar[CommandType] = "open_session"
    seq: int
    session_id: str
    strategy: StickyName = "SOFT"

    @property
    def step(self) -> Step:
        return ("open_session", self.session_id)


@dataclass(frozen=True, slots=True)
class CloseSession:
    """Close sticky session `session_id`, releasing its worker."""

    type: ClassVar[CommandType] = "close_session"
    seq: int
    session_id: str

    @property
    def step(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class StartChild:
    """Start child workflow `workflow` as step `seq`; a sticky child runs on the worker
    of the parent's session `session_id` (else of the parent's workflow task)."""

    type: ClassVar[CommandType] = "start_child"
    seq: int
    workflow: str
    input: Any = None
    sticky: bool = False
    session_id: str | None = None

    @property
    def step(self) -> Step:
        return ("start_child", self.workflow)


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Resolve step `seq` after `seconds`."""

    type: ClassVar[CommandType] = "start_timer"
    seq: int
    seconds: float = 0.0

    @property
    def step(self) -> Step:
        return ("start_timer", None)


@dataclass(frozen=True, slots=True)
class CompleteWorkflow:
    """End the run with `result`."""

    type: ClassVar[CommandType] = "complete_workflow"
    seq: int
    result: Any = None

    @property
    def step(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class FailWorkflow:
    """End the run as failed with `error` (an `ErrorInfo` as plain data)."""

    type: ClassVar[CommandType] = "fail_workflow"
    seq: int
    error: dict[str, Any] = field(default_factory=lambda: {"type": "Error"})

    @property
    def step(self) -> None:
        return None


WorkflowCommand = (
    ScheduleActivity
    | RecordLocalActivity
    | OpenSession
    | CloseSession
    | StartChild
    | StartTimer
    | CompleteWorkflow
    | FailWorkflow
)


COMMAND_TYPES: Mapping[str, type[WorkflowCommand]] = {
    cls.type: cls for cls in get_args(WorkflowCommand)
}
"""Wire `type` -> command class."""


def command_from_wire(data: Mapping[str, Any]) -> WorkflowCommand:
    """The typed command of a wire command (a dict with a `type`); a key that is None
    takes the field's default. Raises ValueError naming an unknown type, TypeError for a
    missing or unknown field."""
    kind = data.get("type")
    cls = COMMAND_TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown workflow command type {kind!r}")
    return cls(**{k: v for k, v in data.items() if k != "type" and v is not None})
