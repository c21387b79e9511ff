"""Schedules declared in code (`define(schedule=...)`), run by `tether dev`.

Each workflow whose registration declares cron expressions is one schedule, named
after the workflow, read in UTC, with the WorkflowSchedule defaults (concurrencyPolicy
Allow, no starting deadline, catch-up None). It acts through the same `plan` as the
Kubernetes controller: runs are started through the service, named from their slot
(`nightly-report-29943965`), so a slot is never started twice; Events become log
lines. It counts from when a worker first registered the schedule; a change of the
expressions starts it afresh. `tether get schedules` lists them, and the API's
trigger, suspend and resume act on them (`ScheduleBook`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from tether_operator.engine import EngineError
from tether_operator.k8s.resources.conditions import seconds_of
from tether_operator.k8s.resources.specs import RunPhase, WorkflowScheduleSpec
from tether_operator.k8s.schedules.plan import (
    RunInfo,
    ScheduleState,
    not_ready_message,
    plan,
    trigger_run_name,
)
from tether_operator.scheduler.schedules import ScheduleError
from tether_operator.scheduler.service import SchedulerService
from worker_runtime.protocol import (
    RegisterWorkerRequest,
    ScheduleView,
    StartRunRequest,
    TriggeredRun,
)

__all__ = ["CodeSchedules"]

logger = logging.getLogger("tether.schedules")

KEEP_RUNS = 1000
"""Dev mode keeps its runs in memory: the history limits delete none of them."""


@dataclass
class _Held:
    workflow: str
    schedules: tuple[str, ...]
    created: float
    suspend: bool = False
    trigger: str | None = None
    runs: dict[str, RunInfo] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    wake_at: float | None = None


class CodeSchedules:
    """The schedules of the workflows registered with `service` (module docstring)."""

    def __init__(self, service: SchedulerService, clock: Callable[[], float] = time.time) -> None:
        self.service = service
        self.clock = clock
        self._held: dict[str, _Held] = {}
        self._wake = asyncio.Event()
        service.on_registration(self._registered)

    def _registered(self, req: RegisterWorkerRequest) -> None:
        for wf in req.workflows:
            crons = tuple(wf.schedules)
            held = self._held.get(wf.name)
            if not crons:
                self._held.pop(wf.name, None)
            elif held is None or held.schedules != crons:
                self._held[wf.name] = _Held(wf.name, crons, self.clock())
                logger.info("schedule %s: %s (UTC)", wf.name, "; ".join(crons))
        self._wake.set()

    async def run(self) -> None:
        """Act on every schedule at its next slot, until cancelled."""
        while True:
            for held in list(self._held.values()):
                if held.wake_at is None or held.wake_at <= self.clock() or held.trigger:
                    try:
                        await self.act(held)
                    except Exception:
                        logger.exception("schedule %s failed; retrying in 5 s", held.workflow)
                        held.wake_at = self.clock() + 5.0
            wakes = [h.wake_at for h in self._held.values() if h.wake_at is not None]
            delay = min([60.0, *(w - self.clock() for w in wakes)])
            self._wake.clear()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    def _refresh(self, held: _Held) -> None:
        """The runs `held` started, as the engine has them now."""
        for name, run in list(held.runs.items()):
            with contextlib.suppress(EngineError):
                view = self.service.get_run(name)
                phase = cast(RunPhase, view["phase"])
                finished = view.get("finished_at")
                held.runs[name] = RunInfo(name, run.created, phase, run.slot, finished)

    async def act(self, held: _Held) -> None:
        """Do what `plan` says for `held` now."""
        self._refresh(held)
        spec = WorkflowScheduleSpec.model_validate(
            {
                "schedules": list(held.schedules),
                "workflowRef": {"name": held.workflow},
                "suspend": held.suspend,
                "successfulRunsHistoryLimit": KEEP_RUNS,
                "failedRunsHistoryLimit": KEEP_RUNS,
            }
        )
        state = ScheduleState(
            name=held.workflow,
            created=held.created,
            last_slot=seconds_of(held.status.get("lastSlotTime")),
            last_schedule=seconds_of(held.status.get("lastScheduleTime")),
            last_trigger=held.status.get("lastTrigger"),
            trigger=held.trigger,
        )
        now = self.clock()
        acted = plan(spec, state, list(held.runs.values()), now)
        for name in acted.cancel:
            with contextlib.suppress(EngineError):
                self.service.cancel_run(name)
        for new in acted.create:
            try:
                await self.service.start_requested_run(
                    StartRunRequest(workflow=held.workflow, run_id=new.name)
                )
            except EngineError as exc:
                logger.warning("schedule %s: %s not started: %s", held.workflow, new.name, exc)
                continue
            held.runs[new.name] = RunInfo(new.name, now, "Pending", new.slot)
        for kind, reason, message in acted.events:
            level = logging.WARNING if kind == "Warning" else logging.INFO
            logger.log(level, "schedule %s: %s: %s", held.workflow, reason, message)
        held.status = acted.status
        held.trigger = None
        held.wake_at = acted.wake_at

    # ---------------------------------------------------------------- ScheduleBook

    def views(self) -> list[ScheduleView]:
        """Every schedule declared in code, by workflow name."""
        return [self._view(h) for _, h in sorted(self._held.items())]

    def _view(self, held: _Held) -> ScheduleView:
        self._refresh(held)
        status = held.status
        last = held.runs.get(status.get("lastRun") or "")
        return ScheduleView(
            namespace=self.service.namespace,
            name=held.workflow,
            workflow=held.workflow,
            schedules=list(held.schedules),
            suspend=held.suspend,
            active=[r.name for r in held.runs.values() if r.active],
            last_schedule_time=status.get("lastScheduleTime"),
            next_schedule_time=status.get("nextScheduleTime"),
            last_run=status.get("lastRun"),
            last_run_id=status.get("lastRun"),
            last_run_phase=last.phase if last is not None else None,
            message=not_ready_message(status),
        )

    def _find(self, namespace: str, name: str) -> _Held:
        held = self._held.get(name)
        if held is None or namespace != self.service.namespace:
            known = ", ".join(sorted(self._held)) or "none"
            raise ScheduleError(
                f"no schedule {name!r} in namespace {namespace!r} (dev mode has the "
                f"workflows declared with schedule=, in {self.service.namespace!r}: {known})"
            )
        return held

    async def trigger(self, namespace: str, name: str) -> TriggeredRun:
        """Start one run of workflow `name`'s schedule now (its run id is its name)."""
        held = self._find(namespace, name)
        held.trigger = f"{self.clock():.6f}"
        run = trigger_run_name(name, held.trigger)
        await self.act(held)
        return TriggeredRun(namespace=namespace, run=run, run_id=run)

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> ScheduleView:
        """Suspend or resume workflow `name`'s schedule."""
        held = self._find(namespace, name)
        held.suspend = suspend
        await self.act(held)
        self._wake.set()
        return self._view(held)
