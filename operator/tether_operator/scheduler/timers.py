"""The deadline timer: one loop timer armed at the engine's next deadline.

The engine is clock-free; it only says when `advance(now)` next has work. The timer
keeps a single `call_later` handle armed at the earliest known deadline. Arming with
a later time than the armed one is a no-op (the early firing finds nothing due and
re-arms), so re-arming after every engine call costs one comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DeadlineTimer"]


class DeadlineTimer:
    """Calls `fire()` once the wall clock reaches the armed deadline."""

    def __init__(self, fire: Callable[[], None], clock: Callable[[], float]) -> None:
        self._fire = fire
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None

    @property
    def armed_at(self) -> float | None:
        """The deadline the timer will fire at, if armed."""
        return self._when

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        self.disarm()
        self._loop = None

    def arm(self, when: float | None) -> None:
        """Make sure the timer fires no later than `when` (None: nothing new is due)."""
        if when is None or self._loop is None:
            return
        current = self._when
        if current is not None and current <= when:
            return
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        delay = when - self._clock()
        self._handle = self._loop.call_later(delay if delay > 0 else 0, self._on_time)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._when = None

    def _on_time(self) -> None:
        self._handle = None
        self._when = None
        self._fire()
