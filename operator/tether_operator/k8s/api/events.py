"""Kubernetes Events on Tether's objects, written in the background, rate-bounded.

`EventRecorder.record` never blocks and never raises: it queues the Event and one
task posts them (`core/v1` Events, so `kubectl describe wfr NAME` lists them). Each
object has its own queue and the task takes from them in turn, so one object's storm
never delays another's Events; an Event equal to one still queued for its object is
folded into it (a series with a count). The queues are bounded (the oldest Event of
the longest queue is dropped when they are full) and posting is limited by a token
bucket, so a storm of notices cannot flood the API server or delay the engine.
Dropped and failed Events are counted and logged. Events carry a microsecond
`eventTime` and are named `<object>.<hex nanoseconds>`, so `kubectl describe` (which
sorts by the whole-second `lastTimestamp`, then keeps name order) lists them in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.resources.conditions import rfc3339
from tether_operator.k8s.resources.specs import API_VERSION

__all__ = ["EventRecorder", "ObjectRef"]

logger = logging.getLogger("tether.operator")

COMPONENT = "tether-operator"
"""`source.component` and `reportingComponent` of every Event."""


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about."""

    namespace: str
    name: str
    uid: str
    kind: str = "WorkflowRun"
    api_version: str = API_VERSION


@dataclass
class _Pending:
    ref: ObjectRef
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    time: float
    count: int = 1
    last: float = 0.0
    """When the last Event folded into this one happened."""


class EventRecorder:
    """Queues Events and posts them from one background task."""

    def __init__(
        self,
        client: KubeClient,
        *,
        instance: str = "",
        max_queue: int = 1000,
        rate: float = 20.0,
        burst: int = 50,
    ) -> None:
        self._client = client
        self._instance = instance or COMPONENT
        self._queues: dict[ObjectRef, deque[_Pending]] = {}
        """Per object, in the order the task takes them (round robin)."""
        self._queued = 0
        self._max_queue = max_queue
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._filled_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self.posted = 0
        """Events written."""
        self.dropped = 0
        """Events dropped because the queue was full."""
        self.failed = 0
        """Events the API server refused (each one logged)."""

    def record(
        self, ref: ObjectRef, type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        """Queue an Event about `ref`. Never blocks, never raises."""
        now = time.time()
        queue = self._queues.setdefault(ref, deque())
        for item in queue:
            if (item.type, item.reason, item.message) == (type_, reason, message):
                item.count += 1
                item.last = now
                return
        if self._queued >= self._max_queue:
            longest = max(self._queues.values(), key=len)
            longest.popleft()
            self._queued -= 1
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                logger.warning("event queue full: %d events dropped so far", self.dropped)
        queue.append(_Pending(ref, type_, reason, message, now, last=now))
        self._queued += 1
        self._idle.clear()
        self._wake.set()

    def _next(self) -> _Pending | None:
        """The oldest Event of the object whose turn it is; that object goes last."""
        while self._queues:
            ref = next(iter(self._queues))
            queue = self._queues.pop(ref)
            if queue:
                item = queue.popleft()
                self._queued -= 1
                if queue:
                    self._queues[ref] = queue
                return item
        return None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tether-events")

    async def stop(self, grace: float = 2.0) -> None:
        """Post what is queued (for up to `grace` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _take_token(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(self._burst, self._tokens + (now - self._filled_at) * self._rate)
            self._filled_at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)

    async def _run(self) -> None:
        while True:
            if not self._queued:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._take_token()
            item = self._next()
            if item is not None:
                await self._post(item)

    async def _post(self, item: _Pending) -> None:
        ref = item.ref
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Event",
            # Named `<object>.<hex nanoseconds>` as Kubernetes' own recorder names them:
            # `kubectl describe` sorts by the whole-second lastTimestamp and keeps the
            # API's name order among equals, so names in time order keep a second's
            # Events in order too.
            "metadata": {
                "name": f"{ref.name[:200]}.{round(item.time * 1e9):x}",
                "namespace": ref.namespace,
            },
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "name": ref.name,
                "namespace": ref.namespace,
                "uid": ref.uid,
            },
            "type": item.type,
            "reason": item.reason,
            "message": item.message[:1024],
            "source": {"component": COMPONENT},
            "eventTime": _micro(item.time),
            "firstTimestamp": rfc3339(item.time),
            "lastTimestamp": rfc3339(item.last),
            "action": item.reason,
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
        }
        if item.count > 1:
            body["series"] = {"count": item.count, "lastObservedTime": _micro(item.last)}
        path = paths.events(ref.namespace)
        try:
            try:
                await self._client.create(path, body)
            except ApiError as exc:
                if not exc.conflict:
                    raise
                # Another Event of the object in the same nanosecond: the server names it.
                body["metadata"] = {"generateName": f"{ref.name}.", "namespace": ref.namespace}
                await self._client.create(path, body)
        except Exception as exc:  # ApiError, httpx errors: never kill the task
            self.failed += 1
            logger.warning(
                "could not write event %s on %s/%s: %s", item.reason, ref.namespace, ref.name, exc
            )
        else:
            self.posted += 1


def _micro(at: float) -> str:
    """RFC 3339 with microseconds (a MicroTime), e.g. 2026-01-01T00:00:00.123456Z."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
