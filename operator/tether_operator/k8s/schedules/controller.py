"""The WorkflowSchedule controller: starts the runs `plan` says are due, on time.

Level-based: the watch keeps every schedule and the runs labelled `tether.dev/schedule`
in memory; a schedule is looked at when it or one of its runs changes, and at its next
slot (`Plan.wake_at`), woken to the millisecond, never polled. Looking at a schedule
computes `plan(...)` from what was seen and acts on it: creates runs (owned by the
schedule, labelled with it, annotated with their slot), cancels runs (Replace: in the
engine; a run it holds no longer is deleted), deletes runs beyond the history limits,
writes Events and the status. A run created here counts as seen at once, so a Forbid
decision never waits for the watch. Only the leader runs it (the operator starts kopf
once it leads). `ScheduleBook` is what the HTTP API reads and changes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from tether_operator.engine import EngineError
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import ApiError, KubeClient
from tether_operator.k8s.api.events import EventRecorder, ObjectRef
from tether_operator.k8s.context import OperatorContext
from tether_operator.k8s.resources.conditions import (
    condition,
    merge_conditions,
    rfc3339,
    seconds_of,
)
from tether_operator.k8s.resources.naming import run_id_for
from tether_operator.k8s.resources.specs import (
    API_VERSION,
    GROUP,
    VERSION,
    WorkflowScheduleSpec,
)
from tether_operator.k8s.schedules.plan import (
    SCHEDULE_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    TRIGGER_ANNOTATION,
    NewRun,
    Plan,
    RunInfo,
    ScheduleState,
    not_ready_message,
    plan,
    trigger_run_name,
)
from tether_operator.scheduler.schedules import ScheduleError, ScheduleView, TriggeredRun
from tether_operator.scheduler.service import SchedulerService

__all__ = ["ScheduleController", "setup"]

logger = logging.getLogger("tether.schedules")

Key = tuple[str, str]
"""(namespace, name) of a WorkflowSchedule."""

RESYNC_SECONDS = 30.0
"""Every schedule is looked at this often even when nothing changes (a safety net)."""


def _newer(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether object `a` is not older than `b` (by resourceVersion, when both are numbers)."""
    ra, rb = (
        a.get("metadata", {}).get("resourceVersion"),
        b.get("metadata", {}).get("resourceVersion"),
    )
    try:
        return int(ra) >= int(rb)
    except (TypeError, ValueError):
        return True


def run_info(obj: Mapping[str, Any]) -> RunInfo:
    """What `plan` needs of a WorkflowRun object."""
    meta = obj.get("metadata", {})
    status = obj.get("status") or {}
    return RunInfo(
        name=meta.get("name", ""),
        created=seconds_of(meta.get("creationTimestamp")) or time.time(),
        phase=status.get("phase"),
        slot=seconds_of((meta.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION)),
        finished=seconds_of(status.get("completionTime")),
    )


@dataclass
class _Schedule:
    obj: dict[str, Any]
    runs: dict[str, RunInfo] = field(default_factory=dict)
    wake_at: float | None = None


