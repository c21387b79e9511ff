"""What a WorkflowSchedule does at an instant: the runs to start, cancel and delete, the
Events to write and the status to show. Pure: the clock and the runs are passed in.

The Kubernetes controller (`controller.py`) and dev mode's schedules
(`tether_operator.dev.schedules`) both act on `plan(...)`, so a schedule behaves the same
in either. Which slots are due is `engine.schedules.due`; this module adds what the
WorkflowSchedule's spec asks on top:
- `suspend`: due slots are skipped (the times passed while suspended are never caught up);
- `concurrencyPolicy`: Allow starts every due slot; Forbid skips one while a run it
  started is active (a Warning Event says so); Replace cancels the active runs and
  starts only the latest due slot;
- a trigger (a new `tether.dev/trigger` annotation value) starts one run at once,
  whatever the policy and even while suspended;
- the history limits delete the oldest finished runs beyond them (Failed and Cancelled
  count against `failedRunsHistoryLimit`).

Each slot's run has a name derived from its time (`engine.schedules.run_name`) and a
trigger's from the annotation's value, so acting twice on the same slot or trigger
(after a restart, or by a new leader) finds the run there and starts nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from tether_operator.engine import CronError, Schedule, due, run_name
from tether_operator.k8s.resources.conditions import condition, rfc3339
from tether_operator.k8s.resources.specs import RunPhase, WorkflowScheduleSpec
from tether_types.views import TERMINAL_PHASES

__all__ = [
    "SCHEDULED_TIME_ANNOTATION",
    "SCHEDULE_LABEL",
    "TRIGGER_ANNOTATION",
    "NewRun",
    "Plan",
    "RunInfo",
    "ScheduleState",
    "not_ready_message",
    "plan",
    "trigger_run_name",
]

SCHEDULE_LABEL = "tether.dev/schedule"
"""Label on every run a schedule starts: the schedule's name."""
SCHEDULED_TIME_ANNOTATION = "tether.dev/scheduled-time"
"""Annotation on a scheduled run: the slot it was started for (RFC 3339)."""
TRIGGER_ANNOTATION = "tether.dev/trigger"
"""Annotation on a schedule: a new value starts one run at once (`tether schedule trigger`)."""

EventType = Literal["Normal", "Warning"]


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run the schedule started, as last seen."""

    name: str
    created: float
    phase: RunPhase | None = None
    slot: float | None = None
    """The slot it was started for; None for a triggered run."""
    finished: float | None = None

    @property
    def active(self) -> bool:
        return self.phase not in TERMINAL_PHASES


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the schedule's object says besides its spec."""

    name: str
    created: float
    """When the schedule was created: no slot before it starts."""
    generation: int | None = None
    last_slot: float | None = None
    """The latest slot acted on (status.lastSlotTime)."""
    last_schedule: float | None = None
    last_trigger: str | None = None
    trigger: str | None = None
    """The trigger annotation's value now."""


@dataclass(frozen=True, slots=True)
class NewRun:
    """A run to create."""

    name: str
    slot: float | None
    """The slot it is for; None for a triggered run."""


@dataclass
class Plan:
    """What to do now, and the status to write after doing it."""

    create: list[NewRun] = field(default_factory=list)
    cancel: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    events: list[tuple[EventType, str, str]] = field(default_factory=list)
    status: dict[str, object] = field(default_factory=dict)
    """The status to write, in the CRD's camelCase shape."""
    wake_at: float | None = None
    """When to look again at the latest (the next slot); None: only on a change."""


def not_ready_message(status: Mapping[str, Any]) -> str:
    """Why a schedule with `status` starts nothing: its `Ready=False` condition's message
    ("" while it is ready)."""
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready" and cond.get("status") == "False":
            return str(cond.get("message", ""))
    return ""


def trigger_run_name(schedule_name: str, value: str) -> str:
    """The run a trigger annotation value starts: the same value, the same run."""
    digest = hashlib.blake2b(value.encode(), digest_size=4).hexdigest()
    return f"{schedule_name[:52]}-t{digest}"


def _at(t: float, zone: Schedule | None) -> str:
    """A slot as the user reads it: in the schedule's zone."""
    when = datetime.fromtimestamp(t, zone.zone if zone is not None else UTC)
    return when.isoformat(timespec="seconds")


def _times(slots: Sequence[float], zone: Schedule) -> str:
    shown = [_at(s, zone) for s in slots[:3]]
    more = f" and {len(slots) - 3} more" if len(slots) > 3 else ""
    return ", ".join(shown) + more


