"""What the engine asks its host to do, and how one call collects it. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from tether_types.notices import Notice, NoticeReason, RunLoss, RunStarted, WorkerLost
from tether_types.wire import EventType, LossReason, TaskMessage

from .runs import Event, Run, event


@dataclass(frozen=True, slots=True)
class Deliver:
    """Send `message` (a protocol Task dict with a `kind` key) about run `run_id` to a
    worker. A host with a durable store sends it only once the run's history recorded
    before it is written."""

    worker_id: str
    message: dict[str, Any]
    run_id: str


@dataclass(frozen=True, slots=True)
class Persist:
    """Append these history events to the run's durable record."""

    run_id: str
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RunEnded:
    """The run reached a terminal phase."""

    run_id: str


@dataclass(frozen=True, slots=True)
class WorkerGone:
    """The engine declared the worker lost or draining: the tasks queued for it are void
    (cancels are not: a draining worker still runs the attempts they cancel)."""

    worker_id: str
    reason: LossReason


Effect = Deliver | Persist | RunEnded | Notice | WorkerGone


class Outbox:
    """Collects the effects of one public engine call; `now` is that call's time.

    History events are folded into their run as they are recorded and leave as one
    `Persist` per run, ahead of the other effects.
    """

    __slots__ = ("_events", "_fx", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._fx: list[Effect] = []
        self._events: dict[str, list[Event]] = {}

    def begin(self, now: float) -> None:
        """Start collecting for a call made at `now`."""
        self.now = now
        self._fx = []
        self._events = {}

    def record(self, run: Run, type_: EventType, **data: Any) -> None:
        """Append a history event to `run`: fold it into the run's state and persist it."""
        ev = event(type_, self.now, **data)
        run.apply(ev)
        self._events.setdefault(run.run_id, []).append(ev)

    def persist(self, run_id: str, ev: Event) -> None:
        """Persist an event already folded into its run (a run's RunStarted)."""
        self._events.setdefault(run_id, []).append(ev)

    def deliver(self, worker_id: str, run_id: str, message: TaskMessage) -> None:
        """Send a task, resolution or cancel message about run `run_id` to a worker."""
        # A TypedDict is a plain dict at runtime: no copy.
        self._fx.append(Deliver(worker_id, cast("dict[str, Any]", message), run_id))

    def notice(self, run_id: str | None, level: str, reason: NoticeReason, message: str) -> None:
        """Tell a person: `level` is "Warning" or anything else for "Normal"."""
        self._fx.append(
            Notice(run_id, "Warning" if level == "Warning" else "Normal", reason, message)
        )

    def run_started(self, run_id: str, workflow: str, parent_run_id: str | None) -> None:
        """Tell a person (and the host's store) that a run started, naming its parent."""
        self._fx.append(
            RunStarted(
                run_id,
                "Normal",
                "RunStarted",
                f"run {run_id} of {workflow} started",
                parent_run_id=parent_run_id,
            )
        )

    def worker_lost(
        self,
        worker_id: str,
        loss: LossReason | Literal["SchedulerRestarted"],
        message: str,
        runs: dict[str, RunLoss],
    ) -> None:
        """Tell a person a worker is lost, with what that did to each run."""
        self._fx.append(
            WorkerLost(
                None,
                "Warning",
                "WorkerLost",
                message,
                worker_id=worker_id,
                loss=loss,
                runs=tuple(runs[rid] for rid in sorted(runs)),
            )
        )

    def emit(self, effect: RunEnded | WorkerGone) -> None:
        """Add an effect that needs no history of its own."""
        self._fx.append(effect)

    def drain(self) -> list[Effect]:
        """The collected effects, persisted history first; the outbox is empty after."""
        persisted: list[Effect] = [Persist(rid, evs) for rid, evs in self._events.items()]
        fx = persisted + self._fx
        self._fx = []
        self._events = {}
        return fx