class ScheduleController:
    """Acts on every WorkflowSchedule the watch shows (module docstring)."""

    def __init__(
        self,
        client: KubeClient,
        service: SchedulerService,
        events: EventRecorder | None = None,
        *,
        clock: Any = time.time,
    ) -> None:
        self.client = client
        self.service = service
        self.events = events
        self.clock = clock
        self._schedules: dict[Key, _Schedule] = {}
        self._orphans: dict[Key, dict[str, RunInfo]] = {}
        """Runs seen before their schedule (the watches race at start-up)."""
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self.created = 0
        """Runs this controller created."""

    # ---------------------------------------------------------------- watch events

    def on_schedule_event(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "DELETED":
            self._schedules.pop(key, None)
            return
        held = self._schedules.get(key)
        if held is None:
            held = _Schedule(dict(obj), self._orphans.pop(key, {}))
            self._schedules[key] = held
        elif _newer(obj, held.obj):
            held.obj = dict(obj)
        self._mark(key)

    def on_run_event(self, kind: str | None, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata", {})
        schedule = (meta.get("labels") or {}).get(SCHEDULE_LABEL)
        if not schedule:
            return
        key = (meta.get("namespace", ""), schedule)
        held = self._schedules.get(key)
        runs = held.runs if held is not None else self._orphans.setdefault(key, {})
        if kind == "DELETED":
            runs.pop(meta.get("name", ""), None)
        else:
            runs[meta.get("name", "")] = run_info(obj)
        if held is not None:
            self._mark(key)

    def _mark(self, key: Key) -> None:
        self._dirty.add(key)
        self._wake.set()

    # ---------------------------------------------------------------- the loop

    async def run(self) -> None:
        """Look at dirty schedules, and at each one's next slot, until cancelled."""
        last_resync = self.clock()
        while True:
            now = self.clock()
            if now - last_resync >= RESYNC_SECONDS:
                self._dirty.update(self._schedules)
                last_resync = now
            due = {
                k for k, s in self._schedules.items() if s.wake_at is not None and s.wake_at <= now
            }
            keys, self._dirty = self._dirty | due, set()
            for key in sorted(keys):
                if key in self._schedules:
                    try:
                        await self.reconcile(key)
                    except Exception:  # one schedule's failure must not stop the others
                        logger.exception("schedule %s/%s: reconcile failed; retrying", *key)
                        self._schedules[key].wake_at = self.clock() + 5.0
            wakes = [s.wake_at for s in self._schedules.values() if s.wake_at is not None]
            delay = min([RESYNC_SECONDS, *(w - self.clock() for w in wakes)])
            if delay > 0 and not self._dirty:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)

    async def reconcile(self, key: Key) -> Plan | None:
        """Act on schedule `key` now; the plan acted on (None if its spec is refused)."""
        held = self._schedules[key]
        obj = held.obj
        meta = obj.get("metadata", {})
        status = obj.get("status") or {}
        namespace, name = key
        try:
            spec = WorkflowScheduleSpec.model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            held.wake_at = None
            bad = condition("Ready", "False", "InvalidSpec", str(exc), meta.get("generation"))
            await self._write_status(held, {"conditions": [bad]})
            return None
        state = ScheduleState(
            name=name,
            created=seconds_of(meta.get("creationTimestamp")) or self.clock(),
            generation=meta.get("generation"),
            last_slot=seconds_of(status.get("lastSlotTime")),
            last_schedule=seconds_of(status.get("lastScheduleTime")),
            last_trigger=status.get("lastTrigger"),
            trigger=(meta.get("annotations") or {}).get(TRIGGER_ANNOTATION),
        )
        now = self.clock()
        acted = plan(spec, state, list(held.runs.values()), now)
        ref = ObjectRef(namespace, name, meta.get("uid", ""), kind="WorkflowSchedule")
        for run in acted.cancel:
            await self._cancel(namespace, run)
        for new in acted.create:
            await self._create(obj, spec, new)
        for run in acted.delete:
            await self.client.delete(paths.workflow_runs(namespace, run), propagation="Background")
            held.runs.pop(run, None)
        if self.events is not None:
            for type_, reason, message in acted.events:
                self.events.record(ref, type_, reason, message)
        held.wake_at = acted.wake_at
        await self._write_status(held, acted.status)
        return acted

    async def _create(
        self, schedule: Mapping[str, Any], spec: WorkflowScheduleSpec, new: NewRun
    ) -> None:
        meta = schedule["metadata"]
        namespace = meta["namespace"]
        annotations = {SCHEDULED_TIME_ANNOTATION: rfc3339(new.slot)} if new.slot is not None else {}
        run_spec = spec.model_dump(
            by_alias=True,
            exclude_none=True,
            include={
                "workflow_ref",
                "input",
                "sticky",
                "schedule_timeout",
                "worker_pool",
                "ttl_seconds_after_finished",
            },
        )
        if spec.input is None:
            run_spec.pop("input", None)
        body = {
            "apiVersion": API_VERSION,
            "kind": "WorkflowRun",
            "metadata": {
                "name": new.name,
                "namespace": namespace,
                "labels": {SCHEDULE_LABEL: meta["name"]},
                "annotations": annotations,
                "ownerReferences": [
                    {
                        "apiVersion": API_VERSION,
                        "kind": "WorkflowSchedule",
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": run_spec,
        }
        try:
            created = await self.client.create(paths.workflow_runs(namespace), body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            return  # started before: never twice
        self.created += 1
        held = self._schedules.get((namespace, meta["name"]))
        if held is not None:
            held.runs[new.name] = run_info(created)
        logger.info(
            "schedule %s/%s started %s %.3f s after its time",
            namespace,
            meta["name"],
            new.name,
            self.clock() - new.slot if new.slot is not None else 0.0,
        )

    async def _cancel(self, namespace: str, run: str) -> None:
        run_id = run_id_for(namespace, run)
        try:
            self.service.cancel_run(run_id)
        except EngineError:  # not started in the engine (Pending): the object goes
            await self.client.delete(paths.workflow_runs(namespace, run), propagation="Background")

    async def _write_status(self, held: _Schedule, wanted: Mapping[str, Any]) -> None:
        before = held.obj.get("status") or {}
        status = dict(wanted)
        if "conditions" in status:
            status["conditions"] = merge_conditions(
                status["conditions"], before.get("conditions", []), self.clock()
            )
        if all(before.get(k) == v for k, v in status.items()):
            return
        meta = held.obj["metadata"]
        try:
            written = await self.client.patch(
                paths.workflow_schedules(meta["namespace"], meta["name"], "status"),
                {"status": status},
            )
        except ApiError as exc:
            if exc.not_found:
                return
            raise
        if isinstance(written, dict) and _newer(written, held.obj):
            held.obj = written

    # ---------------------------------------------------------------- ScheduleBook

    def views(self) -> list[ScheduleView]:
        """Every schedule, for `GET /v1/schedules`."""
        return [self._view(key) for key in sorted(self._schedules)]

    def _view(self, key: Key) -> ScheduleView:
        obj = self._schedules[key].obj
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return ScheduleView(
            namespace=key[0],
            name=key[1],
            workflow=(spec.get("workflowRef") or {}).get("name", ""),
            schedules=list(spec.get("schedules") or []),
            time_zone=spec.get("timeZone", "UTC"),
            suspend=bool(spec.get("suspend", False)),
            concurrency_policy=spec.get("concurrencyPolicy", "Allow"),
            active=[a.get("name", "") for a in status.get("active", [])],
            last_schedule_time=status.get("lastScheduleTime"),
            next_schedule_time=status.get("nextScheduleTime"),
            last_run=status.get("lastRun"),
            last_run_id=run_id_for(key[0], status["lastRun"]) if status.get("lastRun") else None,
            last_run_phase=status.get("lastRunPhase"),
            message=not_ready_message(status),
        )

    def _held(self, namespace: str, name: str) -> _Schedule:
        held = self._schedules.get((namespace, name))
        if held is None:
            raise ScheduleError(f"no WorkflowSchedule {name!r} in namespace {namespace!r}")
        return held

    async def trigger(self, namespace: str, name: str) -> TriggeredRun:
        """Start one run of the schedule at once (its trigger annotation); which run."""
        self._held(namespace, name)
        value = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        written = await self.client.patch(
            paths.workflow_schedules(namespace, name),
            {"metadata": {"annotations": {TRIGGER_ANNOTATION: value}}},
        )
        self.on_schedule_event("MODIFIED", written)
        run = trigger_run_name(name, value)
        return TriggeredRun(namespace=namespace, run=run, run_id=run_id_for(namespace, run))

    async def set_suspend(self, namespace: str, name: str, suspend: bool) -> ScheduleView:
        """Suspend or resume the schedule (its spec.suspend)."""
        self._held(namespace, name)
        written = await self.client.patch(
            paths.workflow_schedules(namespace, name), {"spec": {"suspend": suspend}}
        )
        self.on_schedule_event("MODIFIED", written)
        return self._view((namespace, name))


def register_handlers(registry: kopf.OperatorRegistry, controller: ScheduleController) -> None:
    """Feed `controller` the raw watch events of WorkflowSchedules and of the runs they
    started (labelled `tether.dev/schedule`)."""

    @kopf.on.event(GROUP, VERSION, "workflowschedules", registry=registry)
    async def _schedule_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_schedule_event(event["type"], dict(event["object"]))

    @kopf.on.event(
        GROUP, VERSION, "workflowruns", labels={SCHEDULE_LABEL: kopf.PRESENT}, registry=registry
    )
    async def _run_event(event: kopf.RawEvent, **_: Any) -> None:
        controller.on_run_event(event["type"], dict(event["object"]))


def setup(registry: kopf.OperatorRegistry, context: OperatorContext) -> ScheduleController:
    """Plug the WorkflowSchedule controller into the operator (its controller seam)."""
    controller = ScheduleController(context.client, context.service, context.events)
    register_handlers(registry, controller)
    context.service.use_schedules(controller)
    context.spawn(controller.run)
    return controller
