"""The worker process loop: register, long-poll for tasks, run them, report back.

Everything produced in one event-loop iteration (activity completions, heartbeats,
workflow commands) goes to the scheduler in one ``/report`` request; the response
may piggyback the next tasks. One poll is always outstanding so resolutions, cancels
and workflow tasks keep flowing while every activity slot is busy.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import os
import socket
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from .activities import ActivityDefinition
from .client import DEFAULT_SCHEDULER_URL, SchedulerClient
from .context import ActivityContext, ActivityInfo, current_activity
from .errors import (
    PayloadError,
    PayloadTooLargeError,
    SchedulerRequestError,
    SchedulerUnavailableError,
)
from .failures import error_dict, timeout_error
from .payloads import check_value
from .protocol import (
    ActivityTask,
    CancelTask,
    ErrorInfo,
    RegisterWorkerRequest,
    ReportResponse,
    Resolution,
    WorkflowTask,
)
from .reports import describe_report, split_report
from .workflow import WorkflowDefinition, get_definition
from .workflow_instance import Outcome, WorkflowInstance

log = logging.getLogger("worker_runtime.worker")

AnyTask = ActivityTask | WorkflowTask | Resolution | CancelTask
MAX_REPORTS_IN_FLIGHT = 2


@dataclass(slots=True)
class _Running:
    task: asyncio.Task[None]
    ctx: ActivityContext
    is_async: bool
    cancelled: bool = False


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
        slots: int = 8,
        session_capacity: int = 4,
        transport: httpx.AsyncBaseTransport | None = None,
        heartbeat_interval: float | None = None,
        poll_wait: float = 10.0,
        connect_timeout: float = 10.0,
        shutdown_grace: float = 10.0,
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
        self.slots = slots
        self.session_capacity = session_capacity
        self.scheduler_url = scheduler_url
        self._transport = transport
        self._heartbeat_override = heartbeat_interval
        self._heartbeat_interval = heartbeat_interval or 0.25
        self._poll_wait = poll_wait
        self._connect_timeout = connect_timeout
        self._shutdown_grace = shutdown_grace
        self._incarnation = uuid.uuid4().hex

        self._client: SchedulerClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._ctx = contextvars.Context()
        self._stop_event = asyncio.Event()
        self._ready = asyncio.Event()
        self._done = asyncio.Event()
        self._running = False
        self._stopping = False
        self._killed = False
        self._generation = 0
        self._register_lock = asyncio.Lock()
        self._slot_sem = asyncio.Semaphore(slots)

        self._activity_tasks: dict[str, _Running] = {}
        self._instances: dict[str, WorkflowInstance] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._report_tasks: set[asyncio.Task[None]] = set()

        self._completions: list[dict[str, Any]] = []
        self._heartbeats: dict[str, Any] = {}
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._flush_scheduled = False
        self._runs_in_flight: set[str] = set()
        """Runs with commands in an unanswered report: their next commands wait (order)."""

    # ------------------------------------------------------------------ public surface

    @property
    def worker_id(self) -> str:
        """This worker's identity (the pod name in Kubernetes)."""
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
        self._loop = asyncio.get_running_loop()
        namespace = os.environ.get("TETHER_NAMESPACE")
        self._client = SchedulerClient(
            self.scheduler_url,
            transport=self._transport,
            headers={"X-Tether-Namespace": namespace} if namespace else None,
        )
        self._executor = ThreadPoolExecutor(
            max_workers=self.slots, thread_name_prefix=f"tether-{self.worker_id}"
        )
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
            self._executor.shutdown(wait=False, cancel_futures=True)
            await self._client.aclose()
            self._done.set()

    async def stop(self) -> None:
        """Stop gracefully: take no new tasks, let running activities finish (up to the
        shutdown grace), report what is left, then return from ``run()``."""
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
            incarnation=self._incarnation,
            workflows=[d.spec() for d in self._workflows.values()],
            activities=[a.spec() for a in self._activities.values()],
            slots=self.slots,
            session_capacity=self.session_capacity,
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
                await self._register()

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
                await self._client.heartbeat(self.worker_id)
            except SchedulerRequestError as exc:
                if exc.status == 404:
                    await self._reregister(generation)
                else:
                    log.warning("heartbeat rejected: %s", exc)
            except SchedulerUnavailableError as exc:
                log.debug("heartbeat failed: %s", exc)

    async def _poll_loop(self) -> None:
        assert self._client is not None
        delay = 0.05
        while not self._stopping:
            generation = self._generation
            try:
                response = await self._client.poll(
                    self.worker_id, max(1, self._free_slots()), self._poll_wait
                )
            except SchedulerRequestError as exc:
                if exc.status == 404:
                    await self._reregister(generation)
                    continue
                log.warning("poll rejected: %s", exc)
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
        running = [r.task for r in self._activity_tasks.values()]
        if running:
            log.info("waiting for %d running activities to finish", len(running))
            await asyncio.wait(running, timeout=self._shutdown_grace)
        for r in list(self._activity_tasks.values()):
            r.task.cancel()
        for instance in list(self._instances.values()):
            instance.cancel()
        self._instances.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while loop.time() < deadline and (self._has_pending() or self._report_tasks):
            self._flush()
            if not self._report_tasks:
                break
            await asyncio.wait(set(self._report_tasks), timeout=max(0.0, deadline - loop.time()))
        heartbeat.cancel()

    def _cancel_everything(self) -> None:
        for task in list(self._background) + list(self._report_tasks):
            task.cancel()
        for r in list(self._activity_tasks.values()):
            r.ctx.cancel()
            r.task.cancel()
        self._activity_tasks.clear()
        for instance in list(self._instances.values()):
            instance.cancel()
        self._instances.clear()

    # ------------------------------------------------------------------ incoming tasks

    def _free_slots(self) -> int:
        return max(0, self.slots - len(self._activity_tasks))

    def _on_task(self, task: AnyTask) -> None:
        if self._killed:
            return
        try:
            if isinstance(task, Resolution):
                instance = self._instances.get(task.run_id)
                if instance is not None:
                    instance.resolve(
                        task.seq,
                        Outcome(task.ok, task.result, task.error, task.attempts, task.time),
                        task.workflow_task_id,
                    )
            elif isinstance(task, ActivityTask):
                if not self._stopping:
                    self._start_activity(task)
            elif isinstance(task, WorkflowTask):
                if not self._stopping:
                    self._start_workflow(task)
            else:
                self._cancel_task(task.task_id, task.reason)
        except Exception:
            log.exception("failed to handle %s task", task.kind)

    def _cancel_task(self, task_id: str, reason: str = "") -> None:
        running = self._activity_tasks.get(task_id)
        if running is not None:
            running.cancelled = True
            running.ctx.cancel()
            if running.is_async:
                running.task.cancel()
            return
        for run_id, instance in list(self._instances.items()):
            if instance.task_id == task_id:
                log.info("workflow task %s of run %s cancelled: %s", task_id, run_id, reason)
                instance.cancel()
                del self._instances[run_id]

    # ------------------------------------------------------------------ activities

    def _start_activity(self, task: ActivityTask) -> None:
        if task.task_id in self._activity_tasks:
            return
        assert self._loop is not None
        defn = self._activities.get(task.activity)
        info = ActivityInfo(
            run_id=task.run_id,
            workflow=task.workflow,
            activity=task.activity,
            task_id=task.task_id,
            attempt=task.attempt,
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            session=task.session_id,
            cold_start=task.cold_start,
            heartbeat_details=task.heartbeat_details,
        )
        actx = ActivityContext(
            info,
            heartbeat_timeout=task.options.heartbeat_timeout,
            sink=self._queue_heartbeat,
            loop=self._loop,
        )
        ctx = self._ctx.copy()
        ctx.run(current_activity.set, actx)
        runner = self._loop.create_task(
            self._execute_activity(task, defn, actx), name=f"activity {task.task_id}", context=ctx
        )
        self._activity_tasks[task.task_id] = _Running(
            runner, actx, is_async=defn is None or defn.is_async
        )

    async def _execute_activity(
        self, task: ActivityTask, defn: ActivityDefinition[..., Any] | None, actx: ActivityContext
    ) -> None:
        completion: dict[str, Any] | None = None
        try:
            async with self._slot_sem:
                completion = await self._attempt(task, defn)
        except asyncio.CancelledError:
            completion = None
            running = self._activity_tasks.get(task.task_id)
            if not self._killed and not (running and running.cancelled):
                completion = {
                    "task_id": task.task_id,
                    "ok": False,
                    "error": {
                        "type": "ActivityCancelledError",
                        "message": "worker shutting down",
                        "reason": "WorkerStopped",
                        "non_retryable": False,
                        "traceback": None,
                    },
                }
        finally:
            actx.close()
            running = self._activity_tasks.pop(task.task_id, None)
            self._heartbeats.pop(task.task_id, None)
            if completion is not None and not self._killed and not (running and running.cancelled):
                self._completions.append(completion)
                self._schedule_flush()

    async def _attempt(
        self, task: ActivityTask, defn: ActivityDefinition[..., Any] | None
    ) -> dict[str, Any]:
        if defn is None:
            return {
                "task_id": task.task_id,
                "ok": False,
                "error": {
                    "type": "ActivityNotRegistered",
                    "reason": "ActivityNotRegistered",
                    "message": f"activity {task.activity!r} is not registered "
                    f"on worker {self.worker_id}",
                    "non_retryable": False,
                    "traceback": None,
                },
            }
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
                return {"task_id": task.task_id, "ok": False, "error": error_dict(exc)}
            return {
                "task_id": task.task_id,
                "ok": False,
                "error": timeout_error(defn.name, timeout or 0.0).model_dump(),
            }
        except Exception as exc:
            return {"task_id": task.task_id, "ok": False, "error": error_dict(exc)}
        try:
            check_value(defn.name, "output", result)
        except PayloadTooLargeError as exc:
            error = ErrorInfo(type="PayloadTooLargeError", message=str(exc), non_retryable=True)
            return {"task_id": task.task_id, "ok": False, "error": error.model_dump()}
        except PayloadError as exc:
            error = ErrorInfo(type="TypeError", message=str(exc), non_retryable=True)
            return {"task_id": task.task_id, "ok": False, "error": error.model_dump()}
        return {"task_id": task.task_id, "ok": True, "result": result}

    def _queue_heartbeat(self, task_id: str, details: Any) -> None:
        if task_id in self._activity_tasks:
            self._heartbeats[task_id] = details
            self._schedule_flush()

    # ------------------------------------------------------------------ workflows

    def _start_workflow(self, task: WorkflowTask) -> None:
        old = self._instances.pop(task.run_id, None)
        if old is not None:
            old.cancel()
        definition = self._workflows.get(task.workflow)
        if definition is None:
            self._commands.setdefault((task.run_id, task.task_id), []).append(
                {
                    "type": "fail_workflow",
                    "seq": 1,
                    "error": {
                        "type": "WorkflowNotRegistered",
                        "reason": "WorkflowNotFound",
                        "message": f"workflow {task.workflow!r} is not registered on worker "
                        f"{self.worker_id}",
                        "non_retryable": True,
                        "traceback": None,
                    },
                }
            )
            self._schedule_flush()
            return
        instance = WorkflowInstance(
            task,
            definition,
            self._queue_command,
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            on_done=self._instance_done,
        )
        self._instances[task.run_id] = instance
        instance.start()

    def _queue_command(self, instance: WorkflowInstance, command: dict[str, Any]) -> None:
        if self._killed:
            return
        key = (instance.run_id, instance.task_id)
        batch = self._commands.get(key)
        if batch is None:
            self._commands[key] = [command]
        else:
            batch.append(command)
        if not self._flush_scheduled:
            self._schedule_flush()

    def _instance_done(self, instance: WorkflowInstance) -> None:
        if self._instances.get(instance.run_id) is instance:
            del self._instances[instance.run_id]

    # ------------------------------------------------------------------ reports

    def _has_pending(self) -> bool:
        return bool(self._completions or self._heartbeats or self._commands)

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and not self._killed and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush, context=self._ctx)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._killed or self._client is None or len(self._report_tasks) >= MAX_REPORTS_IN_FLIGHT:
            return
        ready = [key for key in self._commands if key[0] not in self._runs_in_flight]
        if not (self._completions or self._heartbeats or ready):
            return
        body: dict[str, Any] = {
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
            "max_tasks": 0 if self._stopping else self._free_slots(),
        }
        self._completions = []
        self._heartbeats = {}
        runs = {run_id for run_id, _ in ready}
        self._runs_in_flight |= runs
        assert self._loop is not None
        task = self._loop.create_task(self._send_report(body, runs), context=self._ctx.copy())
        self._report_tasks.add(task)
        task.add_done_callback(self._report_done)

    def _report_done(self, task: asyncio.Task[None]) -> None:
        self._report_tasks.discard(task)
        if task.cancelled():
            return
        if self._has_pending():
            self._schedule_flush()

    async def _send_report(self, body: dict[str, Any], runs: set[str]) -> None:
        assert self._client is not None
        delay = 0.05
        response: ReportResponse | None = None
        try:
            for _ in range(50):
                generation = self._generation
                try:
                    response = await self._client.report(self.worker_id, body)
                    break
                except SchedulerRequestError as exc:
                    if exc.status == 404 and exc.error == "UnknownWorker":
                        await self._reregister(generation)
                        continue
                    # Everything else in the report was applied (the scheduler applies
                    # every item, then names the first it rejected), and applying is
                    # idempotent: bisect in order to isolate and drop only the bad item.
                    halves = split_report(body) if exc.status in (400, 404, 413, 422) else None
                    if halves is not None:
                        # 413: every payload is within its 2 MiB limit but together they
                        # are over the body limit. 400/422: one bad item must not take
                        # the rest of the batch with it. Send the report in two, in order.
                        for half in halves:
                            await self._send_report(half, set())
                        return
                    log.error("scheduler rejected %s (%s); dropping it", describe_report(body), exc)
                    return
                except SchedulerUnavailableError as exc:
                    if self._stopping and delay > 1.0:
                        log.error("could not deliver a report while stopping: %s", exc)
                        return
                    log.warning("report failed, retrying in %.2fs: %s", delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._runs_in_flight -= runs
        if response is None:
            return
        for task_id in response.cancelled:
            self._cancel_task(task_id, "cancelled by the scheduler")
        for task in response.tasks:
            self._on_task(task)


_TURNS_BEFORE_REPOLL = 3
"""Loop turns from resolving a future to its report task's first write (wake, flush, send)."""
