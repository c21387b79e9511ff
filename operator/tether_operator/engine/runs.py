"""A run's state as a fold over its history.

`Run.apply(event)` is the only way run state changes, so a run rebuilt from its
stored history (`Run.replay(events)`) is the same as the live one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tether_types.views import TERMINAL_PHASES
from tether_types.wire import (
    DEFAULT_SCHEDULE_TIMEOUT,
    STEP_OF_EVENT,
    EventType,
    Step,
    recorded_step,
)

WORKFLOW_SESSION_SUFFIX = "/wf"

Event = dict[str, Any]


def event(type_: EventType, time: float, **data: Any) -> Event:
    """A history event in its stored shape."""
    return {"type": type_, "time": time, "data": data}


@dataclass(slots=True)
class ActivityRecord:
    seq: int
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any]
    session_id: str | None
    scheduled_at: float
    state: str = "Scheduled"
    attempt: int = 0
    local: bool = False
    task_id: str | None = None
    worker: str | None = None
    pod: str | None = None
    node: str | None = None
    cold_start: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    heartbeat_details: Any = None


@dataclass(slots=True)
class SessionRecord:
    id: str
    strategy: str
    seq: int
    state: str = "Open"
    worker: str | None = None
    pod: str | None = None
    node: str | None = None
    reason: str | None = None
    message: str | None = None
    broken_at: float | None = None
    cold: bool = False
    """Bound to a worker that has not run one of its activities yet."""
    workers: list[str] = field(default_factory=list)
    breaks: list[dict[str, Any]] = field(default_factory=list)
    """Every time the session broke: worker, reason, message, time."""
    bindings: list[dict[str, Any]] = field(default_factory=list)
    """Every binding, oldest first: worker, pod, node, bound_at, ended_at (None while it
    lasts) and reason (why it ended: a loss reason, or None when the session closed)."""

    def end_binding(self, t: float, reason: str | None) -> None:
        """The current binding ends at `t` (a no-op if none lasts)."""
        if self.bindings and self.bindings[-1]["ended_at"] is None:
            self.bindings[-1]["ended_at"] = t
            self.bindings[-1]["reason"] = reason


@dataclass(slots=True)
class ChildRecord:
    seq: int
    run_id: str
    workflow: str
    sticky: bool
    state: str = "Running"
    result: Any = None
    error: dict[str, Any] | None = None


@dataclass(slots=True)
class TimerRecord:
    seq: int
    fire_at: float
    fired: bool = False


@dataclass(slots=True)
class Run:
    run_id: str
    workflow: str
    input: Any
    schedule_timeout: float
    created_at: float
    parent_run_id: str | None = None
    parent_seq: int | None = None
    placement_worker: str | None = None
    namespace: str = ""
    """Only workers of this namespace run the run's tasks (children inherit it)."""
    worker_pool: str | None = None
    """Only workers of this pool run the run's tasks; None: any worker of the namespace."""
    sticky: str | None = None
    phase: str = "Pending"
    result: Any = None
    error: dict[str, Any] | None = None
    finished_at: float | None = None
    workflow_task_id: str | None = None
    workflow_attempt: int = 0
    worker: str | None = None
    activities: dict[int, ActivityRecord] = field(default_factory=dict)
    sessions: dict[str, SessionRecord] = field(default_factory=dict)
    children: dict[int, ChildRecord] = field(default_factory=dict)
    timers: dict[int, TimerRecord] = field(default_factory=dict)
    steps: dict[int, Step] = field(default_factory=dict)
    """seq -> (command kind, name) of every recorded workflow step: the replay contract."""
    history: list[Event] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def workflow_session_id(self) -> str:
        return self.run_id + WORKFLOW_SESSION_SUFFIX

    @classmethod
    def replay(cls, events: Iterable[Event]) -> Run:
        """Rebuild a run from its history; the first event must be RunStarted."""
        it = iter(events)
        first = next(it, None)
        if first is None or first["type"] != "RunStarted":
            raise ValueError("a run history must start with RunStarted")
        run = cls.started(first)
        for ev in it:
            run.apply(ev)
        return run

    @classmethod
    def started(cls, ev: Event) -> Run:
        d = ev["data"]
        run = cls(
            run_id=d["run_id"],
            workflow=d["workflow"],
            input=d.get("input"),
            schedule_timeout=float(d.get("schedule_timeout", DEFAULT_SCHEDULE_TIMEOUT)),
            created_at=ev["time"],
            parent_run_id=d.get("parent_run_id"),
            parent_seq=d.get("parent_seq"),
            placement_worker=d.get("placement_worker"),
            namespace=d.get("namespace") or "",
            worker_pool=d.get("worker_pool"),
        )
        run.history.append(ev)
        return run

    def apply(self, ev: Event) -> None:
        """Fold one event into the state and append it to the history."""
        type_, data = ev["type"], ev["data"]
        handler = _HANDLERS.get(type_)
        if handler is None:
            raise ValueError(f"unknown history event type {type_!r}")
        handler(self, ev["time"], data)
        if type_ in STEP_OF_EVENT:  # most events record no step: skip the call
            step = recorded_step(type_, data)
            if step is not None:
                self.steps[data["seq"]] = step
        self.history.append(ev)

    # ------------------------------------------------------------------ handlers

    def _workflow_task_started(self, t: float, d: dict[str, Any]) -> None:
        self.workflow_task_id = d["task_id"]
        self.workflow_attempt = d["attempt"]
        self.worker = d["worker"]
        if self.phase == "Pending":
            self.phase = "Running"

    def _workflow_task_lost(self, t: float, d: dict[str, Any]) -> None:
        if self.workflow_task_id == d["task_id"]:
            self.workflow_task_id = None
            self.worker = None

    def _activity_scheduled(self, t: float, d: dict[str, Any]) -> None:
        seq = d["seq"]
        self.activities[seq] = ActivityRecord(
            seq=seq,
            name=d["activity"],
            args=d.get("args") or [],
            kwargs=d.get("kwargs") or {},
            options=d.get("options") or {},
            session_id=d.get("session_id"),
            scheduled_at=t,
        )

    def _activity_started(self, t: float, d: dict[str, Any]) -> None:
        rec = self.activities[d["seq"]]
        rec.state = "Running"
        rec.attempt = d["attempt"]
        rec.task_id = d["task_id"]
        rec.worker, rec.pod, rec.node = d["worker"], d.get("pod"), d.get("node")
        rec.cold_start = bool(d.get("cold_start"))
        rec.started_at = t
        rec.retry_at = None
        if rec.session_id is not None and rec.session_id in self.sessions:
            self.sessions[rec.session_id].cold = False

    def _activity_completed(self, t: float, d: dict[str, Any]) -> None:
        rec = self.activities[d["seq"]]
        rec.state = "Completed"
        rec.result = d.get("result")
        rec.error = None
        rec.finished_at = t
        rec.task_id = None

    def _activity_failed(self, t: float, d: dict[str, Any]) -> None:
        rec = self.activities[d["seq"]]
        rec.error = d["error"]
        rec.heartbeat_details = d.get("heartbeat_details")
        rec.task_id = None
        rec.retry_at = d.get("retry_at")
        if rec.retry_at is None:
            rec.state = "Failed"
            rec.finished_at = t
        else:
            rec.state = "Backoff"

    def _local_activity(self, t: float, d: dict[str, Any]) -> None:
        seq = d["seq"]
        ok = bool(d["ok"])
        self.activities[seq] = ActivityRecord(
            seq=seq,
            name=d["activity"],
            args=[],
            kwargs={},
            options={},
            session_id=None,
            scheduled_at=t,
            state="Completed" if ok else "Failed",
            attempt=int(d.get("attempts", 1)),
            local=True,
            worker=self.worker,
            started_at=t,
            finished_at=t,
            result=d.get("result"),
            error=d.get("error"),
        )

    def _session_opened(self, t: float, d: dict[str, Any]) -> None:
        sid = d["session_id"]
        self.sessions[sid] = SessionRecord(id=sid, strategy=d["strategy"], seq=d.get("seq", 0))
        if sid == self.workflow_session_id:
            self.sticky = d["strategy"]

    def _session_bound(self, t: float, d: dict[str, Any]) -> None:
        s = self.sessions[d["session_id"]]
        s.state = "Open"
        s.worker, s.pod, s.node = d["worker"], d.get("pod"), d.get("node")
        s.reason = s.message = None
        s.broken_at = None
        s.cold = True
        s.workers.append(d["worker"])
        s.end_binding(t, None)
        s.bindings.append(
            {
                "worker": s.worker,
                "pod": s.pod,
                "node": s.node,
                "bound_at": t,
                "ended_at": None,
                "reason": None,
            }
        )

    def _session_broken(self, t: float, d: dict[str, Any]) -> None:
        s = self.sessions[d["session_id"]]
        s.reason, s.message = d["reason"], d.get("message")
        if d.get("refined") and s.state == "Broken":
            # A more specific report about the same loss: the break keeps its time.
            if s.breaks:
                s.breaks[-1].update(reason=s.reason, message=s.message)
            if s.bindings:
                s.bindings[-1]["reason"] = s.reason
            return
        s.state = "Broken"
        s.broken_at = t
        s.breaks.append({"worker": s.worker, "reason": s.reason, "message": s.message, "time": t})
        s.end_binding(t, s.reason)

    def _session_closed(self, t: float, d: dict[str, Any]) -> None:
        s = self.sessions[d["session_id"]]
        s.state = "Closed"
        s.end_binding(t, None)

    def _child_started(self, t: float, d: dict[str, Any]) -> None:
        seq = d["seq"]
        self.children[seq] = ChildRecord(
            seq=seq, run_id=d["child_run_id"], workflow=d["workflow"], sticky=bool(d.get("sticky"))
        )

    def _child_completed(self, t: float, d: dict[str, Any]) -> None:
        c = self.children[d["seq"]]
        c.state, c.result = "Succeeded", d.get("result")

    def _child_failed(self, t: float, d: dict[str, Any]) -> None:
        c = self.children[d["seq"]]
        c.state, c.error = "Failed", d["error"]

    def _timer_started(self, t: float, d: dict[str, Any]) -> None:
        self.timers[d["seq"]] = TimerRecord(seq=d["seq"], fire_at=d["fire_at"])

    def _timer_fired(self, t: float, d: dict[str, Any]) -> None:
        self.timers[d["seq"]].fired = True

    def _run_completed(self, t: float, d: dict[str, Any]) -> None:
        self.phase, self.result, self.finished_at = "Succeeded", d.get("result"), t

    def _run_failed(self, t: float, d: dict[str, Any]) -> None:
        self.phase, self.error, self.finished_at = "Failed", d["error"], t

    def _run_cancelled(self, t: float, d: dict[str, Any]) -> None:
        self.phase, self.finished_at = "Cancelled", t
        self.error = {"type": "Cancelled", "reason": "Cancelled", "message": d.get("reason", "")}


_HANDLERS: dict[EventType, Callable[[Run, float, dict[str, Any]], None]] = {
    "WorkflowTaskStarted": Run._workflow_task_started,
    "WorkflowTaskLost": Run._workflow_task_lost,
    "ActivityScheduled": Run._activity_scheduled,
    "ActivityStarted": Run._activity_started,
    "ActivityCompleted": Run._activity_completed,
    "ActivityFailed": Run._activity_failed,
    "LocalActivityRecorded": Run._local_activity,
    "SessionOpened": Run._session_opened,
    "SessionBound": Run._session_bound,
    "SessionBroken": Run._session_broken,
    "SessionClosed": Run._session_closed,
    "ChildStarted": Run._child_started,
    "ChildCompleted": Run._child_completed,
    "ChildFailed": Run._child_failed,
    "TimerStarted": Run._timer_started,
    "TimerFired": Run._timer_fired,
    "RunCompleted": Run._run_completed,
    "RunFailed": Run._run_failed,
    "RunCancelled": Run._run_cancelled,
}
