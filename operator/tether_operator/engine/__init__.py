"""The pure engine: run state machines, retries, timeouts, sessions and placement.

No I/O and no clock reads: every call takes `now` and returns effects.
"""

from tether_types.views import TERMINAL_PHASES

from .core import Engine, EngineConfig
from .demand import NO_POOL, Demand, WorkerLoad
from .effects import Deliver, Effect, Persist, RunEnded, WorkerGone
from .errors import (
    EngineError,
    InvalidCommand,
    RunAlreadyExists,
    RunNotFound,
    UnknownWorker,
    WorkerIdTaken,
    WorkerReplaced,
    WorkerRetired,
    WorkflowNotFound,
)
from .retry import backoff, should_retry
from .runs import Run
from .schedules import Cron, CronError, Schedule, due, run_name

__all__ = [
    "NO_POOL",
    "TERMINAL_PHASES",
    "Cron",
    "CronError",
    "Deliver",
    "Demand",
    "Effect",
    "Engine",
    "EngineConfig",
    "EngineError",
    "InvalidCommand",
    "Persist",
    "Run",
    "RunAlreadyExists",
    "RunEnded",
    "RunNotFound",
    "Schedule",
    "UnknownWorker",
    "WorkerGone",
    "WorkerIdTaken",
    "WorkerLoad",
    "WorkerReplaced",
    "WorkerRetired",
    "WorkflowNotFound",
    "backoff",
    "due",
    "run_name",
    "should_retry",
]
