"""The scheduler service: one engine, its effects carried out, its deadlines kept.

Every engine call goes through `_apply`, which executes the returned effects in
order: `Deliver` puts a task in the worker's mailbox (waking its long-poll),
`Persist` hands history to the background `HistoryWriter`, `RunEnded` wakes
`wait_run` callers, `Notice` goes to the `tether.scheduler` logger and to any
subscribers. After each call the deadline timer is re-armed if the engine's next
deadline moved earlier.

With a durable store (`HistoryStore.durable`), nothing leaves before the history behind
it is in the store: a `Deliver` waits in its run's queue until the run's history
recorded before it is written (deliveries of one run keep their order; one for a
run with nothing unwritten goes out at once), and the HTTP layer awaits
`written(run_ids)` before it acknowledges a report, a completion, a run start or a
cancel. Each run's writes are grouped and independent of other runs', so the wait is
one store round trip per burst, per run. With the in-memory store both are skipped.

The service is transport-agnostic: the FastAPI app (`app.py`) and the in-process
test environment (`worker_runtime.testing`) both drive it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from functools import partial
from typing import Any, TypedDict, assert_never

from tether_operator.engine import (
    TERMINAL_PHASES,
    Demand,
    Engine,
    EngineConfig,
    EngineError,
    RunNotFound,
    WorkerReplaced,
)
from tether_operator.engine.effects import Deliver, Effect, Persist, RunEnded, WorkerGone
from tether_operator.metrics import EngineCollector, Metrics, StoreCollector
from tether_operator.scheduler.auth import Forbidden
from tether_operator.scheduler.history_writer import HistoryWriter
from tether_operator.scheduler.inputs import InputCatalog
from tether_operator.scheduler.mailboxes import Mailbox
from tether_operator.scheduler.run_starter import RunStarter
from tether_operator.scheduler.schedules import ScheduleBook
from tether_operator.scheduler.timers import DeadlineTimer
from tether_operator.store import HistoryStore, fill_namespace
from tether_operator.store.memory import MemoryStore
from tether_types.commands import command_from_wire
from tether_types.notices import Notice
from tether_types.views import RunViewData, WorkerFacts
from worker_runtime.protocol import (
    ActivityCompletion,
    ActivityHeartbeat,
    RegisterWorkerRequest,
    ReportRequest,
    StartRunRequest,
    WorkerHeartbeat,
)

__all__ = [
    "NoticeSubscriber",
    "ReportResult",
    "SchedulerService",
    "tasks_of_report",
]

logger = logging.getLogger("tether.scheduler")

HISTORY_LINGER = 0.5
"""Seconds a durable run's history waits for more before its write starts, when nothing
waits for it: an activity's schedule then joins its completion in one commit. Nothing
acknowledged waits on a lingering event (what does, urges it), so a crash in this window
only runs an unacknowledged attempt again; an activity shorter than this costs one
write, a longer one two."""
FINISHED_KEPT = 256
"""How many forgotten runs' final views stay answerable: a client that waits for a run
gets its outcome even if the run left memory first, and memory stays bounded."""

NoticeSubscriber = Callable[[Notice], None]
"""Called with every engine `Notice` (dev mode prints them)."""


class ReportResult(TypedDict):
    """The `ReportResponse` shape, as plain data ready to be serialised."""

    cancelled: list[str]
    tasks: list[dict[str, Any]]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _task_of(effect: Deliver) -> str | None:
    """The task a delivery hands out (None for resolutions and cancels)."""
    message = effect.message
    return message["task_id"] if message["kind"] in ("activity", "workflow") else None


def _outcome_for(effect: Deliver) -> str | None:
    """The workflow task a resolution is for (None for anything else)."""
    message = effect.message
    return message["workflow_task_id"] if message["kind"] == "resolution" else None


def _tally(table: dict[str, dict[str, int]], worker_id: str, key: str, delta: int) -> None:
    counts = table.setdefault(worker_id, {})
    counts[key] = counts.get(key, 0) + delta
    if not counts[key]:
        del counts[key]


def run_of_task(task_id: str) -> str:
    """The run an activity task id (`{run_id}/{seq}/{attempt}`) belongs to."""
    return task_id.rsplit("/", 2)[0]


def runs_of_completions(req: ReportRequest) -> set[str]:
    """The runs whose activity completions a report carries: acknowledging those must
    wait for their history (a completion acknowledged is never run again), while a
    workflow task's commands are replayed the same after a crash and need no wait."""
    return {run_of_task(c.task_id) for c in req.completions}


