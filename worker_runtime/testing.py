"""Unit-test workflows in-process, with the real scheduler and engine, in milliseconds.

::

    from worker_runtime.testing import WorkflowEnvironment

    async def test_hello() -> None:
        async with WorkflowEnvironment(workflows=[Hello]) as env:
            assert await env.execute(Hello, "world") == "hello world"

The environment embeds a `SchedulerService` and its FastAPI app; SDK `Worker`s talk
to it through an `HttpxTransport` over `httpx.ASGITransport` (no sockets, no
subprocesses): the same `SchedulerTransport` seam, and the same client code path, as
the network transport in production. Workers can be
killed (a crash: their sessions break at once) and added or restarted, so sticky
session behaviour is testable too.

This is the one module of `worker_runtime` that imports `tether_operator`; it needs
the `operator` extra (fastapi) installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Any

import httpx

from tether_operator.engine import EngineConfig, UnknownWorker
from tether_operator.scheduler import SchedulerService, create_app
from worker_runtime.activities import ActivityDefinition
from worker_runtime.client import SchedulerClient, run_result
from worker_runtime.loader import collect_activities
from worker_runtime.protocol import HistoryEventModel, RunView, StartRunRequest, WorkerView
from worker_runtime.transport import HttpxTransport
from worker_runtime.worker import Worker
from worker_runtime.workflow import get_definition

__all__ = ["WorkflowEnvironment"]

log = logging.getLogger("worker_runtime.testing")

SCHEDULER_URL = "http://tether.test"


def _collect_activities(workflows: Sequence[type[Any]]) -> list[ActivityDefinition[..., Any]]:
    """Activities defined beside the workflows: in their modules, or (for a module
    loaded from a file path and never put in `sys.modules`) in their methods' globals."""
    found = {a.name: a for a in collect_activities(workflows)}
    for cls in workflows:
        for member in vars(cls).values():
            namespace = getattr(member, "__globals__", None)
            if isinstance(namespace, dict):
                for value in namespace.values():
                    if isinstance(value, ActivityDefinition):
                        found.setdefault(value.name, value)
    return list(found.values())


def _workflow_name(workflow: type[Any] | str) -> str:
    return workflow if isinstance(workflow, str) else get_definition(workflow).name


def _sticky_name(sticky: Any) -> Any:
    return sticky.value if isinstance(sticky, Enum) else sticky


@dataclass(frozen=True)
class _Registration:
    """What one worker registers: its workflows, activities and capacities."""

    workflows: Sequence[type[Any]]
    activities: Sequence[ActivityDefinition[..., Any]]
    slots: int
    session_capacity: int


