"""WorkflowInstance: one run's workflow code executing on this worker, with replay.

Every workflow-side operation takes the next ``seq`` and becomes a command. When the
workflow task carries history, operations already recorded there resolve from it
without running again; a mismatch between the code and the history is a
``NonDeterminismError`` that fails the run.

The workflow code runs on the instance's own ``WorkflowLoop``, activated on the
worker's thread at the start and whenever an outcome arrives. Recorded outcomes are
delivered one by one in history order, each followed by an activation, exactly as
they arrived live; so a replay takes the same path, at the same workflow times.
Local activities are real work: they run on the worker's loop and hand their outcome
to the workflow loop when done.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from random import Random
from typing import TYPE_CHECKING, Any, NoReturn

from tether_types.wire import (
    nondeterminism,
    nondeterminism_error,
    recorded_step,
    workflow_retry_fields,
)

from . import workflow_guard
from .context import (
    ActivityContext,
    ActivityInfo,
    WorkflowInfo,
    current_activity,
    current_session,
    current_workflow,
)
from .errors import ActivityError, ChildWorkflowError, NonDeterminismError, TetherError
from .failures import backoff, error_from_dict, error_info, is_retryable, timeout_error
from .payloads import check_input, check_value, json_roundtrip
from .protocol import (
    ActivityOptions,
    ErrorInfo,
    HistoryEventModel,
    RetryDefaults,
    RetryPolicy,
    WorkflowTask,
)
from .schemas import bind_input
from .workflow import WorkflowDefinition
from .workflow_loop import WorkflowLoop

if TYPE_CHECKING:
    from .activities import ActivityDefinition
    from .sessions import StickyStrategy

CommandSink = Callable[["WorkflowInstance", dict[str, Any]], None]
"""Receives every command the instance emits, in order."""

Waiter = Callable[["Outcome"], None]
"""Takes the outcome of one ``seq`` (sets a future, or fires a timer)."""


@dataclass(slots=True)
class Outcome:
    """The result of a command: from a Resolution, or from history on replay."""

    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int | None = None
    time: float | None = None
    """When history recorded the outcome: the workflow clock moves to it (None: stays)."""


@dataclass(slots=True)
class Recorded:
    """What history says about one ``seq``: the command kind and name, and its outcome."""

    kind: str
    name: str | None
    outcome: Outcome | None = None


@dataclass(slots=True)
class ReplayHistory:
    """History folded into what replay needs."""

    commands: dict[int, Recorded]
    closed_sessions: set[str]
    outcome_order: list[tuple[int, float | None]]
    """The recorded outcomes as ``(seq, time)`` in history order. A local activity's time
    is None: its worker could not know when history would record it, so it does not move
    the workflow clock."""
    start_time: float | None
    """When the run's first workflow task started (else the run started): workflow time
    at the start."""


def fold_history(events: list[HistoryEventModel]) -> ReplayHistory:
    """Fold history events into per-seq records (see docs/internals.md, History events)."""
    commands: dict[int, Recorded] = {}
    closed: set[str] = set()
    order: list[tuple[int, float | None]] = []
    started_at: float | None = None
    run_started_at: float | None = None

    def outcome_for(seq: int, kind: str, outcome: Outcome, at: float | None) -> None:
        commands.setdefault(seq, Recorded(kind, None)).outcome = outcome
        if seq >= 0:
            order.append((seq, at))

    for event in events:
        d = event.data
        raw_seq = d.get("seq")
        seq = raw_seq if isinstance(raw_seq, int) else -1
        step = recorded_step(event.type, d)
        if step is not None:
            prior = commands.get(seq)
            commands[seq] = Recorded(*step, prior.outcome if prior else None)
        match event.type:
            case "ActivityCompleted":
                done = Outcome(True, d.get("result"), None, d.get("attempt"))
                outcome_for(seq, "schedule_activity", done, event.time)
            case "ActivityFailed" if d.get("retry_at") is None:
                failed = Outcome(False, None, error_from_dict(d.get("error")), d.get("attempt"))
                outcome_for(seq, "schedule_activity", failed, event.time)
            case "LocalActivityRecorded":
                ok = bool(d.get("ok"))
                local = Outcome(
                    ok,
                    d.get("result"),
                    None if ok else error_from_dict(d.get("error")),
                    d.get("attempts"),
                )
                outcome_for(seq, "record_local_activity", local, None)
            case "SessionClosed":
                closed.add(str(d.get("session_id")))
            case "ChildCompleted":
                outcome_for(seq, "start_child", Outcome(True, d.get("result")), event.time)
            case "ChildFailed":
                failed = Outcome(False, None, error_from_dict(d.get("error")))
                outcome_for(seq, "start_child", failed, event.time)
            case "TimerFired":
                outcome_for(seq, "start_timer", Outcome(True), event.time)
            case "WorkflowTaskStarted" if started_at is None:
                started_at = event.time
            case "RunStarted":
                run_started_at = event.time
    commands.pop(-1, None)
    start = started_at if started_at is not None else run_started_at
    return ReplayHistory(commands, closed, order, start)


class WorkflowInstance:
    """Runs one workflow task: the entrypoint coroutine plus its command bookkeeping."""

    def __init__(
        self,
        task: WorkflowTask,
        definition: WorkflowDefinition,
        sink: CommandSink,
        *,
        worker_id: str = "",
        pod: str = "",
        node: str = "",
        on_done: Callable[[WorkflowInstance], None] | None = None,
    ) -> None:
        self.task = task
        self.definition = definition
        self.run_id = task.run_id
        self.task_id = task.task_id
        self.outcomes_received = 0
        """Resolutions received for this workflow task (the scheduler checks the count)."""
        self.worker_id, self.pod, self.node = worker_id, pod, node
        self._sink = sink
        self._on_done = on_done
        replay = fold_history(task.history)
        self._recorded = replay.commands
        self._max_recorded = max(self._recorded, default=0)
        self._closed_sessions = replay.closed_sessions
        self._seq = 0
        self._pending: dict[int, Waiter] = {}
        self._early: dict[int, Outcome] = {}
        self._replay = deque(replay.outcome_order)
        self._default_session: str | None = None
        self._finished = False
        # typeshed marks every loop method abstract; the I/O ones are set from REFUSED.
        start = replay.start_time if replay.start_time is not None else time.time()  # no history
        self._loop = WorkflowLoop(start, self._start_durable_timer)  # type: ignore[abstract]
        self._host: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None
        self._local_runs: set[asyncio.Task[None]] = set()
        self._random: Random | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def finished(self) -> bool:
        """True once the instance sent its final command or was cancelled."""
        return self._finished

    def start(self) -> None:
        """Run the entrypoint on the workflow loop, replaying what history holds.

        Call it on the worker's event loop. It returns once the workflow code waits for
        an outcome that history does not hold yet (or has finished).
        """
        workflow_guard.install()
        self._host = asyncio.get_running_loop()
        ctx = contextvars.Context()
        ctx.run(current_workflow.set, self)
        self._main = self._loop.create_task(
            self._run(), name=f"workflow {self.run_id}", context=ctx
        )
        self._activate()

    def cancel(self) -> None:
        """Stop the workflow code; no further commands are sent.

        The cancellation runs through the workflow code at the worker loop's next turn.
        """
        self._finished = True
        for runner in list(self._local_runs):
            runner.cancel()
        if self._main is not None and not self._main.done():
            self._main.cancel()
            if self._host is not None and not self._host.is_closed():
                self._host.call_soon(self._activate)

    def entrypoint_call(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Map the run input to entrypoint arguments (``schemas.bind_input``).

        None: no arguments; a dict whose keys are all parameter names: keywords;
        anything else: one positional argument. Raises ``InvalidInputError`` when the
        input cannot be a call of the entrypoint.
        """
        bound = bind_input(
            self.definition.input_schema(),
            self.task.input,
            what=f"workflow {self.definition.name!r}",
        )
        return bound.args, bound.kwargs

    async def _run(self) -> None:
        try:
            args, kwargs = self.entrypoint_call()
            target = getattr(self.definition.cls(), self.definition.entrypoint)
            result = await target(*args, **kwargs)
            if not self._finished:
                try:
                    check_value(self.definition.name, "output", result)
                except TetherError as exc:
                    self._finish(
                        {
                            "type": "fail_workflow",
                            "seq": self._next_seq(),
                            "error": error_info(exc).model_dump(),
                        }
                    )
                else:
                    self._finish(
                        {"type": "complete_workflow", "seq": self._next_seq(), "result": result}
                    )
        except asyncio.CancelledError:
            self._finished = True
            raise
        except Exception as exc:
            if not self._finished:
                self._finish(
                    {
                        "type": "fail_workflow",
                        "seq": self._next_seq(),
                        "error": error_info(exc).model_dump(),
                    }
                )
        finally:
            self._finished = True
            self._pending.clear()
            # The run is over: stop its background tasks and local activities too.
            for task in asyncio.all_tasks(self._loop):
                if task is not self._main:
                    task.cancel()
            for runner in list(self._local_runs):
                runner.cancel()
            if self._on_done is not None:
                self._on_done(self)

    def _finish(self, command: dict[str, Any]) -> None:
        self._sink(self, command)
        self._finished = True

    # ------------------------------------------------------------------ resolutions

    def resolve(self, seq: int, outcome: Outcome, workflow_task_id: str | None = None) -> None:
        """Deliver a command's live outcome and run the workflow code it wakes.

        Ignored if meant for another workflow task, or once the instance finished.
        """
        if self._finished or (workflow_task_id is not None and workflow_task_id != self.task_id):
            return
        self.outcomes_received += 1
        self._loop.advance_to(outcome.time)
        self._deliver(seq, outcome)
        self._activate()

    def _deliver(self, seq: int, outcome: Outcome) -> None:
        waiter = self._pending.pop(seq, None)
        if waiter is not None:
            waiter(outcome)
        elif seq > self._seq:  # the code has not issued it yet
            self._early[seq] = outcome
        # else: nobody waits any more (a cancelled timer or operation)

    def _activate(self) -> None:
        """Run the workflow code until it waits; then feed it recorded outcomes, in order."""
        loop = self._loop
        if self._main is None or loop.is_running():
            return  # not started; or re-entered, and the running activation does the work
        loop.activate()
        while self._replay and not self._finished:
            seq, when = self._replay.popleft()
            rec = self._recorded.get(seq)
            if rec is None or rec.outcome is None:
                continue
            loop.advance_to(when)
            self._deliver(seq, rec.outcome)
            loop.activate()

    # ------------------------------------------------------------------ queries

    @property
    def session_id(self) -> str | None:
        """The innermost session scope's id, else the run's own session's."""
        return current_session.get() or self.task.session_id

    def info(self) -> WorkflowInfo:
        """``workflow.info()`` for this run."""
        return WorkflowInfo(
            run_id=self.run_id,
            workflow=self.definition.name,
            attempt=self.task.attempt,
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            session=self.session_id,
            is_replaying=self._seq < self._max_recorded,
            parent_run_id=self.task.parent_run_id,
            cold_start=not any(
                e.type == "WorkflowTaskStarted"
                and e.data.get("worker") == self.worker_id
                and e.data.get("task_id") != self.task.task_id
                for e in self.task.history
            ),
        )

    def now(self) -> datetime:
        """Workflow time as a UTC datetime: when history recorded the event that last
        woke the workflow (its first start, or an outcome it waited for)."""
        return datetime.fromtimestamp(self._loop.time(), UTC)

    @property
    def random(self) -> Random:
        """The run's random generator, seeded from the run id: replays draw the same."""
        if self._random is None:
            seed = hashlib.sha256(f"tether/{self.run_id}".encode()).digest()
            self._random = Random(int.from_bytes(seed[:16], "big"))
        return self._random

    def uuid4(self) -> uuid.UUID:
        """A version-4 UUID drawn from ``random``: replays get the same one."""
        return uuid.UUID(int=self.random.getrandbits(128), version=4)

    # ------------------------------------------------------------------ command plumbing

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _emit(self, command: dict[str, Any]) -> None:
        if not self._finished:
            self._sink(self, command)

    def _replayed(self, seq: int, kind: str, name: str | None) -> Recorded | None:
        rec = self._recorded.get(seq)
        if rec is None:
            return None
        # A step named on one side only (a close) is compared by kind.
        issued = (kind, rec.name if name is None or rec.name is None else name)
        message = nondeterminism(self.definition.name, seq, (rec.kind, rec.name), issued)  # type: ignore[arg-type]
        if message is not None:
            self._fail_nondeterministic(seq, message)
        return rec

    def _fail_nondeterministic(self, seq: int, message: str) -> NoReturn:
        if not self._finished:
            self._finish(
                {
                    "type": "fail_workflow",
                    "seq": seq,
                    "error": {**nondeterminism_error(message), "traceback": None},
                }
            )
            if self._main is not None:
                asyncio.get_running_loop().call_soon(self._main.cancel)
        raise NonDeterminismError(message)

    async def _command(
        self, seq: int, kind: str, name: str | None, command: dict[str, Any]
    ) -> Outcome:
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        self._expect(seq, kind, name, command, functools.partial(_set_outcome, fut))
        return await fut

    def _expect(
        self, seq: int, kind: str, name: str | None, command: dict[str, Any] | None, waiter: Waiter
    ) -> bool:
        """Wait for ``seq``'s outcome: from history in its turn, or live after ``command``.

        Returns True when the outcome must come live (history has none), after sending
        ``command`` if given; a command recorded without an outcome is sent again (the
        engine keeps the first).
        """
        rec = self._replayed(seq, kind, name)
        early = self._early.pop(seq, None)
        if early is not None:
            waiter(early)
            return False
        self._pending[seq] = waiter
        if rec is not None and rec.outcome is not None:
            return False
        if command is not None:
            self._emit(command)
        return True

    def _start_durable_timer(self, delay: float, handle: asyncio.TimerHandle) -> None:
        # The workflow loop's call_later/call_at: asyncio.sleep, asyncio.timeout, wait_for.
        seq = self._next_seq()
        self._expect(
            seq,
            "start_timer",
            None,
            {"type": "start_timer", "seq": seq, "seconds": delay},
            lambda _outcome: self._loop.fire(handle),
        )

    # ------------------------------------------------------------------ operations

    async def schedule_activity(
        self, defn: ActivityDefinition[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``defn`` as a remote activity and return its result (ActivityError on failure)."""
        check_input(defn.name, args, kwargs)
        session_id = self.session_id
        if session_id is None and defn.options.sticky_to_worker:
            session_id = self._open_default_session()
        seq = self._next_seq()
        outcome = await self._command(
            seq,
            "schedule_activity",
            defn.name,
            {
                "type": "schedule_activity",
                "seq": seq,
                "activity": defn.name,
                "args": list(args),
                "kwargs": kwargs,
                "options": defn.options_payload(),
                "session_id": session_id,
            },
        )
        return _activity_result(defn.name, outcome)

    async def run_local_activity(
        self, defn: ActivityDefinition[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``defn`` here with its retry policy and timeout; record the outcome.

        The attempts are real work, not workflow code: they run on the worker's event
        loop, and their outcome wakes the workflow when they are done. A replay takes
        the recorded outcome instead.
        """
        seq = self._next_seq()
        fut: asyncio.Future[Outcome] = self._loop.create_future()
        live = self._expect(
            seq, "record_local_activity", defn.name, None, functools.partial(_set_outcome, fut)
        )
        if live:
            check_input(defn.name, args, kwargs)
            assert self._host is not None
            ctx = contextvars.copy_context()
            ctx.run(current_workflow.set, None)  # activity code, not workflow code
            runner = self._host.create_task(
                self._local_activity(defn, args, kwargs, seq),
                name=f"local activity {defn.name} of {self.run_id}",
                context=ctx,
            )
            self._local_runs.add(runner)
            runner.add_done_callback(self._local_runs.discard)
            fut.add_done_callback(lambda f: runner.cancel() if f.cancelled() else None)
        return _activity_result(defn.name, await fut)

    async def _local_activity(
        self,
        defn: ActivityDefinition[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
    ) -> None:
        # Runs on the worker's loop; hands the outcome to the workflow loop.
        outcome = await self._local_attempts(defn, args, kwargs, seq)
        if not self._finished:
            self._deliver(seq, outcome)
            self._activate()

    async def _local_attempts(
        self,
        defn: ActivityDefinition[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
    ) -> Outcome:
        policy = local_retry_policy(defn.options, self.task.retry_defaults)
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._local_attempt(defn, args, kwargs, seq, attempt)
                check_value(defn.name, "output", result)
                result = json_roundtrip(result)
            except _StartToCloseExpired:
                error = timeout_error(defn.name, defn.options.start_to_close_timeout or 0.0)
            except Exception as exc:
                error = error_info(exc)
                if isinstance(exc, TetherError) and "Payload" in type(exc).__name__:
                    error.non_retryable = True
            else:
                self._emit(
                    {
                        "type": "record_local_activity",
                        "seq": seq,
                        "activity": defn.name,
                        "attempts": attempt,
                        "ok": True,
                        "result": result,
                        "error": None,
                    }
                )
                return Outcome(True, result, attempts=attempt)
            if attempt >= policy.max_attempts or not is_retryable(error, policy):
                self._emit(
                    {
                        "type": "record_local_activity",
                        "seq": seq,
                        "activity": defn.name,
                        "attempts": attempt,
                        "ok": False,
                        "result": None,
                        "error": error.model_dump(),
                    }
                )
                return Outcome(False, error=error, attempts=attempt)
            await asyncio.sleep(backoff(policy, attempt))

    async def _local_attempt(
        self,
        defn: ActivityDefinition[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        seq: int,
        attempt: int,
    ) -> Any:
        info = ActivityInfo(
            run_id=self.run_id,
            workflow=self.definition.name,
            activity=defn.name,
            task_id=f"{self.run_id}/local/{seq}",
            attempt=attempt,
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            session=None,
            cold_start=False,
            local=True,
        )
        token = current_activity.set(ActivityContext(info))
        timeout = defn.options.start_to_close_timeout
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                if defn.is_async:
                    return await defn.fn(*args, **kwargs)
                if timeout is None:
                    return defn.fn(*args, **kwargs)
                call = functools.partial(contextvars.copy_context().run, defn.fn, *args, **kwargs)
                return await asyncio.get_running_loop().run_in_executor(None, call)
        except TimeoutError:
            if deadline.expired():  # ours; a TimeoutError of the activity's own is its error
                raise _StartToCloseExpired from None
            raise
        finally:
            current_activity.reset(token)

    def _open_default_session(self) -> str:
        if self._default_session is None:
            self._default_session = f"{self.run_id}/default"
            self._open(self._next_seq(), self._default_session, "SOFT")
        return self._default_session

    def _open(self, seq: int, session_id: str, strategy: str) -> None:
        if self._replayed(seq, "open_session", session_id) is None:
            self._emit(
                {"type": "open_session", "seq": seq, "session_id": session_id, "strategy": strategy}
            )

    def open_session(self, strategy: StickyStrategy) -> str:
        """Open an explicit session; its id is ``"{run_id}/s{seq}"``."""
        seq = self._next_seq()
        session_id = f"{self.run_id}/s{seq}"
        self._open(seq, session_id, str(strategy.value))
        return session_id

    def close_session(self, session_id: str) -> None:
        """Close a session opened by a ``run_sticky_worker_session`` scope (not awaited)."""
        if self._finished:
            return
        seq = self._next_seq()
        self._replayed(seq, "close_session", None)
        if session_id not in self._closed_sessions:
            self._closed_sessions.add(session_id)
            self._emit({"type": "close_session", "seq": seq, "session_id": session_id})

    async def start_child(
        self, workflow: str, input: Any, *, sticky: bool, session_id: str | None
    ) -> Any:
        """Start a child run and return its result (ChildWorkflowError on failure)."""
        check_value(workflow, "input", input)
        seq = self._next_seq()
        outcome = await self._command(
            seq,
            "start_child",
            workflow,
            {
                "type": "start_child",
                "seq": seq,
                "workflow": workflow,
                "input": input,
                "sticky": sticky,
                "session_id": session_id,
            },
        )
        if outcome.ok:
            return outcome.result
        error = outcome.error or ErrorInfo(type="Error", message="child workflow failed")
        raise ChildWorkflowError(
            workflow, cause_type=error.type, message=error.message, reason=error.reason
        )

    async def start_timer(self, seconds: float) -> None:
        """Durable sleep."""
        seq = self._next_seq()
        await self._command(
            seq, "start_timer", None, {"type": "start_timer", "seq": seq, "seconds": seconds}
        )


class _StartToCloseExpired(Exception):
    """A local activity attempt ran past its start_to_close_timeout."""


def _activity_result(name: str, outcome: Outcome) -> Any:
    if outcome.ok:
        return outcome.result
    error = outcome.error or ErrorInfo(type="Error", message="activity failed")
    raise ActivityError(
        name,
        attempts=outcome.attempts if outcome.attempts is not None else error.attempts,
        cause_type=error.type,
        message=error.message,
        reason=error.reason,
    )


def _set_outcome(fut: asyncio.Future[Outcome], outcome: Outcome) -> None:
    if not fut.done():
        fut.set_result(outcome)


def local_retry_policy(options: ActivityOptions, defaults: RetryDefaults | None) -> RetryPolicy:
    """The retry policy of a local activity: the fields its code set, the workflow's
    `defaults` for the others (as the scheduler does for remote activities)."""
    given = defaults.model_dump(exclude_none=True) if defaults is not None else None
    taken = workflow_retry_fields(options.retry_set, given)
    return options.retry.model_copy(update=taken) if taken else options.retry