def tasks_of_report(req: ReportRequest) -> list[str]:
    """Every task a report speaks for: completed, heartbeated, or whose workflow commands
    it carries."""
    return [
        *(c.task_id for c in req.completions),
        *(h.task_id for h in req.heartbeats),
        *(batch.workflow_task_id for batch in req.workflows),
    ]


class SchedulerService:
    """Owns an `Engine` and executes its effects on an asyncio loop."""

    def __init__(
        self,
        engine_config: EngineConfig | None = None,
        store: HistoryStore | None = None,
        clock: Callable[[], float] = time.time,
        namespace: str = "default",
        scheduler_url: str = "",
    ) -> None:
        self.engine_config = engine_config or EngineConfig()
        self.engine = Engine(self.engine_config)
        self.store: HistoryStore = store if store is not None else MemoryStore()
        self.metrics = Metrics(workflow_of=self._workflow_of)
        """Counters and histograms fed by the history this scheduler writes, and gauges
        read from its engine (served by `tether_operator.metrics.serve_metrics`)."""
        self.metrics.registry.register(EngineCollector(self.engine))
        self.clock = clock
        self.namespace = namespace
        self.scheduler_url = scheduler_url
        self.durable = bool(self.store.durable)
        """Hold deliveries and acknowledgements until their history is written."""
        if self.durable:
            self.metrics.registry.register(StoreCollector(self.store))
        self._store_open = False
        self.history_writer = HistoryWriter(
            self.store,
            on_written=self._history_written if self.durable else None,
            # Dev mode's memory store commits nothing: timing it would cost the hot path.
            on_commit=partial(self.metrics.committed, self.store.kind) if self.durable else None,
            linger=HISTORY_LINGER if self.durable else 0.0,
        )
        self._held: dict[str, deque[tuple[int, int, Deliver]]] = {}
        """Deliveries waiting for their run's history: (mark, worker epoch, delivery)."""
        self._held_tasks: dict[str, dict[str, int]] = {}
        """Tasks held for each worker (they count as held by it: see `heartbeat`)."""
        self._held_outcomes: dict[str, dict[str, int]] = {}
        """Resolutions held for each worker, by workflow task (they count as received)."""
        self._epochs: dict[str, int] = {}
        """How often each worker was declared gone: a held delivery to an older epoch is void."""
        self.inputs = InputCatalog()
        self._finished: OrderedDict[str, RunViewData] = OrderedDict()
        """Final views of the latest runs forgotten (`forget_run`), oldest first."""
        self._mailboxes: dict[str, Mailbox] = {}
        self._incarnations: dict[str, str] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._subscribers: list[NoticeSubscriber] = []
        self._registration_listeners: list[Callable[[RegisterWorkerRequest], None]] = []
        self._starter: RunStarter | None = None
        self.schedules: ScheduleBook | None = None
        """Where `/v1/schedules` reads and acts (`use_schedules`); None: no schedules."""
        self._timer = DeadlineTimer(self._on_deadline, clock)
        self._started = False
        self._stopping = False
        self._incarnation = secrets.token_hex(4)
        """Tells this service's run ETags from another's (a new leader's, a restart's)."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    async def start(self) -> None:
        """Start the history writer and the deadline timer (idempotent)."""
        if self._started:
            return
        await self._open_store()
        self._started = True
        self._stopping = False
        self.history_writer.start()
        self._timer.start(asyncio.get_running_loop())
        self._timer.arm(self.engine.next_deadline())

    async def recover(self) -> list[str]:
        """Rebuild every run the store holds (after a scheduler restart); returns their ids."""
        await self._open_store()
        restored: list[str] = []
        for run_id in await self.store.run_ids():
            events = await self.store.load(run_id)
            if not events:
                continue
            fill_namespace(events, self.namespace)  # recorded before runs carried one
            try:
                self._apply(self.engine.restore(run_id, events, self.clock()))
            except EngineError as exc:
                logger.error("could not restore run %s: %s", run_id, exc)
                continue
            restored.append(run_id)
        return restored

    def begin_shutdown(self) -> None:
        """Release every long-poll and `wait_run` now; new polls return at once."""
        self._stopping = True
        for box in self._mailboxes.values():
            box.wake()
        for futures in self._waiters.values():
            for fut in futures:
                _wake(fut)

    async def stop(self, flush_timeout: float = 5.0) -> None:
        """Release waiters, stop the timer, and flush history to the store."""
        if not self._started:
            return
        self.begin_shutdown()
        self._timer.stop()
        await self.history_writer.stop(grace=flush_timeout)
        self._started = False
        if self._store_open:
            self._store_open = False
            await self.store.close()

    async def _open_store(self) -> None:
        if not self._store_open:
            await self.store.open()
            self._store_open = True

    async def flush(self) -> None:
        """Wait until every history event emitted so far is in the store."""
        await self.history_writer.flush()

    def subscribe(self, callback: NoticeSubscriber) -> Callable[[], None]:
        """Call `callback` with every Notice; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def on_registration(self, listener: Callable[[RegisterWorkerRequest], None]) -> None:
        """Call `listener` with every worker registration the engine accepted."""
        self._registration_listeners.append(listener)

    def use_schedules(self, book: ScheduleBook) -> None:
        """List, trigger, suspend and resume schedules through `book` (the API's
        `/v1/schedules`)."""
        self.schedules = book

    def use_run_starter(self, starter: RunStarter) -> None:
        """Start the runs clients ask for with `starter`, and find the runs the engine
        does not hold through it (the operator's WorkflowRuns)."""
        self._starter = starter

    # ------------------------------------------------------------------ effects

    def _apply(self, effects: list[Effect]) -> None:
        """Carry out the effects of one engine call, in order; then re-arm the timer."""
        for effect in effects:
            match effect:
                case Deliver():
                    if self.durable and effect.message["kind"] != "activity":
                        self._deliver_when_written(effect)
                    else:
                        # An activity attempt goes out before its schedule is written
                        # (speculatively): its completion is acknowledged only once the
                        # schedule, the start and the completion are written together.
                        self._deliver(effect.worker_id, effect.message)
                case Persist():
                    self.metrics.observe_soon(effect.run_id, effect.events)
                    self.history_writer.submit(effect.run_id, effect.events)
                case Notice():
                    self._notice(effect)
                case RunEnded():
                    for fut in self._waiters.pop(effect.run_id, ()):
                        _wake(fut)
                case WorkerGone():
                    # Tasks queued for a lost or draining worker are void: the engine
                    # re-queued them. Cancels stand: a draining worker still runs attempts.
                    self._epochs[effect.worker_id] = self._epochs.get(effect.worker_id, 0) + 1
                    gone = self._mailboxes.get(effect.worker_id)
                    if gone is not None:
                        gone.void_tasks()
                        gone.wake()
                case _:
                    assert_never(effect)
        self._timer.arm(self.engine.next_deadline())

    def _deliver(self, worker_id: str, message: dict[str, Any]) -> None:
        box = self._mailboxes.get(worker_id)
        if box is None:
            box = self._mailboxes[worker_id] = Mailbox()
        box.put(message)

    def _deliver_when_written(self, effect: Deliver) -> None:
        writer, run_id = self.history_writer, effect.run_id
        held = self._held.get(run_id)
        mark = writer.mark(run_id)
        if held is None and writer.written(run_id, mark):
            self._deliver(effect.worker_id, effect.message)
            return
        if held is None:
            held = self._held[run_id] = deque()
        writer.urge(run_id)
        held.append((mark, self._epochs.get(effect.worker_id, 0), effect))
        if (task_id := _task_of(effect)) is not None:
            _tally(self._held_tasks, effect.worker_id, task_id, 1)
        elif (wft := _outcome_for(effect)) is not None:
            _tally(self._held_outcomes, effect.worker_id, wft, 1)

    def _workflow_of(self, run_id: str) -> str | None:
        run = self.engine.runs.get(run_id)
        return None if run is None else run.workflow

    def _history_written(self, run_id: str, written: int) -> None:
        """The run's history is written up to mark `written`: release what waited for it."""
        held = self._held.get(run_id)
        if held is None:
            return
        while held and held[0][0] <= written:
            _, epoch, effect = held.popleft()
            if (task_id := _task_of(effect)) is not None:
                _tally(self._held_tasks, effect.worker_id, task_id, -1)
            elif (wft := _outcome_for(effect)) is not None:
                _tally(self._held_outcomes, effect.worker_id, wft, -1)
            if self._epochs.get(effect.worker_id, 0) == epoch or effect.message["kind"] == "cancel":
                self._deliver(effect.worker_id, effect.message)
        if not held:
            del self._held[run_id]

    def written(self, run_ids: Iterable[str]) -> Awaitable[object] | None:
        """What an answer that acknowledges a call about `run_ids` must await: every
        history event of those runs recorded so far being in the store. None when
        there is nothing to wait for (always, with a store that is not durable).

        Call it right after the call it acknowledges, with no `await` in between.
        """
        if not self.durable:
            return None
        writer = self.history_writer
        waits = [
            fut
            for run_id in run_ids
            if (fut := writer.wait_written(run_id, writer.mark(run_id))) is not None
        ]
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else asyncio.gather(*waits)

    @property
    def held_deliveries(self) -> int:
        """Deliveries waiting for their run's history to be written."""
        return sum(len(held) for held in self._held.values())

    def _notice(self, notice: Notice) -> None:
        level = logging.WARNING if notice.level == "Warning" else logging.INFO
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "%s%s: %s",
                f"{notice.run_id} " if notice.run_id else "",
                notice.reason,
                notice.message,
                extra={"run": notice.run_id},
            )
        for callback in tuple(self._subscribers):
            try:
                callback(notice)
            except Exception:
                logger.exception("notice subscriber %r failed", callback)

    def _on_deadline(self) -> None:
        try:
            self._apply(self.engine.advance(self.clock()))
        except Exception:
            # The timer must survive an engine bug: log it and keep going.
            logger.exception("engine.advance failed")
            self._timer.arm(self.clock() + 0.1)

    def advance(self) -> None:
        """Fire every deadline due at `clock()` now (tests with an injected clock)."""
        self._apply(self.engine.advance(self.clock()))

    @property
    def timer_armed_at(self) -> float | None:
        """The deadline the timer is armed for (None: nothing pending)."""
        return self._timer.armed_at

    # ------------------------------------------------------------------ workers

    def register_worker(self, req: RegisterWorkerRequest) -> dict[str, Any]:
        """Register (or re-register) a worker; returns a RegisterWorkerResponse dict.

        The worker serves runs of its `namespace` only (empty: the scheduler's own).
        Raises `InvalidSchema` (nothing registered) if an input schema is unusable.
        """
        if not req.namespace:
            req = req.model_copy(update={"namespace": self.namespace})
        self.inputs.check_registration(req)
        wid = req.worker_id
        box = self._mailboxes.get(wid)
        if box is not None and self._incarnations.get(wid) != req.incarnation:
            # Queued for a previous process (the engine re-queues them), and polls that
            # process left behind wait on this box: a new box, so they never take new work.
            box.clear()
            del self._mailboxes[wid]
            box.wake()
        self._apply(self.engine.register_worker(req.model_dump(), self.clock()))
        self.inputs.register(req)
        self._incarnations[wid] = req.incarnation
        self._mailboxes.setdefault(wid, Mailbox())
        for listener in tuple(self._registration_listeners):
            try:
                listener(req)
            except Exception:
                logger.exception("registration listener %r failed", listener)
        return {
            "worker_id": wid,
            "heartbeat_interval": self.engine_config.worker_heartbeat_interval,
            "namespace": self.namespace,
        }

    def heartbeat(self, worker_id: str, beat: WorkerHeartbeat | None = None) -> None:
        """Liveness, and the tasks the worker holds (those it lost are dispatched again);
        raises `UnknownWorker` if the worker must register again."""
        self._check_incarnation(worker_id, beat.incarnation if beat is not None else None)
        if beat is None or beat.tasks is None:
            self._apply(self.engine.worker_seen(worker_id, self.clock()))
            return
        held = set(beat.tasks)
        box = self._mailboxes.get(worker_id)
        if box is not None:
            held.update(box.task_ids())
        held.update(self._held_tasks.get(worker_id, ()))  # on their way, after their write
        received: dict[str, int] | None = None
        if beat.outcomes is not None:
            received = dict(beat.outcomes)
            waiting = [box.outcomes() if box is not None else {}]
            waiting.append(self._held_outcomes.get(worker_id, {}))
            for counts in waiting:
                for wft, n in counts.items():
                    if wft in received:
                        received[wft] += n
        self._apply(self.engine.worker_holds(worker_id, held, self.clock(), received))

    def _check_incarnation(self, worker_id: str, incarnation: str | None) -> None:
        current = self._incarnations.get(worker_id)
        if incarnation is not None and current is not None and incarnation != current:
            raise WorkerReplaced(
                f"worker {worker_id!r} was registered again by a newer process "
                f"(incarnation {current}, not {incarnation}); this process must stop",
                field="incarnation",
            )

    def worker_lost(self, worker_id: str, reason: str = "ProcessExited", message: str = "") -> None:
        """The worker's process or pod is gone: its sessions break now, not at timeout."""
        self._apply(self.engine.worker_lost(worker_id, reason, message, self.clock()))

    def worker_draining(
        self,
        worker_id: str,
        reason: str,
        message: str = "",
        *,
        incarnation: str | None = None,
        held: Collection[str] | None = None,
    ) -> None:
        """The worker is going away (its pod terminates, or its process got SIGTERM): its
        sessions break now, it gets no new task, and its running attempts go on there
        (their outcomes are accepted). Tasks still in its mailbox, or waiting for their
        history to be written, never reached it: they are dispatched again at once, as
        are those it was sent but does not list in `held` (the worker's own report).
        """
        self._check_incarnation(worker_id, incarnation)
        unstarted: set[str] = set()
        w = self.engine.workers.get(worker_id)
        if w is not None and w.alive:
            box = self._mailboxes.get(worker_id)
            if box is not None:
                unstarted.update(box.task_ids())
            unstarted.update(self._held_tasks.get(worker_id, ()))
            if held is not None:
                unstarted.update(t for t in (*w.running, *w.workflow_tasks) if t not in held)
        self._apply(
            self.engine.worker_draining(worker_id, reason, message, self.clock(), unstarted)
        )

    def workers(self) -> list[dict[str, Any]]:
        return self.engine.worker_views()

    def registered(self) -> dict[str, Any]:
        """Registered workflows and activities with their input schemas (a WorkflowList)."""
        views = self.engine.worker_views()
        return {
            "workflows": self.inputs.workflow_views(views),
            "activities": self.inputs.activity_views(views),
        }

    def queued(self, worker_id: str) -> int:
        """How many tasks wait in the worker's mailbox."""
        box = self._mailboxes.get(worker_id)
        return len(box) if box is not None else 0

    async def poll(
        self,
        worker_id: str,
        max_tasks: int,
        wait: float,
        *,
        incarnation: str | None = None,
        still_wanted: Callable[[], Awaitable[bool]] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to `max_tasks` tasks for the worker: at once if any are queued, else
        as soon as one arrives, or `[]` after `wait` seconds.

        A poll of a process that has since been replaced (another `incarnation`
        registered) never gets a task. `still_wanted` is asked after a wait (the HTTP
        layer checks the client is still connected): tasks taken for a caller that is
        gone go back to the front of the mailbox.
        """
        self._check_incarnation(worker_id, incarnation)
        self._apply(self.engine.worker_seen(worker_id, self.clock()))
        box = self._mailboxes.get(worker_id)
        if box is None:
            box = self._mailboxes[worker_id] = Mailbox()
        if len(box):
            return box.take(max_tasks)
        if wait <= 0 or self._stopping:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._stopping:
                return []
            await box.wait(remaining)
            if self._mailboxes.get(worker_id) is not box:
                return []
            if len(box):
                tasks = box.take(max_tasks)
                if still_wanted is not None and not await still_wanted():
                    if self._mailboxes.get(worker_id) is box:
                        box.put_back(tasks)
                    return []
                return tasks

    def report(self, worker_id: str, req: ReportRequest, *, piggyback: bool = True) -> ReportResult:
        """Apply completions, heartbeats and workflow commands, then piggyback tasks
        (unless `piggyback` is False: the caller takes them later with `take_tasks`).

        Every item is applied even if an earlier one is rejected; the first rejection
        is raised afterwards (queued tasks stay in the mailbox for the next poll).
        """
        now = self.clock()
        engine = self.engine
        self._apply(engine.worker_seen(worker_id, now))
        first_error: EngineError | None = None
        for completion in req.completions:
            try:
                self._complete(worker_id, completion, now)
            except EngineError as exc:
                first_error = first_error or exc
        cancelled: list[str] = []
        for hb in req.heartbeats:
            try:
                alive, effects = engine.activity_heartbeat(worker_id, hb.task_id, hb.details, now)
            except EngineError as exc:
                first_error = first_error or exc
                continue
            self._apply(effects)
            if not alive:
                cancelled.append(hb.task_id)
        for batch in req.workflows:
            try:
                self._apply(
                    engine.workflow_commands(
                        worker_id,
                        batch.run_id,
                        batch.workflow_task_id,
                        [command_from_wire(command.model_dump()) for command in batch.commands],
                        now,
                    )
                )
            except EngineError as exc:
                logger.warning(
                    "rejected commands of run %s from %s: %s", batch.run_id, worker_id, exc
                )
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        tasks = self.take_tasks(worker_id, req.max_tasks) if piggyback else []
        return {"cancelled": cancelled, "tasks": tasks}

    def check_assigned(self, worker_id: str, task_ids: Iterable[str]) -> None:
        """Raise `Forbidden` if a task in `task_ids` is dispatched to another worker.

        Called before anything of the request is applied, so a refused report changes
        nothing. A task that is unknown or ended is left to the engine (it ignores it).
        """
        for task_id in task_ids:
            holder = self.engine.task_worker(task_id)
            if holder is not None and holder != worker_id:
                raise Forbidden(
                    f"task {task_id!r} was dispatched to worker {holder!r}, not to "
                    f"{worker_id!r}: a worker may only report the tasks it was sent",
                    field="task_id",
                )

    def take_tasks(self, worker_id: str, max_tasks: int) -> list[dict[str, Any]]:
        """Up to `max_tasks` tasks waiting in the worker's mailbox, at once (no wait)."""
        box = self._mailboxes.get(worker_id)
        if not max_tasks or box is None or not len(box):
            return []
        return box.take(max_tasks)

    def _complete(self, worker_id: str, completion: ActivityCompletion, now: float) -> None:
        if completion.ok:
            effects = self.engine.activity_completed(
                worker_id, completion.task_id, completion.result, now
            )
        else:
            error = (
                completion.error.model_dump()
                if completion.error is not None
                else {"type": "ActivityError", "message": "the activity failed without an error"}
            )
            effects = self.engine.activity_failed(worker_id, completion.task_id, error, now)
        self._apply(effects)

    def complete_task(self, worker_id: str, completion: ActivityCompletion) -> ReportResult:
        """Single-shot completion (`POST /v1/tasks/{id}/complete`)."""
        return self.report(worker_id, ReportRequest(completions=[completion]))

    def heartbeat_task(self, worker_id: str, heartbeat: ActivityHeartbeat) -> ReportResult:
        """Single-shot activity heartbeat (`POST /v1/tasks/{id}/heartbeat`)."""
        return self.report(worker_id, ReportRequest(heartbeats=[heartbeat]))

    # ------------------------------------------------------------------ runs

    def start_run(self, req: StartRunRequest, namespace: str | None = None) -> RunViewData:
        """Start a run in `namespace` (None: the scheduler's own), whose workers alone
        run it; returns its RunView. Raises `RunAlreadyExists` for a taken id, and
        `InvalidInput` (naming the field) for an input its workflow cannot take."""
        namespace = namespace or self.namespace
        self.inputs.check_input(req.workflow, req.input, namespace)
        fields = req.model_dump()
        fields["namespace"] = namespace
        run_id, effects = self.engine.start_run(fields, self.clock())
        self._apply(effects)
        return self.engine.run_view(run_id)

    def get_run(self, run_id: str) -> RunViewData:
        """The run's view: a live run's, or a forgotten run's final one (`forget_run`)."""
        try:
            return self.engine.run_view(run_id)
        except RunNotFound:
            view = self._finished.get(run_id)
            if view is None:
                raise
            return view

    def list_runs(self) -> list[RunViewData]:
        return self.engine.list_runs()

    def _holds(self, run_id: str) -> bool:
        return run_id in self.engine.runs or run_id in self._finished

    def run_version(self, run_id: str) -> str | None:
        """An ETag for the view of a run the engine holds, without building the view (it
        changes whenever the view does, and with every new service); None for others."""
        if run_id not in self.engine.runs:
            return None
        return f'"{self._incarnation}.{self.engine.run_version(run_id)}"'

    async def find_run(self, run_id: str) -> RunViewData:
        """`get_run` for the HTTP API, and a run the engine does not hold from the run
        starter (on Kubernetes: one waiting for its workflow, refused, or forgotten,
        from its WorkflowRun, as kubectl shows it)."""
        if self._holds(run_id) or self._starter is None:
            return self.get_run(run_id)
        view = await self._starter.view(run_id)
        if view is None:
            return self.get_run(run_id)  # RunNotFound
        return view

    async def find_runs(self) -> list[RunViewData]:
        """`list_runs` for the HTTP API, with the forgotten runs and the run starter's."""
        held = self.list_runs()
        if self._starter is None:
            return held
        known = {v["run_id"] for v in held} | set(self._finished)
        finished = [v for r, v in self._finished.items() if r not in self.engine.runs]
        others = [v for v in await self._starter.views() if v["run_id"] not in known]
        return sorted([*held, *finished, *others], key=lambda v: v["created_at"])

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return self.engine.history(run_id)

    async def stored_history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history: from memory, or from the store for a forgotten run."""
        try:
            return self.engine.history(run_id)
        except RunNotFound:
            if run_id not in self._finished:
                raise
        return await self._read_stored(run_id)

    async def _read_stored(self, run_id: str) -> list[dict[str, Any]]:
        """The history of a run the engine does not hold, read from the store; the read
        keeps nothing of it in memory (unless the engine took the run meanwhile)."""
        events = await self.store.load(run_id)
        if run_id not in self.engine.runs:
            self.store.forget(run_id)
        return events

    async def stored_result(self, run_id: str) -> Any:
        """The result of succeeded run `run_id`: from memory, or from its history in the
        store (a result too large for its status, of a run the engine no longer holds)."""
        if self._holds(run_id):
            return self.get_run(run_id).get("result")
        for ev in reversed(await self._read_stored(run_id)):
            if ev["type"] == "RunCompleted":
                return ev["data"].get("result")
        raise RunNotFound(f"run {run_id} has no stored result", field="run_id")

    async def start_requested_run(
        self, req: StartRunRequest, namespace: str | None = None
    ) -> RunViewData:
        """Start the run a client asked for (`POST /v1/runs`) in `namespace` (None: the
        scheduler's own); its view once its first history is stored. With a run
        starter, the starter starts it (on Kubernetes the run id names its namespace)."""
        if self._starter is not None:
            return await self._starter.start(req)
        view = self.start_run(req, namespace)
        if (written := self.written([view["run_id"]])) is not None:
            await written
        return view

    def cancel_run(self, run_id: str) -> RunViewData:
        self._apply(self.engine.cancel_run(run_id, self.clock()))
        return self.engine.run_view(run_id)

    def forget_run(self, run_id: str) -> None:
        """Drop a terminal run from memory (`Engine.forget`). Its final view stays
        answerable (get, wait) while it is among the latest `FINISHED_KEPT` forgotten."""
        view = self.engine.run_view(run_id)
        self.engine.forget(run_id)
        self._finished[run_id] = view
        self._finished.move_to_end(run_id)
        while len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)

    def discard_finished(self, run_id: str) -> None:
        """Forget the final view `forget_run` kept (the run's object was deleted)."""
        self._finished.pop(run_id, None)

    def holds_run(self, run_id: str) -> bool:
        """True if the engine holds run `run_id` (running, or ended and not forgotten)."""
        return run_id in self.engine.runs

    def worker(self, worker_id: str) -> WorkerFacts | None:
        """What the engine knows of worker `worker_id` (None: never registered)."""
        return self.engine.worker_facts(worker_id)

    def worker_facts(self) -> list[WorkerFacts]:
        """Every worker the engine knows, lost ones included."""
        return [w.facts() for w in self.engine.workers.values()]

    def demand(self) -> dict[str, Demand]:
        """Per worker pool: work waiting for a worker, and each live worker's load."""
        return self.engine.demand()

    def require_registered(self, workflow: str, namespace: str) -> None:
        """Raise WorkflowNotFound unless a worker of `namespace` registered `workflow`."""
        self.engine.require_registered(workflow, namespace)

    def set_retry_defaults(
        self, namespace: str, workflow: str, policy: Mapping[str, Any] | None
    ) -> None:
        """The retry fields `workflow`'s activities take where their code sets none."""
        self.engine.set_retry_defaults(namespace, workflow, policy)

    def is_terminal(self, run_id: str) -> bool:
        return self.engine.is_terminal(run_id)

    async def wait_run(self, run_id: str, timeout: float) -> RunViewData:  # noqa: ASYNC109
        """The run's view once it is terminal, or its current view after `timeout` s.

        A run only the run starter knows (waiting for its workflow) is looked at every
        half second until it starts (then waited on as any other), ends, or `timeout`
        passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._holds(run_id) and self._starter is not None:
            view = await self._starter.view(run_id)
            if view is None:
                break  # RunNotFound below
            remaining = deadline - loop.time()
            if view["phase"] in TERMINAL_PHASES or remaining <= 0:
                return view
            await asyncio.sleep(min(0.5, remaining))
        timeout = max(0.0, deadline - loop.time())
        if run_id in self._finished and run_id not in self.engine.runs:
            return self._finished[run_id]
        if self.engine.is_terminal(run_id) or timeout <= 0 or self._stopping:
            return self.engine.run_view(run_id)
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._waiters.setdefault(run_id, [])
        waiters.append(fut)
        handle = loop.call_later(timeout, _wake, fut)
        try:
            await fut
        finally:
            handle.cancel()
            current = self._waiters.get(run_id)
            if current is not None and fut in current:
                current.remove(fut)
                if not current:
                    del self._waiters[run_id]
        return self.get_run(run_id)
