"""The scheduler: an asyncio service around the engine, its HTTP API and its stores.

`SchedulerService` executes the engine's effects (mailboxes, history, waiters,
notices) and keeps its deadlines; `create_app` serves it over HTTP; `serve` runs it
under uvicorn; `RunStore` is the persistence seam.
"""

from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.server import serve
from tether_operator.scheduler.service import ReportResult, SchedulerService
from tether_operator.scheduler.store import DurableMemoryRunStore, InMemoryRunStore, RunStore

__all__ = [
    "DurableMemoryRunStore",
    "InMemoryRunStore",
    "ReportResult",
    "RunStore",
    "SchedulerService",
    "create_app",
    "serve",
]
