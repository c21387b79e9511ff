"""Read-only views of the engine's state: a worker's facts for its hosts, and a run as
clients see it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NotRequired, TypedDict

from .wire import LossReason


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """Where a worker runs and whether the engine still counts on it."""

    worker_id: str
    pod: str
    node: str
    pool: str
    """Its worker pool id ("" for none)."""
    alive: bool
    lost_reason: LossReason | None
    """Why it is draining or was lost (the most specific report so far)."""


# ------------------------------------------------------------------ a run, as clients see it
# The engine builds these (`Engine.run_view`); the HTTP API sends them as they are, and
# the operator writes a WorkflowRun's status from them. `protocol.RunView` and its parts
# validate and document the same shapes (a test holds the keys equal).

ErrorData = dict[str, Any]
"""An `ErrorInfo` as plain data: type, message, reason, non_retryable, ..."""


class AttemptViewData(TypedDict):
    """One attempt of an activity, as its history recorded it."""

    attempt: int
    state: str
    worker: str | None
    pod: str | None
    node: str | None
    cold_start: bool
    started_at: float | None
    finished_at: float | None
    error: ErrorData | None
    retry_at: float | None


class ActivityViewData(TypedDict):
    """One step of a run that runs an activity."""

    seq: int
    name: str
    state: str
    attempt: int
    local: bool
    worker: str | None
    pod: str | None
    node: str | None
    session: str | None
    cold_start: bool
    scheduled_at: float
    started_at: float | None
    finished_at: float | None
    error: ErrorData | None
    attempts: list[AttemptViewData]


class SessionBreakData(TypedDict):
    """One time a session lost its worker."""

    worker: str | None
    reason: str
    message: str | None
    time: float


class SessionBindingData(TypedDict):
    """One time a session was bound to a worker, and how that ended."""

    worker: str
    pod: str | None
    node: str | None
    bound_at: float
    ended_at: float | None
    reason: str | None


class SessionViewData(TypedDict):
    """A sticky session of a run."""

    id: str
    strategy: str
    state: str
    worker: str | None
    pod: str | None
    node: str | None
    reason: str | None
    message: str | None
    broken_at: float | None
    workers: list[str]
    breaks: list[SessionBreakData]
    bindings: list[SessionBindingData]


class ChildViewData(TypedDict):
    """A child run a workflow started."""

    seq: int
    run_id: str
    workflow: str
    phase: str


class RunViewData(TypedDict):
    """A run: phase, result or error, and what it did."""

    run_id: str
    workflow: str
    phase: str
    input: Any
    result: Any
    error: ErrorData | None
    sticky: str | None
    worker: str | None
    parent_run_id: str | None
    created_at: float
    finished_at: float | None
    activities: list[ActivityViewData]
    sessions: list[SessionViewData]
    children: list[ChildViewData]
    history_length: int
    message: NotRequired[str | None]
    """Why a run that has not started waits (from its WorkflowRun's conditions)."""


TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})
"""The phases a run ends in."""
FINISHED_ACTIVITY_STATES = frozenset({"Completed", "Failed", "Cancelled"})
"""The states of an activity that ended, either way."""


def progress_counts(view: Mapping[str, Any]) -> tuple[int, int]:
    """(done, total) over what a run view has scheduled so far: activities and child
    runs. Done counts what ended either way, like Argo's PROGRESS."""
    done = [a["state"] in FINISHED_ACTIVITY_STATES for a in view.get("activities", ())]
    done += [c.get("phase") in TERMINAL_PHASES for c in view.get("children", ())]
    return sum(done), len(done)
