"""What the engine tells a person, and the facts behind it.

A `Notice` is one line for a log or an Event. A notice with consequences is a subclass
that carries them as data (`WorkerLost` says what the loss did to each run), so a host
acts on facts and never parses the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .wire import LossReason

NoticeLevel = Literal["Normal", "Warning"]

NoticeReason = Literal[
    "WorkerRegistered",
    "WorkerDraining",
    "WorkerLost",
    "RunStarted",
    "RunSucceeded",
    "RunFailed",
    "RunCancelled",
    "SessionBound",
    "SessionRebound",
    "SessionBroken",
    "TaskLost",
    "ActivityRetrying",
    "ActivityFailed",
    "ActivityTimedOut",
]
"""Every reason a notice has; an Event on Kubernetes takes it as its reason."""


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should see, about run `run_id` (None: about a worker)."""

    run_id: str | None
    level: NoticeLevel
    reason: NoticeReason
    message: str


@dataclass(frozen=True, slots=True)
class RunLoss:
    """What losing a worker did to one run."""

    run_id: str
    sessions: tuple[str, ...] = ()
    """Sessions of the run that broke with the worker."""
    attempts: tuple[tuple[int, int], ...] = ()
    """(step seq, attempt number) of each activity attempt cut short, retried."""
    workflow_replayed: bool = False
    """The run's workflow task was on the worker: its code replays on another."""


@dataclass(frozen=True, slots=True)
class WorkerLost(Notice):
    """A worker was declared lost (or never came back after a scheduler restart)."""

    worker_id: str = ""
    loss: LossReason | Literal["SchedulerRestarted"] = "ProcessExited"
    runs: tuple[RunLoss, ...] = ()


@dataclass(frozen=True, slots=True)
class RunStarted(Notice):
    """A run started; a child run names its parent (its history belongs with it)."""

    parent_run_id: str | None = None
