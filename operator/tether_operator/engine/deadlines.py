"""A heap of deadlines with lazy invalidation: stale entries are checked and dropped on pop."""

from __future__ import annotations

import enum
import heapq
import itertools
from dataclasses import dataclass, field


class DeadlineKind(enum.Enum):
    """What a deadline is for; each kind has one handler (see `timeouts.py`)."""

    WORKER = "worker"
    """A worker's liveness heartbeat is due."""
    START_TO_CLOSE = "stc"
    """An activity attempt's start_to_close_timeout."""
    HEARTBEAT = "hb"
    """An activity attempt's heartbeat_timeout."""
    RETRY = "retry"
    """The backoff before an activity's next attempt is over."""
    TIMER = "timer"
    """A workflow timer fires."""
    HARD_SESSION = "hard"
    """A broken HARD session's schedule timeout."""
    RESTART_GRACE = "restart"
    """A worker of restored runs had `restart_grace` to register again."""


@dataclass(order=True, slots=True)
class Deadline:
    when: float
    order: int
    kind: DeadlineKind = field(compare=False)
    key: tuple[str, ...] = field(compare=False)
    token: int = field(compare=False, default=0)


class Deadlines:
    """Deadlines in time order (ties in insertion order)."""

    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._counter = itertools.count()

    def add(self, when: float, kind: DeadlineKind, *key: str, token: int = 0) -> None:
        heapq.heappush(self._heap, Deadline(when, next(self._counter), kind, key, token))

    def next_time(self) -> float | None:
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: float) -> Deadline | None:
        if self._heap and self._heap[0].when <= now:
            return heapq.heappop(self._heap)
        return None

    def __len__(self) -> int:
        return len(self._heap)
