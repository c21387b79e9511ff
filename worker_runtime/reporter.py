"""Batching what the runners produce into ``/report`` requests, each kept until acknowledged.

Everything produced in one event-loop iteration (activity completions, activity
heartbeats, workflow commands) goes to the scheduler in one report. A report is
retried until the scheduler acknowledges it (2xx), across scheduler restarts and
re-registrations; only a report the scheduler rejects (a 4xx Problem other than
``UnknownWorker``) is dropped, after bisecting it down to the offending item, and
the log line says what it held. A 4xx without a Problem body is not the scheduler's
answer, and is retried. A run's commands stay in order: while one report
with a run's commands is unanswered, that run's next commands wait.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .client import SchedulerClient
from .errors import SchedulerRequestError, SchedulerUnavailableError
from .protocol import ReportResponse
from .reports import describe_report, split_report

log = logging.getLogger("worker_runtime.worker")

MAX_REPORTS_IN_FLIGHT = 2
_REJECTIONS_TO_SPLIT = (400, 404, 413, 422)
"""Statuses that name one bad item (or a body too large): bisect, keep the rest."""


class Reporter:
    """Collects completions, heartbeats and commands, and sends them in batched reports.

    `max_tasks()` says how many tasks a report's response may piggyback;
    `on_response(response)` receives each acknowledged report's response;
    `reregister(generation)` registers the worker again when the scheduler forgot it
    (`generation()` is read before each request, so one 404 registers once).
    """

    def __init__(
        self,
        worker_id: str,
        *,
        context: contextvars.Context,
        max_tasks: Callable[[], int],
        on_response: Callable[[ReportResponse], None],
        generation: Callable[[], int],
        reregister: Callable[[int], Awaitable[None]],
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self._client: SchedulerClient | None = None
        self._on_retry = on_retry
        self._loop: asyncio.AbstractEventLoop | None = None
        self._worker_id = worker_id
        self._context = context
        self._max_tasks = max_tasks
        self._on_response = on_response
        self._generation = generation
        self._reregister = reregister
        self._completions: list[dict[str, Any]] = []
        self._heartbeats: dict[str, Any] = {}
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._flush_scheduled = False
        self._runs_in_flight: set[str] = set()
        """Runs with commands in an unanswered report: their next commands wait (order)."""
        self._sending: dict[asyncio.Task[None], dict[str, Any]] = {}
        """Reports on their way, each with its body, until acknowledged or dropped."""
        self._aborted = False

    # ------------------------------------------------------------------ what to report

    def activity_done(self, task_id: str, completion: dict[str, Any] | None) -> None:
        """An attempt ended: drop its pending heartbeat, queue its completion if any."""
        self._heartbeats.pop(task_id, None)
        if completion is not None and not self._aborted:
            self._completions.append(completion)
            self._schedule_flush()

    def heartbeat(self, task_id: str, details: Any) -> None:
        """Queue an activity heartbeat (the latest details of a task win)."""
        if not self._aborted:
            self._heartbeats[task_id] = details
            self._schedule_flush()

    def command(self, run_id: str, workflow_task_id: str, command: dict[str, Any]) -> None:
        """Queue a workflow command; a run's commands are sent in the order queued."""
        if self._aborted:
            return
        key = (run_id, workflow_task_id)
        batch = self._commands.get(key)
        if batch is None:
            self._commands[key] = [command]
        else:
            batch.append(command)
        if not self._flush_scheduled:
            self._schedule_flush()

    def task_ids(self) -> set[str]:
        """Tasks whose outcome is not acknowledged yet: activity attempts with a
        completion, and workflow tasks with commands, queued or on their way."""
        held = {c["task_id"] for c in self._completions}
        held.update(wf_task_id for _, wf_task_id in self._commands)
        for body in self._sending.values():
            held.update(c["task_id"] for c in body["completions"])
            held.update(w["workflow_task_id"] for w in body["workflows"])
        return held

    # ------------------------------------------------------------------ lifecycle

    def open(self, client: SchedulerClient) -> None:
        """Send through `client`, on the running event loop."""
        self._client = client
        self._loop = asyncio.get_running_loop()

    async def drain(self, timeout: float) -> None:  # noqa: ASYNC109 - a shutdown budget
        """Send everything queued and wait for the acknowledgements, for up to `timeout`
        seconds; then drop what is left, logging what each dropped report held."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and (self._has_pending() or self._sending):
            self._flush()
            if not self._sending:
                break
            await asyncio.wait(set(self._sending), timeout=max(0.0, deadline - loop.time()))
        for task, body in list(self._sending.items()):
            log.error("dropping %s: unacknowledged when the worker stopped", describe_report(body))
            task.cancel()
        if self._has_pending():
            body = self._body(list(self._commands))
            log.error("dropping %s: not sent before the worker stopped", describe_report(body))
        self._sending.clear()

    def abort(self) -> None:
        """Drop everything at once and send nothing more (a crash)."""
        self._aborted = True
        for task in list(self._sending):
            task.cancel()
        self._sending.clear()
        self._completions, self._heartbeats, self._commands = [], {}, {}

    # ------------------------------------------------------------------ sending

    def _has_pending(self) -> bool:
        return bool(self._completions or self._heartbeats or self._commands)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._aborted and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush, context=self._context)

    def _body(self, ready: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "completions": self._completions,
            "heartbeats": [{"task_id": k, "details": v} for k, v in self._heartbeats.items()],
            "workflows": [
                {
                    "run_id": run_id,
                    "workflow_task_id": wf_task_id,
                    "commands": self._commands.pop((run_id, wf_task_id)),
                }
                for run_id, wf_task_id in ready
            ],
            "max_tasks": self._max_tasks(),
        }

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._aborted or self._loop is None or len(self._sending) >= MAX_REPORTS_IN_FLIGHT:
            return
        ready = [key for key in self._commands if key[0] not in self._runs_in_flight]
        if not (self._completions or self._heartbeats or ready):
            return
        body = self._body(ready)
        self._completions = []
        self._heartbeats = {}
        runs = {run_id for run_id, _ in ready}
        self._runs_in_flight |= runs
        task = self._loop.create_task(self._deliver(body, runs), context=self._context.copy())
        self._sending[task] = body
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.pop(task, None)
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("report task failed", exc_info=task.exception())
        if self._has_pending():
            self._schedule_flush()

    async def _deliver(self, body: dict[str, Any], runs: set[str]) -> None:
        try:
            await self._send(body)
        finally:
            self._runs_in_flight -= runs

    async def _send(self, body: dict[str, Any]) -> None:
        """Send `body` until acknowledged, then hand the response on; or drop it if the
        scheduler rejects it and it cannot be split."""
        delay = 0.05
        resend_at_once = True
        while True:
            generation = self._generation()
            assert self._client is not None
            try:
                response = await self._client.report(self._worker_id, body)
            except SchedulerRequestError as exc:
                if not exc.problem:
                    # Not the scheduler's refusal (no Problem body): something else answered
                    # at its address, e.g. while a Service moves to a new leader. Dropping
                    # a completion on that would run its activity again.
                    log.warning("report not accepted, retrying in %.2fs: %s", delay, exc)
                elif exc.status == 404 and exc.error == "UnknownWorker":
                    try:
                        await self._reregister(generation)
                    except (SchedulerRequestError, SchedulerUnavailableError) as again:
                        log.warning("report waits for registration to succeed: %s", again)
                    else:
                        if resend_at_once:  # then back off, should the scheduler forget us again
                            resend_at_once = False
                            continue
                elif exc.status in _REJECTIONS_TO_SPLIT and (halves := split_report(body)):
                    # Everything else in the report was applied (the scheduler applies
                    # every item, then names the first it rejected), and applying is
                    # idempotent: send both halves in order, so at most the one bad
                    # item is dropped. A 413 means the items fit their limits but not
                    # one body together.
                    for half in halves:
                        await self._send(half)
                    return
                else:
                    log.error("scheduler rejected %s (%s); dropping it", describe_report(body), exc)
                    return
            except SchedulerUnavailableError as exc:
                log.warning("report failed, retrying in %.2fs: %s", delay, exc)
            else:
                self._on_response(response)
                return
            if self._on_retry is not None:
                self._on_retry()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
