"""Durable run history: the `RunStore` seam and its in-memory implementation.

A run's truth is its history (a list of `{type, time, data}` events). The scheduler
appends the events the engine emits and, on start-up, reloads every run to rebuild
the engine's state. `InMemoryRunStore` is the implementation dev mode and the tests
use; any store that keeps append order per run can stand in for it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["InMemoryRunStore", "RunStore"]


@runtime_checkable
class RunStore(Protocol):
    """Append-only history per run. Implementations must keep append order per run."""

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
