"""Context variables: which activity or workflow the current code runs in, and its scopes.

They propagate to ``asyncio.gather`` children and (copied explicitly) to the threads
that run synchronous activities.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from random import Random
from typing import Any, Protocol
from uuid import UUID

from .errors import ActivityCancelledError, TetherError


@dataclass(frozen=True)
class ActivityInfo:
    """What an activity knows about its current attempt (``activity.info()``)."""

    run_id: str
    workflow: str
    activity: str
    task_id: str
    attempt: int
    worker_id: str
    pod: str
    node: str
    session: str | None
    cold_start: bool
    heartbeat_details: Any = None
    local: bool = False


@dataclass(frozen=True)
class WorkflowInfo:
    """What workflow code knows about its run (``workflow.info()``)."""

    run_id: str
    workflow: str
    attempt: int
    worker_id: str
    pod: str
    node: str
    session: str | None
    is_replaying: bool
    parent_run_id: str | None
    cold_start: bool = True
    """First workflow task of this run on this worker (a first run, or a replay that
    moved here): nothing this run cached in the worker's memory is there."""


class WorkflowHandle(Protocol):
    """What the SDK's functions ask of the workflow instance the current code runs in
    (`workflow_instance.WorkflowInstance`)."""

    @property
    def session_id(self) -> str | None:
        """The innermost session scope's id, else the run's own session's."""
        ...

    @property
    def random(self) -> Random: ...

    def info(self) -> WorkflowInfo: ...

    def now(self) -> datetime: ...

    def uuid4(self) -> UUID: ...

    async def schedule_activity(
        self, defn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    async def run_local_activity(
        self, defn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any: ...

    def open_session(self, strategy: Any) -> str: ...

    def close_session(self, session_id: str) -> None: ...

    async def start_child(
        self, workflow: str, input: Any, *, sticky: bool, session_id: str | None
    ) -> Any: ...

    async def start_timer(self, seconds: float) -> None: ...


class ActivityContext:
    """The state of one executing activity attempt: its info, heartbeats and cancellation."""

    __slots__ = (
        "_cancelled",
        "_details",
        "_last_sent",
        "_loop",
        "_loop_thread",
        "_sink",
        "_timer",
        "heartbeat_interval",
        "info",
    )

    def __init__(
        self,
        info: ActivityInfo,
        *,
        heartbeat_timeout: float | None = None,
        sink: Callable[[str, Any], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.info = info
        self.heartbeat_interval = min(1.0, 0.5 * heartbeat_timeout) if heartbeat_timeout else 1.0
        self._sink = sink
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._details: Any = None
        self._last_sent: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """True once the scheduler has asked to cancel this attempt."""
        return self._cancelled

    def cancel(self) -> None:
        """Mark the attempt cancelled: the next ``heartbeat()`` raises ActivityCancelledError."""
        self._cancelled = True

    def heartbeat(self, details: Any = None) -> None:
        """Record progress; the worker sends it to the scheduler, throttled."""
        if self._cancelled:
            raise ActivityCancelledError(f"activity {self.info.activity!r} was cancelled")
        self._details = details
        if self._sink is None or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._on_heartbeat()
        else:
            self._loop.call_soon_threadsafe(self._on_heartbeat)

    def _on_heartbeat(self) -> None:
        # Runs on the event loop thread.
        if self._sink is None or self._loop is None or self._timer is not None:
            return
        now = time.monotonic()
        wait = 0.0 if self._last_sent is None else self._last_sent + self.heartbeat_interval - now
        if wait <= 0:
            self._send()
        else:
            self._timer = self._loop.call_later(wait, self._send)

    def _send(self) -> None:
        self._timer = None
        self._last_sent = time.monotonic()
        if self._sink is not None and not self._cancelled:
            self._sink(self.info.task_id, self._details)

    def close(self) -> None:
        """Stop sending heartbeats (the attempt is over)."""
        self._sink = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


current_activity: ContextVar[ActivityContext | None] = ContextVar("tether_activity", default=None)
"""The activity attempt the current code runs in, if any."""

current_workflow: ContextVar[WorkflowHandle | None] = ContextVar("tether_workflow", default=None)
"""The workflow instance the current code runs in, if any."""

current_session: ContextVar[str | None] = ContextVar("tether_session", default=None)
"""The innermost ``run_sticky_worker_session`` scope's session id."""

local_activities: ContextVar[bool] = ContextVar("tether_local_activities", default=False)
"""True inside ``with run_activities_locally():``."""


def require_workflow(what: str) -> WorkflowHandle:
    """The current workflow instance, or a clear error naming ``what`` was called outside one."""
    instance = current_workflow.get()
    if instance is None:
        raise TetherError(f"{what} can only be called from workflow code (a workflow entrypoint)")
    return instance
