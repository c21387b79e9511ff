"""Per-worker mailboxes: tasks the engine delivered, waiting for the worker's next poll.

A mailbox is a deque plus a set of waiting long-polls. `put` wakes every waiter;
`take` drains up to a limit. No per-message allocation beyond the deque slot, no
task per poll: a waiting poll is one future and one timer handle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

__all__ = ["Mailbox"]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Mailbox:
    """Tasks (protocol `Task` dicts) for one worker, in delivery order."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._waiters: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, message: dict[str, Any]) -> None:
        """Queue one message and wake every poll waiting on this mailbox."""
        self._items.append(message)
        if self._waiters:
            self.wake()

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Remove and return up to `limit` messages, oldest first."""
        items = self._items
        if len(items) <= limit:
            out = list(items)
            items.clear()
            return out
        return [items.popleft() for _ in range(limit)]

    def put_back(self, messages: list[dict[str, Any]]) -> None:
        """Return taken messages to the front, in their order (their taker is gone)."""
        self._items.extendleft(reversed(messages))
        if messages and self._waiters:
            self.wake()

    def task_ids(self) -> list[str]:
        """Ids of the activity and workflow tasks waiting here."""
        return [m["task_id"] for m in self._items if m["kind"] in ("activity", "workflow")]

    def outcomes(self) -> dict[str, int]:
        """Resolutions waiting here, counted by the workflow task they are for."""
        counts: dict[str, int] = {}
        for m in self._items:
            if m["kind"] == "resolution":
                wft = m["workflow_task_id"]
                counts[wft] = counts.get(wft, 0) + 1
        return counts

    def void_tasks(self) -> None:
        """Drop every queued task and resolution, keeping cancels: the process may still
        run the attempts they cancel (a draining worker does)."""
        kept = [m for m in self._items if m["kind"] == "cancel"]
        self._items.clear()
        self._items.extend(kept)

    def clear(self) -> int:
        """Drop every queued message (the worker's incarnation is gone); returns how many."""
        dropped = len(self._items)
        self._items.clear()
        return dropped

    def wake(self) -> None:
        """Release every waiting poll (a message arrived, or the scheduler is stopping)."""
        for waiter in self._waiters:
            _wake(waiter)

    async def wait(self, seconds: float) -> None:
        """Return when a message is put or `wake` is called, or after `seconds`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _wake, waiter)
        self._waiters.add(waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiters.discard(waiter)
