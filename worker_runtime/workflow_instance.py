"""WorkflowInstance: one run's workflow code executing on this worker, with replay.

Every workflow-side operation takes the next ``seq`` and becomes a command. When the
workflow task carries history, operations already recorded there resolve from it
without running again; a mismatch between the code and the history is a
``NonDeterminismError`` that fails the run.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from .context import (
    ActivityContext,
    ActivityInfo,
    current_activity,
    current_session,
    current_workflow,
)
from .errors import ActivityError, ChildWorkflowError, NonDeterminismError, TetherError
from .failures import backoff, error_from_dict, error_info, is_retryable, timeout_error
from .payloads import check_input, check_value, json_roundtrip
from .protocol import ErrorInfo, HistoryEventModel, WorkflowTask
from .wire import nondeterminism_message, recorded_step
from .workflow import WorkflowDefinition, WorkflowInfo

if TYPE_CHECKING:
    from .activities import ActivityDefinition
    from .sessions import StickyStrategy

CommandSink = Callable[["WorkflowInstance", dict[str, Any]], None]
"""Receives every command the instance emits, in order."""


@dataclass(slots=True)
class Outcome:
    """The result of a command: from a Resolution, or from history on replay."""

    ok: bool
    result: Any = None
    error: ErrorInfo | None = None
    attempts: int | None = None


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
    task_started_at: float | None


def fold_history(events: list[HistoryEventModel], task_id: str | None = None) -> ReplayHistory:
    """Fold history events into per-seq records (see docs/internals.md, History events)."""
    commands: dict[int, Recorded] = {}
    closed: set[str] = set()
    started_at: float | None = None

    def outcome_for(seq: int, kind: str, outcome: Outcome) -> None:
        commands.setdefault(seq, Recorded(kind, None)).outcome = outcome

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
                outcome_for(seq, "schedule_activity", done)
            case "ActivityFailed" if d.get("retry_at") is None:
                failed = Outcome(False, None, error_from_dict(d.get("error")), d.get("attempt"))
                outcome_for(seq, "schedule_activity", failed)
            case "LocalActivityRecorded":
                ok = bool(d.get("ok"))
                local = Outcome(
                    ok,
                    d.get("result"),
                    None if ok else error_from_dict(d.get("error")),
                    d.get("attempts"),
                )
                outcome_for(seq, "record_local_activity", local)
            case "SessionClosed":
                closed.add(str(d.get("session_id")))
            case "ChildCompleted":
                outcome_for(seq, "start_child", Outcome(True, d.get("result")))
            case "ChildFailed":
                outcome_for(
                    seq, "start_child", Outcome(False, None, error_from_dict(d.get("error")))
                )
            case "TimerFired":
                outcome_for(seq, "start_timer", Outcome(True))
            case "WorkflowTaskStarted" if task_id is None or d.get("task_id") == task_id:
                started_at = event.time
    commands.pop(-1, None)
    return ReplayHistory(commands, closed, started_at)


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
        self.worker_id, self.pod, self.node = worker_id, pod, node
        self._sink = sink
        self._on_done = on_done
        replay = fold_history(task.history, task.task_id)
        self._recorded = replay.commands
        self._max_recorded = max(self._recorded, default=0)
        self._closed_sessions = replay.closed_sessions
        self._started_at = replay.task_started_at or time.time()
        self._seq = 0
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._early: dict[int, Outcome] = {}
        self._default_session: str | None = None
        self._finished = False
        self._main: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def finished(self) -> bool:
        """True once the instance sent its final command or was cancelled."""
        return self._finished

    def start(self) -> asyncio.Task[None]:
        """Run the entrypoint in a fresh context with this instance as the current workflow."""
        ctx = contextvars.Context()
        ctx.run(current_workflow.set, self)
        self._main = asyncio.get_running_loop().create_task(
            self._run(), name=f"workflow {self.run_id}", context=ctx
        )
        return self._main

    def cancel(self) -> None:
        """Stop the workflow code; no further commands are sent."""
        self._finished = True
        if self._main is not None:
            self._main.cancel()

    def entrypoint_call(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Map the run input to entrypoint arguments.

        None: no arguments; a dict whose keys are all parameter names: keywords;
        anything else: one positional argument.
        """
        value = self.task.input
        params = self.definition.parameters
        if value is None:
            return (), {}
        if isinstance(value, dict) and (value or not params) and all(k in params for k in value):
            return (), dict(value)
        return (value,), {}

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
            for fut in self._pending.values():
                fut.cancel()
            self._pending.clear()
            if self._on_done is not None:
                self._on_done(self)

    def _finish(self, command: dict[str, Any]) -> None:
        self._sink(self, command)
        self._finished = True

    # ------------------------------------------------------------------ resolutions

    def resolve(self, seq: int, outcome: Outcome, workflow_task_id: str | None = None) -> None:
        """Deliver a command's outcome (ignored if meant for another workflow task)."""
        if workflow_task_id is not None and workflow_task_id != self.task_id:
            return
        fut = self._pending.pop(seq, None)
        if fut is None:
            self._early[seq] = outcome
        elif not fut.done():
            fut.set_result(outcome)

    # ------------------------------------------------------------------ queries

    def info(self) -> WorkflowInfo:
        """``workflow.info()`` for this run."""
        return WorkflowInfo(
            run_id=self.run_id,
            workflow=self.definition.name,
            attempt=self.task.attempt,
            worker_id=self.worker_id,
            pod=self.pod,
            node=self.node,
            session=current_session.get() or self.task.session_id,
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
        """Start time of this workflow task, as a UTC datetime."""
        return datetime.fromtimestamp(self._started_at, UTC)

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
        if rec.kind != kind or (rec.name is not None and name is not None and rec.name != name):
            self._nondeterminism(seq, _describe(rec.kind, rec.name), _describe(kind, name))
        return rec

    def _nondeterminism(self, seq: int, expected: str, got: str) -> NoReturn:
        message = nondeterminism_message(self.definition.name, seq, expected, got)
        if not self._finished:
            self._finish(
                {
                    "type": "fail_workflow",
                    "seq": seq,
                    "error": {
                        "type": "NonDeterminismError",
                        "message": message,
                        "reason": "NonDeterminism",
                        "non_retryable": True,
                        "traceback": None,
                    },
                }
            )
            if self._main is not None:
                asyncio.get_running_loop().call_soon(self._main.cancel)
        raise NonDeterminismError(message)

    async def _command(
        self, seq: int, kind: str, name: str | None, command: dict[str, Any]
    ) -> Outcome:
        rec = self._replayed(seq, kind, name)
        if rec is not None and rec.outcome is not None:
            return rec.outcome
        early = self._early.pop(seq, None)
        if early is not None:
            return early
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        self._emit(command)
        return await fut

    # ------------------------------------------------------------------ operations

    async def schedule_activity(
        self, defn: ActivityDefinition[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run ``defn`` as a remote activity and return its result (ActivityError on failure)."""
        check_input(defn.name, args, kwargs)
        session_id = current_session.get() or self.task.session_id
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
        """Run ``defn`` here with its retry policy and timeout; record the outcome."""
        seq = self._next_seq()
        rec = self._replayed(seq, "record_local_activity", defn.name)
        if rec is not None and rec.outcome is not None:
            return _activity_result(defn.name, rec.outcome)
        check_input(defn.name, args, kwargs)
        policy = defn.options.retry
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
                return result
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
                raise ActivityError(
                    defn.name,
                    attempts=attempt,
                    cause_type=error.type,
                    message=error.message,
                    reason=error.reason,
                )
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


def _describe(kind: str, name: str | None) -> str:
    return f"{kind}({name!r})" if name is not None else kind


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
