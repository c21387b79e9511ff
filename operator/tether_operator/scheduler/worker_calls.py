"""The worker hot path's behaviour, written once: the fast path (`fastpath.py`) and the
FastAPI routes (`app.py`) both call these after parsing and authenticating."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tether_operator.scheduler.service import (
    ReportResult,
    SchedulerService,
    runs_of_completions,
    tasks_of_report,
)
from worker_runtime.protocol import PollRequest, ReportRequest

StillConnected = Callable[[], Awaitable[bool]]
"""Whether the client is still there, asked without waiting."""


async def report(
    service: SchedulerService,
    worker_id: str,
    req: ReportRequest,
    *,
    check_owner: bool,
    still_connected: StillConnected,
) -> ReportResult | None:
    """Apply a worker's report; its answer (None: the worker left while its report was
    being stored, so the tasks it would take stay queued for its next request).

    With a durable store a report of activity completions is acknowledged only once
    their history is stored, and the answer's tasks are taken after that wait: the
    workflow task that follows a completion, released by that write, goes back in the
    same answer when the same worker runs it. A report of workflow commands alone is
    acknowledged at once (a replay after a crash issues the same commands).
    """
    if check_owner:  # an authenticated worker reports only tasks dispatched to it
        service.check_assigned(worker_id, tasks_of_report(req))
    if not service.durable:
        return service.report(worker_id, req)
    result = service.report(worker_id, req, piggyback=False)
    if (written := service.written(runs_of_completions(req))) is not None:
        await written
        if not await still_connected():
            return None
    result["tasks"] = service.take_tasks(worker_id, req.max_tasks)
    return result


async def poll(
    service: SchedulerService, worker_id: str, req: PollRequest, still_connected: StillConnected
) -> dict[str, Any]:
    """Tasks for the worker, waiting up to `req.wait` seconds for one."""
    tasks = await service.poll(
        worker_id,
        req.max_tasks,
        req.wait,
        incarnation=req.incarnation,
        still_wanted=still_connected,
    )
    return {"tasks": tasks}
