"""Read-only views of the engine's state for its hosts (the operator's controllers)."""

from __future__ import annotations

from dataclasses import dataclass

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
