"""Running activity attempts: one asyncio task per attempt, at most `slots` at once.

The runner knows nothing of reports or workflows: it hands every finished attempt,
and every heartbeat, to the callbacks it was built with.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .activities import ActivityDefinition
from .context import ActivityContext, ActivityInfo, current_activity
from .errors import PayloadError, PayloadTooLargeError
from .failures import activity_not_registered, bad_output, error_info, timeout_error, worker_stopped
from .payloads import check_value
from .protocol import ActivityTask, ErrorInfo
from .worker_metrics import WorkerMetrics

log = logging.getLogger("worker_runtime.worker")

Completion = dict[str, Any]
"""An ``ActivityCompletion``-shaped dict: ``task_id``, ``ok``, ``result`` or ``error``."""
OnDone = Callable[[str, Completion | None], None]
"""Called once per attempt as it ends: its completion, or None when nothing is reported."""
OnHeartbeat = Callable[[str, Any], None]


def failed(task_id: str, error: ErrorInfo) -> Completion:
    """The completion of a failed attempt."""
    return {"task_id": task_id, "ok": False, "error": error.model_dump()}


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    ctx: ActivityContext
    is_async: bool
    cancelled: bool = False
    """Cancelled by the scheduler: the attempt is void and reports nothing."""


class ActivityRunner:
    """Runs the activity attempts the worker receives.

    Async activities run on the event loop, sync ones on a thread pool of `slots`
    threads. `on_done(task_id, completion)` is called as each attempt ends, after it
    left `task_ids()`; `on_heartbeat(task_id, details)` for each activity heartbeat.
    """

    def __init__(
        self,
        activities: dict[str, ActivityDefinition[..., Any]],
        *,
        worker_id: str,
        pod: str,
        node: str,
        slots: int,
        context: contextvars.Context,
        on_done: OnDone,
        on_heartbeat: OnHeartbeat,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        self._activities = activities
        self._metrics = metrics
        self._worker_id, self._pod, self._node = worker_id, pod, node
        self._slots = slots
        self._context = context
        self._on_done = on_done
        self._on_heartbeat = on_heartbeat
        self._running: dict[str, _Running] = {}
        self._slot_sem = asyncio.Semaphore(slots)
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._aborted = False

    @property
    def free_slots(self) -> int:
        """Slots not taken by an attempt (running, or waiting for a slot)."""
        return max(0, self._slots - len(self._running))

    def task_ids(self) -> Iterator[str]:
        """Ids of the attempts this runner holds, from receipt until they end."""
        return iter(self._running)

    def open(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the worker's event loop and start the thread pool."""
        self._loop = loop
        self._executor = ThreadPoolExecutor(
            max_workers=self._slots, thread_name_prefix=f"tether-{self._worker_id}"
        )

    def close(self) -> None:
        """Stop the thread pool without waiting for its threads."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def start(self, task: ActivityTask) -> None:
        """Start an attempt (a task id already running is ignored)."""
        if task.task_id in self._running or self._aborted:
            return
        assert self._loop is not None
        defn = self._activities.get(task.activity)
        info = ActivityInfo(
            run_id=task.run_id,
            workflow=task.workflow,
            activity=task.activity,
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self._worker_id,
            pod=self._pod,
            node=self._node,
            session=task.session_id,
            cold_start=task.cold_start,
            heartbeat_details=task.heartbeat_details,
        )
        actx = ActivityContext(
            info,
            heartbeat_timeout=task.options.heartbeat_timeout,
            sink=self._heartbeat,
            loop=self._loop,
        )
        ctx = self._context.copy()
        ctx.run(current_activity.set, actx)
        runner = self._loop.create_task(
            self._execute(task, defn, actx), name=f"activity {task.task_id}", context=ctx
        )
        self._running[task.task_id] = _Running(runner, actx, is_async=defn is None or defn.is_async)
        if task.session_id is not None and self._metrics is not None:
            self._metrics.session_activities.inc(("true" if task.cold_start else "false",))

    def cancel(self, task_id: str) -> bool:
        """Cancel an attempt the scheduler voided; False if this runner does not hold it.

        A sync activity cannot be interrupted: it sees ``activity.cancelled()`` and its
        result is discarded.
        """
        running = self._running.get(task_id)
        if running is None:
            return False
        running.cancelled = True
        running.ctx.cancel()
        if running.is_async:
            running.task.cancel()
        return True

    async def drain(self, grace: float) -> None:
        """Let running attempts finish for up to `grace` seconds, then cancel the rest;
        each cancelled one reports a retryable ``WorkerStopped`` failure."""
        running = [r.task for r in self._running.values()]
        if running:
            log.info("waiting for %d running activities to finish", len(running))
            await asyncio.wait(running, timeout=grace)
        left = [r.task for r in self._running.values()]
        for task in left:
            task.cancel()
        if left:  # each ends at once: its failure is queued before this returns
            await asyncio.wait(left)

    def abort(self) -> None:
        """Cancel every attempt at once and report none of them (a crash)."""
        self._aborted = True
        for r in list(self._running.values()):
            r.ctx.cancel()
            r.task.cancel()
        self._running.clear()

    def _heartbeat(self, task_id: str, details: Any) -> None:
        if task_id in self._running:
            self._on_heartbeat(task_id, details)

    async def _execute(
        self, task: ActivityTask, defn: ActivityDefinition[..., Any] | None, actx: ActivityContext
    ) -> None:
        completion: Completion | None = None
        began: float | None = None
        outcome = "cancelled"
        try:
            async with self._slot_sem:
                began = time.perf_counter()
                completion = await self._attempt(task, defn)
                outcome = "completed" if completion["ok"] else "failed"
        except asyncio.CancelledError:
            completion = failed(task.task_id, worker_stopped())
        finally:
            if began is not None and self._metrics is not None:
                self._metrics.activity_seconds.observe(
                    (task.activity, outcome), time.perf_counter() - began
                )
            actx.close()
            running = self._running.pop(task.task_id, None)
            if self._aborted or (running is not None and running.cancelled):
                completion = None
            if not self._aborted:
                self._on_done(task.task_id, completion)

    async def _attempt(
        self, task: ActivityTask, defn: ActivityDefinition[..., Any] | None
    ) -> Completion:
        if defn is None:
            return failed(task.task_id, activity_not_registered(task.activity, self._worker_id))
        timeout = task.options.start_to_close_timeout
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if defn.is_async:
                    result = await defn.fn(*task.args, **task.kwargs)
                else:
                    assert self._loop is not None
                    call = functools.partial(
                        contextvars.copy_context().run, defn.fn, *task.args, **task.kwargs
                    )
                    result = await self._loop.run_in_executor(self._executor, call)
        except TimeoutError as exc:
            if not deadline.expired():  # the activity's own code timed out on something
                return failed(task.task_id, error_info(exc))
            return failed(task.task_id, timeout_error(defn.name, timeout or 0.0))
        except Exception as exc:
            return failed(task.task_id, error_info(exc))
        try:
            check_value(defn.name, "output", result)
        except (PayloadError, PayloadTooLargeError) as exc:
            return failed(task.task_id, bad_output(exc))
        return {"task_id": task.task_id, "ok": True, "result": result}