def plan(
    spec: WorkflowScheduleSpec, state: ScheduleState, runs: Sequence[RunInfo], now: float
) -> Plan:
    """What the schedule `spec` does at `now`, given its `state` and the `runs` it started."""
    out = Plan()
    existing = {run.name: run for run in runs}
    active = [run for run in runs if run.active]
    started: list[NewRun] = []
    last_slot = state.last_slot
    try:
        schedule: Schedule | None = Schedule.parse(spec.schedules, spec.time_zone)
    except CronError as exc:
        schedule = None
        ready = condition("Ready", "False", "InvalidSchedule", str(exc), state.generation)
    else:
        ready = condition("Ready", "True", "Scheduled", "", state.generation)

    if schedule is not None:
        since = max(state.created, last_slot) if last_slot is not None else state.created
        slots = due(
            schedule,
            since,
            now,
            starting_deadline=(
                float(spec.starting_deadline_seconds)
                if spec.starting_deadline_seconds is not None
                else None
            ),
            catch_up=spec.catch_up_policy,
            max_catch_up=spec.max_catch_up,
        )
        if slots.last is not None:
            last_slot = slots.last
        if slots.skipped and not spec.suspend:
            deadline = spec.starting_deadline_seconds
            out.events.append(
                (
                    "Warning",
                    "MissedSchedule",
                    f"{len(slots.skipped)} scheduled time(s) missed "
                    f"({_times(slots.skipped, schedule)}) more than "
                    f"startingDeadlineSeconds={deadline} ago; "
                    f"catchUpPolicy {spec.catch_up_policy} skips them",
                )
            )
        due_now = [] if spec.suspend else slots.start
        if spec.concurrency_policy == "Replace" and len(due_now) > 1:
            due_now = due_now[-1:]
        seconds = schedule.has_seconds
        for slot in due_now:
            name = run_name(state.name, slot, seconds=seconds)
            if name in existing:
                continue  # started before (a restart or another leader): never twice
            running = [run.name for run in active] + [new.name for new in started]
            if running and spec.concurrency_policy == "Forbid":
                out.events.append(
                    (
                        "Warning",
                        "SkippedForbid",
                        f"the run due at {_at(slot, schedule)} was not started: "
                        f"concurrencyPolicy is Forbid and {', '.join(running)} is still active",
                    )
                )
                continue
            if running and spec.concurrency_policy == "Replace":
                out.cancel.extend(run.name for run in active if run.name not in out.cancel)
                out.events.append(
                    (
                        "Normal",
                        "Replaced",
                        f"cancelled {', '.join(running)} to start the run due at "
                        f"{_at(slot, schedule)} (concurrencyPolicy Replace)",
                    )
                )
            started.append(NewRun(name, slot))

    if state.trigger and state.trigger != state.last_trigger:
        name = trigger_run_name(state.name, state.trigger)
        if name not in existing:
            started.append(NewRun(name, None))
            out.events.append(("Normal", "Triggered", f"started {name} at once (trigger)"))

    out.create = started
    for new in started:
        if new.slot is not None:
            out.events.append(
                ("Normal", "Started", f"started {new.name} for {_at(new.slot, schedule)}")
            )
    out.delete = _beyond_history(spec, runs, set(out.cancel))

    next_time = None
    if schedule is not None and not spec.suspend:
        next_time = schedule.next_after(max(now, last_slot or now))
    out.wake_at = next_time
    slots_started = [new.slot for new in started if new.slot is not None]
    last_schedule = max([*slots_started, state.last_schedule or 0.0]) or None
    cancelled = set(out.cancel)
    still = [run for run in active if run.name not in cancelled]
    newest = max(runs, key=lambda r: (r.created, r.name), default=None)
    last_run, last_phase = (newest.name, newest.phase) if newest is not None else (None, None)
    if started:
        last_run, last_phase = started[-1].name, None
    succeeded = [r.finished for r in runs if r.phase == "Succeeded" and r.finished is not None]
    suspended = (
        condition("Suspended", "True", "Suspended", "spec.suspend is true", state.generation)
        if spec.suspend
        else condition("Suspended", "False", "Resumed", "", state.generation)
    )
    out.status = {
        "observedGeneration": state.generation,
        "conditions": [ready, suspended],
        "lastScheduleTime": rfc3339(last_schedule),
        "nextScheduleTime": rfc3339(next_time),
        "lastSlotTime": rfc3339(last_slot),
        "active": [{"name": run.name, "scheduledTime": rfc3339(run.slot)} for run in still]
        + [{"name": new.name, "scheduledTime": rfc3339(new.slot)} for new in started],
        "activeCount": len(still) + len(started),
        "lastRun": last_run,
        "lastRunPhase": last_phase,
        "lastSuccessfulTime": rfc3339(max(succeeded, default=None)),
        "lastTrigger": state.trigger or state.last_trigger,
    }
    return out


def _beyond_history(
    spec: WorkflowScheduleSpec, runs: Sequence[RunInfo], cancelling: set[str]
) -> list[str]:
    """Finished runs beyond the history limits, oldest first."""
    finished = sorted(
        (r for r in runs if not r.active and r.name not in cancelling),
        key=lambda r: (r.finished or r.created, r.name),
        reverse=True,
    )
    good = [r.name for r in finished if r.phase == "Succeeded"]
    bad = [r.name for r in finished if r.phase != "Succeeded"]
    return sorted(
        good[spec.successful_runs_history_limit :] + bad[spec.failed_runs_history_limit :]
    )
