"""The scheduler: an asyncio service around the engine, its HTTP API and its stores.

`SchedulerService` executes the engine's effects (mailboxes, history, waiters,
notices) and keeps its deadlines; `create_app` serves it over HTTP; `serve` runs it
under uvicorn. History goes to a `tether_operator.store.HistoryStore`.
"""

from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.server import serve
from tether_operator.scheduler.service import ReportResult, SchedulerService

__all__ = [
    "ReportResult",
    "SchedulerService",
    "create_app",
    "serve",
]
