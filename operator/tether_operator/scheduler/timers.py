"""The deadline timer: one loop timer armed at the engine's next deadline.

The engine is clock-free; it only says when `advance(now)` next has work. The timer
keeps a single `call_later` handle armed at the earliest known deadline. Arming with
a later time than the armed one is a no-op (the early firing finds nothing due and
re-arms), so re-arming after every engine call costs one comparison.

A timer that fires late means the event loop was stalled (a long recovery, a starved
CPU): requests that arrived meanwhile, heartbeats among them, still wait in the loop.
Firing at once would judge workers by a clock that jumped while nobody listened and
lose them for silence that was the scheduler's own, so a late timer first lets the
loop serve what is pending (`STALL_DEFER_SECONDS`), once per stall.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["STALL_DEFER_SECONDS", "STALL_SECONDS", "DeadlineTimer"]

STALL_SECONDS = 0.25
"""A timer this late (or later) fired after a stall of the event loop."""
STALL_DEFER_SECONDS = 0.1
"""How long a late timer lets pending requests run before the deadlines are applied."""


class DeadlineTimer:
    """Calls `fire()` once the wall clock reaches the armed deadline."""

    def __init__(self, fire: Callable[[], None], clock: Callable[[], float]) -> None:
        self._fire = fire
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._when: float | None = None
        self._deferred = False

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
        when = self._when
        self._handle = None
        self._when = None
        if (
            not self._deferred
            and when is not None
            and self._loop is not None
            and self._clock() - when >= STALL_SECONDS
        ):
            self._deferred = True
            self.arm(self._clock() + STALL_DEFER_SECONDS)
            return
        self._deferred = False
        self._fire()
