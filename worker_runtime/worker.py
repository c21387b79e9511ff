"""The worker process: registers, heartbeats, long-polls and routes each task it gets.

A `Worker` composes three parts that do not know each other (as Temporal's worker
composes its activity and workflow workers): an `ActivityRunner` runs activity
attempts, a `WorkflowRunner` runs workflow instances, and a `Reporter` batches what
both produce into ``/report`` requests, whose responses may piggyback the next tasks.
One poll is always outstanding so resolutions, cancels and workflow tasks keep
flowing while every activity slot is busy. Each heartbeat lists every task the
process holds, so the scheduler can dispatch again a task that never arrived.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from typing import Any

import httpx

from .activities import ActivityDefinition
from .activity_runner import ActivityRunner
from .client import DEFAULT_SCHEDULER_URL, SchedulerClient
from .errors import SchedulerRequestError, SchedulerUnavailableError, WorkerReplacedError
from .metrics import open_metrics_port
from .protocol import (
    ActivityTask,
    CancelTask,
    RegisterWorkerRequest,
    ReportResponse,
    Resolution,
    WorkerDrainingRequest,
    WorkerHeartbeat,
    WorkflowTask,
)
from .reporter import Reporter
from .worker_metrics import WorkerMetrics
from .workflow import WorkflowDefinition, get_definition
from .workflow_runner import WorkflowRunner

log = logging.getLogger("worker_runtime.worker")

AnyTask = ActivityTask | WorkflowTask | Resolution | CancelTask
DEFAULT_SHUTDOWN_GRACE = 10.0
"""Seconds running activities get to finish after SIGTERM (`TETHER_SHUTDOWN_GRACE`)."""
REPORT_DRAIN_SECONDS = 5.0
"""How long a stopping worker waits for its last reports to be acknowledged."""


class Worker:
    """One worker: registers its workflows and activities, then runs tasks until stopped.

    ``transport`` replaces the network (tests, in-process schedulers);
    ``heartbeat_interval`` overrides the interval the scheduler asks for.
    """

    def __init__(
        self,
        workflows: Iterable[type[Any]],
        activities: Iterable[ActivityDefinition[..., Any]],
        *,
        scheduler_url: str = DEFAULT_SCHEDULER_URL,
        worker_id: str,
        pod: str | None = None,
        node: str | None = None,
        pool: str = "",
        slots: int = 8,
        session_capacity: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        heartbeat_interval: float | None = None,
        poll_wait: float = 10.0,
        connect_timeout: float = 10.0,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
        namespace: str = "",
        metrics_port: int = 0,
    ) -> None:
        self._workflows: dict[str, WorkflowDefinition] = {}
        for cls in workflows:
            definition = get_definition(cls)
            self._workflows[definition.name] = definition
        self._activities: dict[str, ActivityDefinition[..., Any]] = {}
        for act in activities:
            if not isinstance(act, ActivityDefinition):
                raise TypeError(f"{act!r} is not an activity: decorate it with @activity")
            self._activities[act.name] = act
        self._worker_id = worker_id
        self.pod = pod or worker_id
        self.node = node or socket.gethostname()
        self.pool = pool
        self.slots = slots
        self.session_capacity = session_capacity
        self.namespace = namespace
        self.scheduler_url = scheduler_url
        self._transport = transport
        self._heartbeat_override = heartbeat_interval
        self._heartbeat_interval = heartbeat_interval or 0.25
        self._poll_wait = poll_wait
        self._connect_timeout = connect_timeout
        self._shutdown_grace = shutdown_grace
        self._incarnation = uuid.uuid4().hex

        self._client: SchedulerClient | None = None
        self._ctx = contextvars.Context()
        self._stop_event = asyncio.Event()
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._stopping = False
        self._killed = False
        self._generation = 0
        self._register_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self.metrics_port = metrics_port
        self.metrics = WorkerMetrics(lambda: slots - self._activity_runner.free_slots, slots)
        """This worker's metrics, served on `metrics_port` (0: not served) while it runs."""

        self._reporter = Reporter(
            worker_id,
            context=self._ctx,
            max_tasks=self._report_max_tasks,
            on_response=self._on_report_response,
            generation=lambda: self._generation,
            reregister=self._reregister,
            on_retry=lambda: self.metrics.reports_retried.inc(()),
        )
        self._activity_runner = ActivityRunner(
            self._activities,
            worker_id=worker_id,
            pod=self.pod,
            node=self.node,
            slots=slots,
            context=self._ctx,
            on_done=self._reporter.activity_done,
            on_heartbeat=self._reporter.heartbeat,
            metrics=self.metrics,
        )
        self._workflow_runner = WorkflowRunner(
            self._workflows,
            worker_id=worker_id,
            pod=self.pod,
            node=self.node,
            on_command=self._reporter.command,
        )

    # ------------------------------------------------------------------ public surface

    @property
    def worker_id(self) -> str:
        """This worker's identity (its pod name when it runs in a pod)."""
        return self._worker_id

    @property
    def running(self) -> bool:
        """True from ``run()`` until the worker stopped or was killed."""
        return self._running

    @property
    def workflow_names(self) -> list[str]:
        """Names of the registered workflows."""
        return list(self._workflows)

    @property
    def activity_names(self) -> list[str]:
        """Names of the registered activities."""
        return list(self._activities)

    async def wait_ready(self) -> None:
        """Return once the worker has registered with the scheduler."""
        await self._ready.wait()

    async def run(self) -> None:
        """Register, then poll and run tasks until ``stop()``, ``kill()`` or cancellation."""
        if self._running:
            raise RuntimeError(f"worker {self.worker_id} is already running")
        self._running = True
        namespace = os.environ.get("TETHER_NAMESPACE")
        self._client = SchedulerClient(
            self.scheduler_url,
            transport=self._transport,
            headers={"X-Tether-Namespace": namespace} if namespace else None,
        )
        self._reporter.open(self._client)
        self._activity_runner.open(asyncio.get_running_loop())
        metrics = await open_metrics_port(self.metrics.registry, "0.0.0.0", self.metrics_port)
        try:
            await self._register_initially()
            heartbeat = self._spawn(self._heartbeat_loop(), "heartbeat")
            poll = self._spawn(self._poll_loop(), "poll")
            stop = self._spawn(self._stop_event.wait(), "stop")
            done, _ = await asyncio.wait(
                {heartbeat, poll, stop}, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                failure = None if task is stop or task.cancelled() else task.exception()
                if failure is not None:
                    raise failure
            if not self._killed:
                await self._shutdown(poll, heartbeat)
        finally:
            self._running = False
            self._stopping = True
            self._cancel_everything()
            self._activity_runner.close()
            if metrics is not None:
                metrics.close()
            await self._client.aclose()
            self._done.set()

    async def stop(self) -> None:
        """Stop gracefully (what SIGTERM does): take no new tasks, tell the scheduler this
        worker is draining (its sessions break now; tasks it had not started go elsewhere
        at once), let running activities finish (up to the shutdown grace), report them
        and what is left, then return from ``run()``."""
        self._stopping = True
        self._stop_event.set()
        if self._running:
            await self._done.wait()

    def kill(self) -> None:
        """Simulate a crash: cancel everything at once and send nothing more."""
        self._killed = True
        self._stopping = True
        self._cancel_everything()
        self._stop_event.set()

    # ------------------------------------------------------------------ registration

    def _registration(self) -> RegisterWorkerRequest:
        return RegisterWorkerRequest(
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            pool=self.pool,
            incarnation=self._incarnation,
            workflows=[d.spec() for d in self._workflows.values()],
            activities=[a.spec() for a in self._activities.values()],
            slots=self.slots,
            session_capacity=self.session_capacity,
            namespace=self.namespace,
        )

    async def _register(self) -> None:
        assert self._client is not None
        response = await self._client.register(self._registration())
        self._generation += 1
        if self._heartbeat_override is None and response.heartbeat_interval > 0:
            self._heartbeat_interval = response.heartbeat_interval
        log.info(
            "worker %s registered with %s (%d workflows, %d activities)",
            self.worker_id,
            self.scheduler_url,
            len(self._workflows),
            len(self._activities),
        )
        self._ready.set()

    async def _register_initially(self) -> None:
        deadline = asyncio.get_running_loop().time() + self._connect_timeout
        delay = 0.1
        while True:
            try:
                await self._register()
                return
            except SchedulerUnavailableError:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _reregister(self, generation: int) -> None:
        """The scheduler forgot us (404): register again, once per generation."""
        async with self._register_lock:
            if self._generation == generation and not self._killed:
                log.warning("scheduler does not know worker %s; registering again", self.worker_id)
                # A scheduler that does not know us is a new one (a new leader, a restart):
                # connections opened before may lead to the old one and hang there.
                assert self._client is not None
                self._client.reset_connections()
                await self._register()
                if self._stopping:
                    await self._send_drain()  # a new scheduler must not send it new tasks

    # ------------------------------------------------------------------ loops

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(
            coro, name=f"{self.worker_id} {name}", context=self._ctx.copy()
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _heartbeat_loop(self) -> None:
        assert self._client is not None
        while True:
            await asyncio.sleep(self._heartbeat_interval)
            generation = self._generation
            try:
                # Built right before the request: no await between here and the send.
                beat = WorkerHeartbeat(
                    incarnation=self._incarnation,
                    tasks=self._held_task_ids(),
                    outcomes=self._workflow_runner.outcomes_received(),
                )
                await self._client.heartbeat(
                    self.worker_id, beat, give_up_after=max(1.0, 2 * self._heartbeat_interval)
                )
            except SchedulerRequestError as exc:
                if exc.status == 404:
                    await self._reregister_quietly(generation)
                else:
                    self._stop_if_replaced(exc)
                    log.warning("heartbeat rejected: %s", exc)
            except SchedulerUnavailableError as exc:
                log.debug("heartbeat failed: %s", exc)

    def _stop_if_replaced(self, exc: SchedulerRequestError) -> None:
        if exc.error == "WorkerReplaced":
            raise WorkerReplacedError(
                f"worker {self.worker_id} (incarnation {self._incarnation}) was replaced by a "
                "newer process with the same worker id; stopping. Give each worker process "
                "its own id."
            ) from exc

    async def _reregister_quietly(self, generation: int) -> bool:
        """Register again after a 404; False (logged) if that failed too."""
        try:
            await self._reregister(generation)
        except (SchedulerRequestError, SchedulerUnavailableError) as exc:
            log.warning("registering worker %s again failed: %s", self.worker_id, exc)
            return False
        return True

    async def _poll_loop(self) -> None:
        assert self._client is not None
        delay = 0.05
        while not self._stopping:
            generation = self._generation
            try:
                response = await self._client.poll(
                    self.worker_id,
                    max(1, self._free_slots()),
                    self._poll_wait,
                    incarnation=self._incarnation,
                )
            except SchedulerRequestError as exc:
                if exc.status != 404:
                    self._stop_if_replaced(exc)
                    log.warning("poll rejected: %s", exc)
                elif await self._reregister_quietly(generation):
                    continue
            except SchedulerUnavailableError as exc:
                log.warning("poll failed, retrying in %.2fs: %s", delay, exc)
            else:
                delay = 0.05
                for task in response.tasks:
                    self._on_task(task)
                if response.tasks:
                    # Let the code these tasks woke run and send its report before the
                    # next poll goes out: that report is on the round trip's critical path.
                    for _ in range(_TURNS_BEFORE_REPOLL):
                        await asyncio.sleep(0)
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _shutdown(self, poll: asyncio.Task[Any], heartbeat: asyncio.Task[Any]) -> None:
        poll.cancel()
        await self._send_drain()
        await self._activity_runner.drain(self._shutdown_grace)
        self._workflow_runner.cancel_all()
        await self._reporter.drain(REPORT_DRAIN_SECONDS)
        heartbeat.cancel()

    async def _send_drain(self) -> None:
        """Tell the scheduler this process is going away: its sessions break now, it gets
        no new task, and what it was sent but never started goes elsewhere at once."""
        assert self._client is not None
        request = WorkerDrainingRequest(
            reason="ProcessExited",
            message="the worker process is stopping (SIGTERM)",
            incarnation=self._incarnation,
            tasks=self._held_task_ids(),
        )
        try:
            await self._client.drain(self.worker_id, request)
        except (SchedulerRequestError, SchedulerUnavailableError) as exc:
            # Not fatal: the pod controller or the heartbeat timeout breaks the sessions.
            log.warning(
                "telling the scheduler worker %s is draining failed: %s", self.worker_id, exc
            )

    def _cancel_everything(self) -> None:
        for task in list(self._background):
            task.cancel()
        self._reporter.abort()
        self._activity_runner.abort()
        self._workflow_runner.cancel_all()

    # ------------------------------------------------------------------ incoming tasks

    def _free_slots(self) -> int:
        return self._activity_runner.free_slots

    def _report_max_tasks(self) -> int:
        return 0 if self._stopping else self._free_slots()

    def _held_task_ids(self) -> list[str]:
        """Every task this process holds: running attempts, live workflow instances, and
        outcomes not yet acknowledged. Never omits one (the scheduler would run it again)."""
        held = self._reporter.task_ids()
        held.update(self._activity_runner.task_ids())
        held.update(self._workflow_runner.task_ids())
        return list(held)

    def _on_task(self, task: AnyTask) -> None:
        if self._killed:
            return
        try:
            if isinstance(task, Resolution):
                self._workflow_runner.resolve(task)
            elif isinstance(task, ActivityTask):
                if not self._stopping:
                    self._activity_runner.start(task)
            elif isinstance(task, WorkflowTask):
                if not self._stopping:
                    self._workflow_runner.start(task)
            else:
                self._cancel_task(task.task_id, task.reason)
        except Exception:
            log.exception("failed to handle %s task", task.kind)

    def _on_report_response(self, response: ReportResponse) -> None:
        for task_id in response.cancelled:
            self._cancel_task(task_id, "cancelled by the scheduler")
        for task in response.tasks:
            self._on_task(task)

    def _cancel_task(self, task_id: str, reason: str = "") -> None:
        if not self._activity_runner.cancel(task_id):
            self._workflow_runner.cancel(task_id, reason)


_TURNS_BEFORE_REPOLL = 3
"""Loop turns from resolving a future to its report task's first write (wake, flush, send)."""
