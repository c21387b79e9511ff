"""Writes history to the `RunStore` behind the engine's back, in order, never blocking it.

`submit` only appends to an in-memory buffer; one writer task drains the buffers.
Events of one run are written in the order they were submitted (a run's batch is
never written before its previous batch finished). Batches that pile up while a
write is in flight are coalesced into one `append`. A failing store is retried with
backoff; every failure is logged, and events still unwritten at shutdown are logged
with their count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from tether_operator.scheduler.store import RunStore

__all__ = ["HistoryWriter"]

logger = logging.getLogger("tether.scheduler")


class HistoryWriter:
    """Ordered, coalescing, non-blocking appends to a `RunStore`."""

    def __init__(
        self, store: RunStore, *, retry_initial: float = 0.05, retry_max: float = 5.0
    ) -> None:
        self._store = store
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self.failures = 0
        """How many `append` calls raised (each one was logged and retried)."""

    @property
    def pending_events(self) -> int:
        return sum(len(events) for events in self._pending.values())

    def submit(self, run_id: str, events: list[dict[str, Any]]) -> None:
        """Queue `events` for `run_id`. Never blocks, never raises."""
        if not events:
            return
        buffered = self._pending.get(run_id)
        if buffered is None:
            self._pending[run_id] = list(events)
        else:
            buffered.extend(events)
        self._idle.clear()
        self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="tether-history-writer"
            )

    async def flush(self) -> None:
        """Return once everything submitted so far is written."""
        if self._task is None:
            self.start()
        await self._idle.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Flush (for up to `grace` seconds), then stop the writer task."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), grace)
        except TimeoutError:
            logger.error(
                "history store did not accept %d events of %d runs before shutdown: they are lost",
                self.pending_events,
                len(self._pending),
            )
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            if not self._pending:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch, self._pending = self._pending, {}
            if len(batch) == 1:
                ((run_id, events),) = batch.items()
                failed = not await self._write(run_id, events)
            else:
                results = await asyncio.gather(
                    *(self._write(run_id, events) for run_id, events in batch.items())
                )
                failed = not all(results)
            if failed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
            else:
                delay = self._retry_initial

    async def _write(self, run_id: str, events: list[dict[str, Any]]) -> bool:
        try:
            await self._store.append(run_id, events)
        except Exception:
            self.failures += 1
            logger.exception(
                "could not persist %d history events of run %s; will retry", len(events), run_id
            )
            # Put them back in front of anything submitted meanwhile: order is kept.
            later = self._pending.get(run_id)
            self._pending[run_id] = events + later if later else events
            return False
        return True
