"""Status mirroring: which runs changed durably, and coalesced writes of their status.

`MarkingStore` wraps the `HistoryStore`: an `append` that succeeded marks its run dirty
and counts the run's durable events, so a status is only written for history that is
in the API server (`durable_length`). `StatusWriter` drains the dirty set: at most one
status write per object in flight, the latest view wins (several marks between two
writes become one PATCH), rounds at most every `min_interval` seconds and at most
`concurrency` writes at once, so the API server load is bounded whatever the engine does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.store import Event, HistoryStore, StoreError

__all__ = ["MarkingStore", "StatusPatch", "StatusWriter"]

logger = logging.getLogger("tether.operator")


class MarkingStore:
    """A `HistoryStore` that reports every durable append (and passes the rest through)."""

    def __init__(self, inner: HistoryStore) -> None:
        self.inner = inner
        self._listeners: list[Callable[[str], None]] = []
        self._failure_listeners: list[Callable[[str, StoreError], None]] = []
        self._durable: dict[str, int] = {}
        self.durable: bool = inner.durable
        self.kind: str = inner.kind

    @property
    def bytes_written(self) -> int:
        return self.inner.bytes_written

    def on_durable(self, listener: Callable[[str], None]) -> None:
        """Call `listener(run_id)` after every durable append of the run's history."""
        self._listeners.append(listener)

    def on_failure(self, listener: Callable[[str, StoreError], None]) -> None:
        """Call `listener(run_id, error)` when an append of the run's history fails and
        will be retried (the store is unavailable); `on_durable` follows once it is in."""
        self._failure_listeners.append(listener)

    def durable_length(self, run_id: str) -> int:
        """How many of the run's events are known to be stored."""
        return self._durable.get(run_id, 0)

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def append(self, run_id: str, events: list[Event]) -> None:
        try:
            await self.inner.append(run_id, events)
        except StoreError as exc:
            if not exc.permanent:
                for failed in self._failure_listeners:
                    failed(run_id, exc)
            raise
        self._durable[run_id] = self._durable.get(run_id, 0) + len(events)
        for listener in self._listeners:
            listener(run_id)

    async def load(self, run_id: str) -> list[Event]:
        events = await self.inner.load(run_id)
        self._durable[run_id] = len(events)
        return events

    async def run_ids(self) -> list[str]:
        return await self.inner.run_ids()

    async def delete(self, run_id: str) -> None:
        await self.inner.delete(run_id)
        self._durable.pop(run_id, None)

    def forget(self, run_id: str) -> None:
        self.inner.forget(run_id)
        self._durable.pop(run_id, None)

    def root(self, run_id: str) -> str:
        return self.inner.root(run_id)

    def bind(self, run_id: str, uid: str) -> None:
        self.inner.bind(run_id, uid)

    def child_started(self, run_id: str, parent_run_id: str) -> None:
        self.inner.child_started(run_id, parent_run_id)

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        return await self.inner.put_payload(run_id, value)

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        return await self.inner.get_payload(run_id, ref)

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        return await self.inner.publish_result(run_id, value)


@dataclass(frozen=True)
class StatusPatch:
    """A status to write: the object's `/status` path and the merge patch body."""

    path: str
    status: dict[str, Any]


class StatusWriter:
    """Coalesced, rate-bounded merge patches of `/status`, one in flight per key."""

    def __init__(
        self,
        client: KubeClient,
        compute: Callable[[str], StatusPatch | None],
        written: Callable[[str, dict[str, Any]], None],
        gone: Callable[[str], None],
        *,
        concurrency: int = 16,
        min_interval: float = 0.1,
        retry_delay: float = 1.0,
    ) -> None:
        self._client = client
        self._compute = compute
        self._written = written
        self._gone = gone
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._limit = asyncio.Semaphore(concurrency)
        self._min_interval = min_interval
        self._retry_delay = retry_delay
        self._task: asyncio.Task[None] | None = None
        self.patches = 0
        """Status writes sent."""
        self.failures = 0
        """Status writes the API server refused (each one logged and retried)."""

    def mark(self, key: str) -> None:
        """`key`'s status may have changed: write it soon. Never blocks."""
        self._dirty.add(key)
        self._idle.clear()
        self._wake.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tether-status")

    async def flush(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait (up to `timeout` s) until every mark so far is written."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    async def stop(self, grace: float = 3.0) -> None:
        if self._task is None:
            return
        await self.flush(grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._dirty:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            started = loop.time()
            batch, self._dirty = self._dirty, set()
            results = await asyncio.gather(*(self._write(key) for key in batch))
            if not all(results):
                await asyncio.sleep(self._retry_delay)
            rest = self._min_interval - (loop.time() - started)
            if rest > 0:
                await asyncio.sleep(rest)

    async def _write(self, key: str) -> bool:
        try:
            patch = self._compute(key)
        except Exception:
            logger.exception("could not compute the status of %s", key)
            return True
        if patch is None:
            return True
        async with self._limit:
            try:
                await self._client.patch(patch.path, {"status": patch.status})
            except ApiError as exc:
                if exc.not_found:
                    self._gone(key)
                    return True
                return self._failed(key, exc)
            except Exception as exc:  # connection trouble: retried like a refusal
                return self._failed(key, exc)
        self.patches += 1
        self._written(key, patch.status)
        return True

    def _failed(self, key: str, exc: Exception) -> bool:
        self.failures += 1
        logger.warning("could not write the status of %s (will retry): %s", key, exc)
        self._dirty.add(key)
        return False
