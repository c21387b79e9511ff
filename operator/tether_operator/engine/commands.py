"""What workflow code asks for: commands from a workflow task, checked against history."""

from __future__ import annotations

from typing import assert_never

from tether_types.commands import (
    CloseSession,
    CompleteWorkflow,
    FailWorkflow,
    OpenSession,
    RecordLocalActivity,
    ScheduleActivity,
    StartChild,
    StartTimer,
    WorkflowCommand,
)
from tether_types.wire import nondeterminism, nondeterminism_error

from .deadlines import DeadlineKind
from .effects import Outbox
from .errors import InvalidCommand
from .lifecycle import Lifecycle
from .retry import with_workflow_defaults
from .runs import Run
from .sessions import Sessions
from .state import EngineState
from .tasks import Tasks


class Commands:
    """Applies workflow commands; a replayed command must match the recorded step."""

    def __init__(
        self,
        state: EngineState,
        out: Outbox,
        *,
        tasks: Tasks,
        sessions: Sessions,
        lifecycle: Lifecycle,
    ) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks
        self.sessions = sessions
        self.lifecycle = lifecycle

    def apply(self, run: Run, worker_id: str, cmd: WorkflowCommand) -> None:
        """Apply one command of `run`'s workflow task on `worker_id`.

        Raises InvalidCommand (or KeyError/TypeError/ValueError) for a malformed command.
        """
        out, seq = self.out, cmd.seq
        if not isinstance(seq, int) or seq < 0:
            raise InvalidCommand(
                f"command {type(cmd).__name__} needs a non-negative integer seq", field="seq"
            )
        issued = cmd.step if seq in run.steps else None
        if issued is not None:
            message = nondeterminism(run.workflow, seq, run.steps[seq], issued)
            if message is not None:
                self.lifecycle.fail_run(run, nondeterminism_error(message))
            elif isinstance(cmd, StartChild):
                self._replayed_child(run, worker_id, cmd)
            return  # a replayed command for a step already recorded: idempotent
        match cmd:
            case ScheduleActivity():
                self._schedule_activity(run, cmd)
            case RecordLocalActivity():
                out.record(
                    run,
                    "LocalActivityRecorded",
                    seq=seq,
                    activity=cmd.activity,
                    attempts=cmd.attempts,
                    ok=cmd.ok,
                    result=cmd.result,
                    error=cmd.error,
                )
            case OpenSession():
                if cmd.session_id not in run.sessions:
                    out.record(
                        run,
                        "SessionOpened",
                        seq=seq,
                        session_id=cmd.session_id,
                        strategy=cmd.strategy,
                    )
            case CloseSession():
                s = run.sessions.get(cmd.session_id)
                if s is not None and s.state != "Closed":
                    self.sessions.close(run, s)
            case StartChild():
                self._start_child(run, worker_id, cmd)
            case StartTimer():
                fire_at = out.now + float(cmd.seconds)
                out.record(run, "TimerStarted", seq=seq, fire_at=fire_at)
                self.state.deadlines.add(fire_at, DeadlineKind.TIMER, run.run_id, str(seq))
            case CompleteWorkflow():
                self.lifecycle.finish_run(run, "RunCompleted", result=cmd.result)
            case FailWorkflow():
                self.lifecycle.finish_run(run, "RunFailed", error=cmd.error)
            case _:
                assert_never(cmd)

    def _schedule_activity(self, run: Run, cmd: ScheduleActivity) -> None:
        sid = cmd.session_id
        if sid is not None and sid not in run.sessions:
            raise InvalidCommand(
                f"activity {cmd.activity!r} names session {sid!r}, which this run never opened",
                field="session_id",
            )
        self.out.record(
            run,
            "ActivityScheduled",
            seq=cmd.seq,
            activity=cmd.activity,
            args=cmd.args,
            kwargs=cmd.kwargs,
            options=with_workflow_defaults(
                cmd.options, self.state.retry_defaults.get((run.namespace, run.workflow))
            ),
            session_id=sid,
        )
        self.tasks.enqueue_activity(run, run.activities[cmd.seq])

    def _start_child(self, run: Run, worker_id: str, cmd: StartChild) -> None:
        seq, name, sticky = cmd.seq, cmd.workflow, cmd.sticky
        child_id = f"{run.run_id}-c{seq}"
        target = self._sticky_target(run, worker_id, cmd)
        self.out.record(
            run, "ChildStarted", seq=seq, child_run_id=child_id, workflow=name, sticky=sticky
        )
        refusal = None if target is None else self._sticky_child_refusal(name, target)
        if refusal is not None:
            err = {
                "type": "ChildWorkflowError",
                "reason": refusal[0],
                "message": refusal[1],
                "non_retryable": True,
            }
            self.out.record(run, "ChildFailed", seq=seq, error=err)
            self.tasks.resolve(run, seq, ok=False, error=err)
            return
        self._child_of(run, child_id, cmd, target)

    def _sticky_target(self, run: Run, worker_id: str, cmd: StartChild) -> str | None:
        """The worker a sticky child must run on (its session's, else the parent's
        workflow worker); None for a child that is not sticky."""
        if not cmd.sticky:
            return None
        session = run.sessions.get(cmd.session_id) if cmd.session_id else None
        return session.worker if session is not None and session.worker else worker_id

    def _child_of(self, run: Run, child_id: str, cmd: StartChild, target: str | None) -> None:
        """Start child `child_id` of `run`, unless the store already gave it back after a
        restart: then a child that ended tells the parent now, and one still running
        tells it when it ends."""
        crun = self.state.runs.get(child_id)
        if crun is not None:
            if crun.terminal:
                self.lifecycle.child_ended(run, cmd.seq, crun)
            return
        self.lifecycle.create_run(
            child_id,
            {
                "workflow": cmd.workflow,
                "input": cmd.input,
                "schedule_timeout": run.schedule_timeout,
            },
            parent=(run, cmd.seq),
            placement_worker=target,
        )

    def _replayed_child(self, run: Run, worker_id: str, cmd: StartChild) -> None:
        """Mend a child the parent still waits on after a restart. The child's history
        and the parent's are written apart, so a crash between the two writes may store
        the child's end without the parent's ChildCompleted, or the parent's ChildStarted
        without the child's start."""
        child = run.children.get(cmd.seq)
        if child is None or child.state != "Running" or run.terminal:
            return
        self._child_of(run, child.run_id, cmd, self._sticky_target(run, worker_id, cmd))

    def _sticky_child_refusal(self, name: str, target: str) -> tuple[str, str] | None:
        """(reason, message) if worker `target` cannot run sticky child workflow `name`."""
        w = self.state.workers.get(target)
        if w is None or name not in w.workflows:
            return (
                "ChildNotRegistered",
                f"sticky child workflow {name!r} is not registered "
                f"on worker {target!r}, which runs the parent's session; register it in "
                "run_worker([...]) on the same worker",
            )
        if not w.workflows[name]:
            return (
                "StickyChildWithoutStrategy",
                f"sticky child workflow {name!r} has no "
                "sticky strategy; declare it with "
                "@workflow.define(sticky=StickyStrategy.SOFT) or HARD",
            )
        return None
