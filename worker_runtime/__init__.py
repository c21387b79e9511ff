"""Tether's Python SDK: activities, workflows, sticky sessions and the worker.

Use it as ``import worker_runtime as workflows``::

    @workflows.activity(start_to_close_timeout=timedelta(minutes=1))
    async def greet(name: str) -> str:
        return f"hello {name}"

    @workflows.workflow.define(name="hello")
    class Hello:
        @workflows.workflow.entrypoint
        async def run(self, name: str) -> str:
            return await greet(name)

    asyncio.run(workflows.run_worker([Hello]))
"""

from __future__ import annotations

from . import workflow
from .activities import ActivityDecorator, ActivityDefinition, activity
from .client import SchedulerClient
from .context import ActivityInfo
from .errors import (
    ActivityCancelledError,
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    NonDeterminismError,
    NonDeterministicCallError,
    PayloadError,
    PayloadTooLargeError,
    SchedulerRequestError,
    SchedulerUnavailableError,
    SessionBrokenError,
    StickyChildError,
    TetherError,
    WorkerReplacedError,
    WorkflowFailedError,
)
from .run import run_worker
from .sessions import (
    StickySession,
    StickyStrategy,
    get_sticky_worker_session,
    run_activities_locally,
    run_sticky_worker_session,
)
from .worker import Worker
from .workflow import WorkflowDefinition, WorkflowInfo

__all__ = [
    "ActivityCancelledError",
    "ActivityDecorator",
    "ActivityDefinition",
    "ActivityError",
    "ActivityInfo",
    "ApplicationError",
    "ChildWorkflowError",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "PayloadError",
    "PayloadTooLargeError",
    "SchedulerClient",
    "SchedulerRequestError",
    "SchedulerUnavailableError",
    "SessionBrokenError",
    "StickyChildError",
    "StickySession",
    "StickyStrategy",
    "TetherError",
    "Worker",
    "WorkerReplacedError",
    "WorkflowDefinition",
    "WorkflowFailedError",
    "WorkflowInfo",
    "activity",
    "get_sticky_worker_session",
    "run_activities_locally",
    "run_sticky_worker_session",
    "run_worker",
    "workflow",
]
