"""Durable run history: the `RunStore` seam and its in-memory implementation.

A run's truth is its history (a list of `{type, time, data}` events). The scheduler
appends the events the engine emits and, on start-up, reloads every run to rebuild
the engine's state. `InMemoryRunStore` is the implementation dev mode and the tests
use; any store that keeps append order per run can stand in for it.

A store that is `durable` (its history outlives the scheduler process: the Kubernetes
store) makes the scheduler hold back what it tells workers and clients until the
history behind it is written (see `SchedulerService`). `DurableMemoryRunStore` is an
in-memory store that asks for that treatment, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol, runtime_checkable

__all__ = ["DurableMemoryRunStore", "InMemoryRunStore", "RunStore", "StoreError"]


class StoreError(Exception):
    """A store cannot do what was asked; the message names what to look at.

    The history writer retries a failed append unless the error is `permanent`, and
    logs it as information rather than an error when it is `expected` (a user's
    deletion caused it).
    """

    permanent: bool = False
    """True when a retry of the same call cannot succeed."""
    expected: bool = False
    """True when a user's deletion caused it (logged as information, not as an error)."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


@runtime_checkable
class RunStore(Protocol):
    """Append-only history per run. Implementations must keep append order per run."""

    durable: bool
    """True if appended history outlives the scheduler process: then nothing is
    acknowledged or dispatched before the history behind it is appended."""

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Add `events` after the run's existing events (creating the run if new)."""

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        """Every event of the run, in append order; empty if the run is unknown."""

    async def run_ids(self) -> list[str]:
        """Every run with a stored history."""

    async def delete(self, run_id: str) -> None:
        """Forget the run (no error if it is unknown)."""


class InMemoryRunStore:
    """A dict of lists: dev mode and tests. Lost when the process exits."""

    durable = False

    def __init__(self) -> None:
        self._runs: dict[str, list[dict[str, Any]]] = {}

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self._runs.setdefault(run_id, []).extend(events)

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        return list(self._runs.get(run_id, ()))

    async def run_ids(self) -> list[str]:
        return list(self._runs)

    async def delete(self, run_id: str) -> None:
        self._runs.pop(run_id, None)


class DurableMemoryRunStore(InMemoryRunStore):
    """An in-memory store the scheduler treats as durable (tests and benchmarks).

    `write_delay` seconds pass in every `append`, as a round trip to a real store would.
    """

    durable = True

    def __init__(self, write_delay: float = 0.0) -> None:
        super().__init__()
        self.write_delay = write_delay
        self.appends = 0
        """How many `append` calls were made (grouped writes make fewer)."""

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.appends += 1
        if self.write_delay > 0:
            await asyncio.sleep(self.write_delay)
        await super().append(run_id, events)


def fill_namespace(events: list[dict[str, Any]], namespace: str) -> None:
    """Give a history recorded before runs carried their namespace (a `RunStarted`
    without one) `namespace`, in place; any other history is left as it is."""
    if not events or events[0].get("type") != "RunStarted":
        return
    data = events[0].get("data")
    if isinstance(data, dict) and not data.get("namespace"):
        events[0] = {**events[0], "data": {**data, "namespace": namespace}}