class WorkflowEnvironment:
    """An in-process scheduler plus `workers` SDK workers, as an async context manager.

    `nodes` names the node of each worker (round robin, so two names and four
    workers put two workers on each node); by default every worker is on `node-0`.
    `activities=None` registers every activity defined in the workflows' modules.
    """

    def __init__(
        self,
        workflows: Sequence[type[Any]],
        activities: Iterable[ActivityDefinition[..., Any]] | None = None,
        *,
        workers: int = 1,
        slots: int = 8,
        session_capacity: int = 4,
        nodes: Sequence[str] | None = None,
        engine_config: EngineConfig | None = None,
        heartbeat_interval: float | None = None,
    ) -> None:
        self._workflows = list(workflows)
        self._activities = (
            _collect_activities(self._workflows) if activities is None else list(activities)
        )
        self._initial_workers = workers
        self._slots = slots
        self._session_capacity = session_capacity
        self._nodes = list(nodes) if nodes else ["node-0"]
        self._heartbeat_interval = heartbeat_interval
        self.service = SchedulerService(engine_config, scheduler_url=SCHEDULER_URL)
        """The embedded scheduler service (its `engine` is the real engine)."""
        self.app = create_app(self.service, manage_lifecycle=False)
        self.transport = HttpxTransport(httpx.ASGITransport(app=self.app))
        """The in-process transport every worker and `client` of the environment uses."""
        self.client = SchedulerClient(SCHEDULER_URL, transport=self.transport)
        """An SDK client of the embedded scheduler (HTTP API, in-process)."""
        self._workers: dict[str, Worker] = {}
        self._registrations: dict[str, _Registration] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._killed: set[str] = set()
        self._counter = 0
        self._entered = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.service.start()
        self._entered = True
        try:
            for i in range(self._initial_workers):
                await self.add_worker(node=self._nodes[i % len(self._nodes)])
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every worker, then the scheduler."""
        if not self._entered:
            return
        self._entered = False
        for worker_id in list(self._tasks):
            worker = self._workers[worker_id]
            worker.kill()
        for worker_id, task in list(self._tasks.items()):
            try:
                await asyncio.wait_for(task, 5.0)
            except (asyncio.CancelledError, TimeoutError):
                task.cancel()
            except Exception:
                log.exception("worker %s failed", worker_id)
        self._tasks.clear()
        await self.client.aclose()
        await self.service.stop()

    # ------------------------------------------------------------------ workers

    @property
    def worker_ids(self) -> list[str]:
        """Ids of the workers running now (killed ones excluded), in creation order."""
        return [wid for wid in self._workers if wid in self._tasks and wid not in self._killed]

    def worker(self, worker_id: str) -> Worker:
        """The SDK `Worker` object behind `worker_id`."""
        return self._workers[worker_id]

    async def add_worker(
        self,
        worker_id: str | None = None,
        node: str | None = None,
        *,
        workflows: Sequence[type[Any]] | None = None,
        activities: Iterable[ActivityDefinition[..., Any]] | None = None,
        slots: int | None = None,
        session_capacity: int | None = None,
    ) -> str:
        """Start a worker (a new one, or a new process for a killed id); returns its id.

        `workflows`, `activities`, `slots` and `session_capacity` override the
        environment's defaults for this worker only (e.g. a worker that runs only
        workflows, or one that lacks a child workflow). A restarted id keeps the
        registration and node it had unless they are given again.
        """
        if worker_id is None:
            worker_id = f"worker-{self._counter}"
            while worker_id in self._workers:
                self._counter += 1
                worker_id = f"worker-{self._counter}"
        if worker_id in self._tasks and worker_id not in self._killed:
            raise ValueError(f"worker {worker_id!r} is already running")
        if node is None:
            previous = self._workers.get(worker_id)
            node = previous.node if previous else self._nodes[self._counter % len(self._nodes)]
        self._counter += 1
        before = self._registrations.get(worker_id) or _Registration(
            self._workflows, self._activities, self._slots, self._session_capacity
        )
        registration = _Registration(
            list(workflows) if workflows is not None else before.workflows,
            list(activities) if activities is not None else before.activities,
            slots if slots is not None else before.slots,
            session_capacity if session_capacity is not None else before.session_capacity,
        )
        self._registrations[worker_id] = registration
        worker = Worker(
            registration.workflows,
            registration.activities,
            scheduler_url=SCHEDULER_URL,
            worker_id=worker_id,
            pod=worker_id,
            node=node,
            slots=registration.slots,
            session_capacity=registration.session_capacity,
            transport=self.transport,
            heartbeat_interval=self._heartbeat_interval,
        )
        task = asyncio.create_task(worker.run(), name=f"tether-test-worker {worker_id}")
        self._workers[worker_id] = worker
        self._tasks[worker_id] = task
        self._killed.discard(worker_id)
        ready = asyncio.ensure_future(worker.wait_ready())
        await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            ready.cancel()
            await task  # raises why the worker could not start
            raise RuntimeError(f"worker {worker_id} stopped before registering")
        return worker_id

    async def kill_worker(self, worker_id: str, reason: str = "ProcessExited") -> None:
        """Crash a worker: it stops at once, and the scheduler is told it is gone, so
        its sessions break now (not at the heartbeat timeout)."""
        worker = self._workers[worker_id]
        worker.kill()
        self._killed.add(worker_id)
        task = self._tasks.get(worker_id)
        if task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(task, 5.0)
        with contextlib.suppress(UnknownWorker):
            self.service.worker_lost(
                worker_id, reason, f"worker {worker_id} was killed by the test"
            )

    async def stop_worker(self, worker_id: str) -> None:
        """Stop a worker gracefully (it finishes running activities first)."""
        await self._workers[worker_id].stop()
        self._killed.add(worker_id)

    def worker_views(self) -> list[WorkerView]:
        """The scheduler's view of every worker it knows: liveness, load, sessions."""
        return [WorkerView.model_validate(w) for w in self.service.workers()]

    # ------------------------------------------------------------------ runs

    async def start(
        self,
        workflow: type[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        sticky: Any = None,
        schedule_timeout: float | None = None,
    ) -> str:
        """Start a run; returns its id."""
        request = StartRunRequest(
            workflow=_workflow_name(workflow),
            input=input,
            run_id=run_id,
            sticky=_sticky_name(sticky),
        )
        if schedule_timeout is not None:
            request.schedule_timeout = schedule_timeout
        return str(self.service.start_run(request)["run_id"])

    async def execute(
        self,
        workflow: type[Any] | str,
        input: Any = None,
        *,
        run_id: str | None = None,
        sticky: Any = None,
        timeout: float = 10.0,  # noqa: ASYNC109 - a plain deadline for the run
    ) -> Any:
        """Run a workflow to the end and return its result.

        Raises `WorkflowFailedError` if the run failed or was cancelled, and
        `TimeoutError` if it has not ended after `timeout` seconds.
        """
        rid = await self.start(workflow, input, run_id=run_id, sticky=sticky)
        return run_result(await self.wait(rid, timeout), timeout)

    async def wait(self, run_id: str, timeout: float = 10.0) -> RunView:  # noqa: ASYNC109
        """The run once it ended, or its current view after `timeout` seconds."""
        return RunView.model_validate(await self.service.wait_run(run_id, timeout))

    def describe(self, run_id: str) -> RunView:
        """The run's current view: phase, activities, sessions, children."""
        return RunView.model_validate(self.service.get_run(run_id))

    def history(self, run_id: str) -> list[HistoryEventModel]:
        """The run's recorded history events."""
        return [HistoryEventModel.model_validate(e) for e in self.service.history(run_id)]

    async def cancel(self, run_id: str) -> RunView:
        return RunView.model_validate(self.service.cancel_run(run_id))
