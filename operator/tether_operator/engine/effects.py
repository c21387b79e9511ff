"""What the engine asks its host to do. The engine never does I/O itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send `message` (a protocol Task dict with a `kind` key) to a worker."""

    worker_id: str
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Persist:
    """Append these history events to the run's durable record."""

    run_id: str
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run reached a terminal phase."""

    run_id: str


@dataclass(frozen=True, slots=True)
class WorkerGone:
    """The engine declared the worker lost: anything queued for it is void."""

    worker_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class Notice:
    """Something a person should see: the scheduler logs it and hands it to its subscribers."""

    run_id: str | None
    level: Literal["Normal", "Warning"]
    reason: str
    message: str


Effect = Deliver | Persist | RunEnded | Notice | WorkerGone
