"""A heap of deadlines with lazy invalidation: stale entries are checked and dropped on pop."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class Deadline:
    when: float
    order: int
    kind: str = field(compare=False)
    key: tuple[str, ...] = field(compare=False)
    token: int = field(compare=False, default=0)


class Deadlines:
    def __init__(self) -> None:
        self._heap: list[Deadline] = []
        self._counter = itertools.count()

    def add(self, when: float, kind: str, *key: str, token: int = 0) -> None:
        heapq.heappush(self._heap, Deadline(when, next(self._counter), kind, key, token))

    def next_time(self) -> float | None:
        return self._heap[0].when if self._heap else None

    def pop_due(self, now: float) -> Deadline | None:
        if self._heap and self._heap[0].when <= now:
            return heapq.heappop(self._heap)
        return None

    def __len__(self) -> int:
        return len(self._heap)
