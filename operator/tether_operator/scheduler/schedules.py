"""The schedules seam: what the HTTP API reads and changes of schedules.

A `ScheduleBook` is handed to the service (`SchedulerService.use_schedules`): on
Kubernetes the WorkflowSchedule controller (`k8s.schedules.controller`), in dev mode
the schedules declared in code (`dev.schedules`). Without one, the API lists none.
"""

from __future__ import annotations

from typing import Protocol

from worker_runtime.protocol import ScheduleView, TriggeredRun

__all__ = ["ScheduleBook", "ScheduleError", "ScheduleView", "TriggeredRun"]


class ScheduleError(LookupError):
    """No such schedule; the message names it."""


class ScheduleBook(Protocol):
    """Schedules to list, trigger, suspend and resume."""

    def views(self) -> list[ScheduleView]:
        """Every schedule, by namespace and name."""
        ...

    async def trigger(self, namespace: str, name: str) -> TriggeredRun:
        """Start one run of the schedule at once; which run. `ScheduleError` if there
        is no such schedule."""
        ...

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> ScheduleView:
        """Suspend (or resume) the schedule; `ScheduleError` if there is none."""
        ...
