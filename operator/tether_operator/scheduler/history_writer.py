"""Writes history to the `HistoryStore` behind the engine's back, in order, never blocking it.

`submit` only appends to an in-memory buffer and returns the run's *mark*: how many
of the run's events have been submitted so far. Each run with unwritten events has
one writer task: a run's batch is never written before its previous batch finished,
batches that pile up while a write is in flight are coalesced into one `append`,
and different runs are written concurrently, so a slow run holds up no other.
`wait_written(run_id, mark)` returns once the run's events up to `mark` are in the
store (the scheduler's durability barrier), and `on_written` is told each time a
run's written mark moves. A failing store is retried with backoff; every failure is
logged, and events still unwritten at shutdown are logged with their count. A
`StoreError` that is `permanent` (the store knows no retry can succeed) drops the
batch instead of retrying it.

With `linger` > 0 a run's events wait up to `linger` seconds before their write starts,
unless something waits for them (`wait_written`, or `urge` from a held delivery): the
events of an activity's schedule then go in one append with its completion, so a step
costs one commit, not two (the attempt was dispatched speculatively; see
docs/semantics.md, *One commit per step*).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from tether_operator.store import HistoryStore, StoreError

__all__ = ["HistoryWriter"]

logger = logging.getLogger("tether.scheduler")

MAX_CONCURRENT_WRITES = 64
"""Appends in flight at once, across runs (a store is a shared server)."""


class _RunLog:
    """One run's buffer and marks while it has events not yet written."""

    __slots__ = ("buffer", "submitted", "task", "timer", "waiters", "written")

    def __init__(self) -> None:
        self.buffer: list[dict[str, Any]] = []
        self.submitted = 0
        self.written = 0
        self.task: asyncio.Task[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.waiters: list[tuple[int, asyncio.Future[None]]] = []


class HistoryWriter:
    """Ordered, coalescing, non-blocking appends to a `HistoryStore`, with per-run marks."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        retry_initial: float = 0.05,
        retry_max: float = 5.0,
        on_written: Callable[[str, int], None] | None = None,
        on_commit: Callable[[float, int, bool], None] | None = None,
        linger: float = 0.0,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._linger = linger
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._on_written = on_written
        self._runs: dict[str, _RunLog] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._started = False
        self._limit = asyncio.Semaphore(MAX_CONCURRENT_WRITES)
        self.failures = 0
        """How many `append` calls raised (each one was logged, then retried or dropped)."""
        self.dropped = 0
        """Events dropped because the store raised a permanent error for their run."""

    @property
    def pending_events(self) -> int:
        return sum(log.submitted - log.written for log in self._runs.values())

    def submit(self, run_id: str, events: list[dict[str, Any]]) -> int:
        """Queue `events` for `run_id`; returns the run's mark after them. Never blocks,
        never raises."""
        log = self._runs.get(run_id)
        if log is None:
            if not events:
                return 0
            log = self._runs[run_id] = _RunLog()
        log.buffer.extend(events)
        log.submitted += len(events)
        if events:
            self._idle.clear()
            if log.task is None and self._started:
                if self._linger <= 0 or log.waiters:
                    log.task = self._spawn(run_id)
                elif log.timer is None:
                    log.timer = asyncio.get_running_loop().call_later(
                        self._linger, self.urge, run_id
                    )
        return log.submitted

    def urge(self, run_id: str) -> None:
        """Start writing the run's buffered events now (something waits for them)."""
        log = self._runs.get(run_id)
        if log is None:
            return
        if log.timer is not None:
            log.timer.cancel()
            log.timer = None
        if log.task is None and log.buffer and self._started:
            log.task = self._spawn(run_id)

    def mark(self, run_id: str) -> int:
        """The run's mark: 0 if everything submitted for it is written."""
        log = self._runs.get(run_id)
        return log.submitted if log is not None else 0

    def written(self, run_id: str, mark: int) -> bool:
        """True once the run's events up to `mark` are in the store."""
        log = self._runs.get(run_id)
        return log is None or log.written >= mark

    def wait_written(self, run_id: str, mark: int) -> asyncio.Future[None] | None:
        """A future done once the run's events up to `mark` are written (None: they are)."""
        log = self._runs.get(run_id)
        if log is None or log.written >= mark:
            return None
        fut = asyncio.get_running_loop().create_future()
        log.waiters.append((mark, fut))
        self.urge(run_id)
        return fut

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for run_id in list(self._runs):
            self.urge(run_id)

    async def flush(self) -> None:
        """Return once everything submitted so far is written."""
        if not self._started:
            self.start()
        for run_id in list(self._runs):
            self.urge(run_id)
        await self._idle.wait()

    async def stop(self, grace: float = 5.0) -> None:
        """Flush (for up to `grace` seconds), then stop the writer tasks."""
        if not self._started:
            return
        try:
            await asyncio.wait_for(self.flush(), grace)
        except TimeoutError:
            logger.error(
                "history store did not accept %d events of %d runs before shutdown: they are lost",
                self.pending_events,
                len(self._runs),
            )
        self._started = False
        tasks = [log.task for log in self._runs.values() if log.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for log in self._runs.values():
            log.task = None
            for _, fut in log.waiters:
                fut.cancel()  # what waited for these events is not acknowledged
            log.waiters = []

    def _spawn(self, run_id: str) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._drain(run_id), name=f"tether-history {run_id}"
        )

    async def _drain(self, run_id: str) -> None:
        """Write the run's buffer until it stays empty; one append at a time."""
        log = self._runs[run_id]
        delay = self._retry_initial
        try:
            while log.buffer:
                events, log.buffer = log.buffer, []
                async with self._limit:
                    ok = await self._write(run_id, events)
                if not ok:
                    # Put them back in front of anything submitted meanwhile: order is kept.
                    log.buffer[:0] = events
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                    continue
                delay = self._retry_initial
                log.written += len(events)
                self._release(run_id, log)
        finally:
            log.task = None
        if log.written >= log.submitted and not log.waiters:
            del self._runs[run_id]
        if not self._runs:
            self._idle.set()

    def _release(self, run_id: str, log: _RunLog) -> None:
        if log.waiters:
            still = []
            for mark, fut in log.waiters:
                if mark <= log.written:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    still.append((mark, fut))
            log.waiters = still
        if self._on_written is not None:
            try:
                self._on_written(run_id, log.written)
            except Exception:
                logger.exception("history on_written callback failed for run %s", run_id)

    async def _write(self, run_id: str, events: list[dict[str, Any]]) -> bool:
        began = time.perf_counter() if self._on_commit is not None else 0.0
        try:
            await self._store.append(run_id, events)
        except Exception as exc:
            self._committed(began, len(events), ok=False)
            self.failures += 1
            if isinstance(exc, StoreError) and exc.permanent:
                # The store says no retry can succeed (e.g. the run's object is gone):
                # drop the events, so the run's waiters go on and nothing loops forever.
                self.dropped += len(events)
                # A run deleted by its user (or with its namespace) is no error.
                level = logging.INFO if exc.expected else logging.ERROR
                logger.log(
                    level, "dropped %d history events of run %s: %s", len(events), run_id, exc
                )
                return True
            logger.exception(
                "could not persist %d history events of run %s; will retry", len(events), run_id
            )
            return False
        self._committed(began, len(events), ok=True)
        return True

    def _committed(self, began: float, events: int, *, ok: bool) -> None:
        if self._on_commit is not None:
            self._on_commit(time.perf_counter() - began, events, ok)
