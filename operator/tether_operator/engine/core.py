"""The engine: events in, history and effects out. Pure: no I/O, time is passed in.

`Engine` is a thin facade over collaborators that share one `EngineState` and one
`Outbox`, each handed what it works on:

- `Tasks` queues activity attempts and workflow tasks and messages their workers;
- `Sessions` binds sticky sessions, `Dispatch` places queued tasks on workers;
- `Retries` decides what a failed attempt leads to;
- `Lifecycle` starts and ends runs and handles lost workers;
- `Commands` applies workflow commands, `Timeouts` fires due deadlines, `Restore`
  resumes runs rebuilt from history.

Every public method records history events on the runs it touches (the runs'
state is a fold of those events, see `runs.py`), places pending tasks on workers,
and returns the effects for the host to carry out, in order.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from tether_types.commands import WorkflowCommand
from tether_types.views import RunViewData, WorkerFacts
from tether_types.wire import LOSS_REASONS, LossReason, is_loss_reason, is_permanent_loss

from .commands import Commands
from .deadlines import DeadlineKind, Deadlines
from .demand import Demand, pool_demand
from .dispatch import Dispatch
from .effects import Effect, Outbox
from .errors import (
    InvalidCommand,
    RunAlreadyExists,
    UnknownWorker,
    WorkerIdTaken,
    WorkerRetired,
)
from .lifecycle import Lifecycle
from .restore import Restore
from .retry import Retries
from .runs import Run
from .sessions import Sessions
from .state import EngineConfig, EngineState, LiveTask
from .tasks import Tasks
from .timeouts import Timeouts
from .views import run_view
from .workers import WorkerState

__all__ = ["Engine", "EngineConfig", "LiveTask"]


class Engine:
    """Run state machines, retries, timeouts, sessions and placement for one scheduler."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.state = EngineState(config or EngineConfig())
        out = self._out = Outbox()
        tasks = self._tasks = Tasks(self.state, out)
        sessions = self._sessions = Sessions(self.state, out)
        retries = self._retries = Retries(self.state, out, tasks)
        lifecycle = self._lifecycle = Lifecycle(
            self.state, out, tasks=tasks, sessions=sessions, retries=retries
        )
        self._dispatch = Dispatch(self.state, out, sessions)
        self._commands = Commands(
            self.state, out, tasks=tasks, sessions=sessions, lifecycle=lifecycle
        )
        self._timeouts = Timeouts(
            self.state, out, tasks=tasks, retries=retries, lifecycle=lifecycle
        )
        self._restore = Restore(self.state, out, tasks=tasks, sessions=sessions)
        self._depth = 0
        self._leftover: list[Effect] = []

    # ------------------------------------------------------------------ state, read-only

    @property
    def config(self) -> EngineConfig:
        return self.state.config

    @property
    def runs(self) -> dict[str, Run]:
        return self.state.runs

    @property
    def workers(self) -> dict[str, WorkerState]:
        return self.state.workers

    @property
    def tasks(self) -> dict[str, LiveTask]:
        return self.state.tasks

    @property
    def workflow_task_of(self) -> dict[str, str]:
        return self.state.workflow_task_of

    @property
    def deadlines(self) -> Deadlines:
        return self.state.deadlines

    # ------------------------------------------------------------------ one call

    @contextmanager
    def _batch(self, now: float) -> Iterator[list[Effect]]:
        """Collect effects of one public call; place pending work at the end."""
        outer = self._depth == 0
        self._depth += 1
        if outer:
            self._out.begin(now)
        out: list[Effect] = []
        try:
            yield out
            if outer:
                self._dispatch.place()
        except BaseException:
            if outer:
                # State already changed must still reach the store: hand the effects
                # to the next call instead of dropping them.
                self._leftover.extend(self._out.drain())
            raise
        finally:
            self._depth -= 1
        if outer:
            out.extend(self._leftover + self._out.drain())
            self._leftover = []

    # ------------------------------------------------------------------ workers

    def register_worker(self, req: dict[str, Any], now: float) -> list[Effect]:
        """A worker process (re)starts and says what it can run."""
        st = self.state
        with self._batch(now) as out:
            new = WorkerState.from_registration(req, now)
            old = st.workers.get(new.worker_id)
            held_by = self._held_elsewhere(new, old)
            if held_by is not None:
                raise WorkerIdTaken(
                    f"worker id {new.worker_id!r} is held in namespace {held_by!r} (a live "
                    "worker, or sessions and attempts waiting for it): a worker of namespace "
                    f"{new.namespace!r} may not take it; worker ids (pod names) must be "
                    "unique across the namespaces one scheduler serves",
                    field="worker_id",
                )
            if old is not None and old.namespace != new.namespace:
                old = None  # another namespace's worker, gone and holding nothing
            if old is not None and not old.usable and _gone_for_good(old):
                # Its pod is being deleted: a re-registration would only take work the
                # dying process drops (and burn an attempt each time).
                raise WorkerRetired(
                    f"worker {new.worker_id!r} was lost for good ({old.lost_reason}): its pod "
                    "is gone, so it may not register again; a new pod registers under its "
                    "own name",
                    field="worker_id",
                )
            if old is not None and old.alive and old.incarnation == new.incarnation:
                old.workflows, old.activities = new.workflows, new.activities
                old.slots, old.session_capacity = new.slots, new.session_capacity
                old.last_seen = now
                return out
            if old is not None:
                if old.alive:
                    self._lifecycle.lose_worker(old, "ProcessExited", "the worker restarted")
                # Broken HARD sessions keep their reservation so the worker's capacity
                # is still theirs when it comes back.
                new.sessions = set(old.sessions)
            else:
                new.sessions = st.reserved.pop(new.worker_id, set())
            st.workers[new.worker_id] = new
            self._restore.worker_back(new)
            self._sessions.rebind_hard(new)
            due = now + st.config.worker_heartbeat_timeout
            st.deadlines.add(due, DeadlineKind.WORKER, new.worker_id)
            self._out.notice(
                None,
                "Normal",
                "WorkerRegistered",
                f"worker {new.worker_id} registered "
                f"(node {new.node or '-'}, {new.slots} slots, "
                f"{new.session_capacity} sessions)",
            )
        return out

    def _held_elsewhere(self, new: WorkerState, old: WorkerState | None) -> str | None:
        """The other namespace that still holds `new`'s worker id, if any: its live
        worker, or sessions and attempts of its runs waiting for that worker."""
        st = self.state
        if old is not None and old.namespace != new.namespace and (old.alive or old.sessions):
            return old.namespace
        wid = new.worker_id
        for sid in st.reserved.get(wid, ()):
            run = st.run_of_session(sid)
            if run is not None and run.namespace != new.namespace:
                return run.namespace
        for tid in st.restored.get(wid, ()):
            task = st.tasks.get(tid)
            if task is not None and st.runs[task.run_id].namespace != new.namespace:
                return st.runs[task.run_id].namespace
        return None

    def worker_seen(self, worker_id: str, now: float) -> list[Effect]:
        """Liveness: any request from the worker counts."""
        self._seen(worker_id, now)
        return []

    def _seen(self, worker_id: str, now: float) -> WorkerState:
        w = self.state.workers.get(worker_id)
        if w is None or not w.alive:
            raise UnknownWorker(
                f"worker {worker_id!r} is not registered; register it again", field="worker_id"
            )
        w.last_seen = now
        return w

    def worker_holds(
        self,
        worker_id: str,
        held: Collection[str],
        now: float,
        received: Mapping[str, int] | None = None,
    ) -> list[Effect]:
        """The worker says which tasks it holds: one it was handed but has left out of its
        heartbeats for a heartbeat interval was lost on the way, and is dispatched again.
        `held` must include what still waits for the worker in its mailbox.

        `received` counts, for workflow tasks, the outcomes (resolutions) the worker got,
        those still waiting in its mailbox included: a workflow task still counted short of
        what had been sent a heartbeat interval earlier lost one on the way, and is
        replayed (its code would otherwise wait for it forever)."""
        st = self.state
        with self._batch(now) as out:
            w = self._seen(worker_id, now)
            w.strays = frozenset(tid for tid in held if tid not in st.tasks)
            grace = st.config.worker_heartbeat_interval
            lost: list[tuple[LiveTask, int | None]] = []
            for tid in (*w.running, *w.workflow_tasks):
                task = st.tasks.get(tid)
                if task is None:
                    continue
                if tid in held or now - task.started_at < grace:
                    task.missing_since = None
                elif task.missing_since is None:
                    task.missing_since = now
                elif now - task.missing_since >= grace:
                    lost.append((task, None))
                    continue
                got = received.get(tid) if received is not None else None
                if tid in held and got is not None and _outcome_lost(task, got, now, grace):
                    lost.append((task, got))
            for task, got in sorted(lost, key=lambda t: t[0].task_id):  # a deterministic order
                self._lifecycle.task_lost(w, task, outcomes_got=got)
        return out

    def worker_lost(self, worker_id: str, reason: str, message: str, now: float) -> list[Effect]:
        """The worker's process or pod is gone (or stopped heartbeating)."""
        with self._batch(now) as out:
            w, loss = self._leaving_worker(worker_id, reason)
            self._lifecycle.lose_worker(w, loss, message)
        return out

    def worker_draining(
        self,
        worker_id: str,
        reason: str,
        message: str,
        now: float,
        unstarted: Collection[str] = (),
    ) -> list[Effect]:
        """The worker is going away (its pod terminates, its process got SIGTERM): its
        sessions break now with `reason`, it gets no new task, and the attempts it runs
        go on there, their outcomes accepted. `unstarted` names tasks it was sent but
        never began: they are dispatched again at once. A later `worker_lost` retries
        what still runs there; a later report with a more specific reason refines the
        sessions' reason."""
        with self._batch(now) as out:
            w, loss = self._leaving_worker(worker_id, reason)
            self._lifecycle.drain_worker(w, loss, message, unstarted)
        return out

    def _leaving_worker(self, worker_id: str, reason: str) -> tuple[WorkerState, LossReason]:
        """The registered worker a loss or drain report names, and its (known) reason."""
        w = self.state.workers.get(worker_id)
        if w is None:
            raise UnknownWorker(f"worker {worker_id!r} is not registered", field="worker_id")
        if not is_loss_reason(reason):
            raise InvalidCommand(
                f"unknown worker loss reason {reason!r}; use one of {', '.join(LOSS_REASONS)}",
                field="reason",
            )
        return w, reason

    # ------------------------------------------------------------------ runs

    def start_run(self, req: dict[str, Any], now: float) -> tuple[str, list[Effect]]:
        """Start a run of a workflow; it stays Pending until a worker can take it."""
        with self._batch(now) as out:
            self._lifecycle.check_registered(req["workflow"], req.get("namespace") or "")
            run_id = req.get("run_id") or self._lifecycle.new_run_id(req["workflow"], now)
            if run_id in self.state.runs:
                raise RunAlreadyExists(f"run {run_id!r} already exists", field="run_id")
            self._lifecycle.create_run(run_id, req, parent=None)
        return run_id, out

    def require_registered(self, workflow: str, namespace: str) -> None:
        """Raise WorkflowNotFound, naming the workflows registered in `namespace`, unless
        a worker of `namespace` registered `workflow` (whatever
        `require_registered_workflows` says)."""
        self._lifecycle.require_registered(workflow, namespace)

    def set_retry_defaults(
        self, namespace: str, workflow: str, policy: Mapping[str, Any] | None
    ) -> None:
        """The retry fields the activities of `workflow` in `namespace` take where their
        code sets none, from now on (None: the built-in defaults). An activity already
        scheduled keeps the policy its history recorded."""
        key = (namespace, workflow)
        if policy:
            self.state.retry_defaults[key] = dict(policy)
        else:
            self.state.retry_defaults.pop(key, None)

    def cancel_run(self, run_id: str, now: float) -> list[Effect]:
        """Cancel a run that has not ended (a no-op for one that has)."""
        with self._batch(now) as out:
            run = self.state.get_run(run_id)
            if not run.terminal:
                self._lifecycle.finish_run(run, "RunCancelled", reason="cancelled by a client")
        return out

    def workflow_commands(
        self,
        worker_id: str,
        run_id: str,
        workflow_task_id: str,
        commands: Sequence[WorkflowCommand],
        now: float,
    ) -> list[Effect]:
        """Commands emitted by workflow code running on `worker_id`."""
        st = self.state
        with self._batch(now) as out:
            self.worker_seen(worker_id, now)
            run = st.get_run(run_id)
            if run.terminal or st.workflow_task_of.get(run_id) != workflow_task_id:
                return out  # a stale workflow task (its worker was replaced): ignore
            task = st.tasks[workflow_task_id]
            if task.worker_id != worker_id:
                return out
            for cmd in commands:
                if run.terminal:
                    break
                try:
                    self._commands.apply(run, worker_id, cmd)
                except (InvalidCommand, KeyError, TypeError, ValueError) as exc:
                    msg = exc.message if isinstance(exc, InvalidCommand) else repr(exc)
                    self._lifecycle.fail_run(
                        run,
                        {
                            "type": "InvalidCommand",
                            "reason": "InvalidCommand",
                            "non_retryable": True,
                            "message": f"worker {worker_id} sent a bad {cmd.type!r} command: {msg}",
                        },
                    )
        return out

    # ------------------------------------------------------------------ activities

    def activity_completed(
        self, worker_id: str, task_id: str, result: Any, now: float
    ) -> list[Effect]:
        """An attempt succeeded: record the result and resolve the workflow's step."""
        st = self.state
        with self._batch(now) as out:
            st.touch(worker_id, now)
            task = st.live_task_on(worker_id, task_id)
            if task is None:
                return out
            st.drop_task(task)
            run = st.runs[task.run_id]
            self._out.record(
                run, "ActivityCompleted", seq=task.seq, attempt=task.attempt, result=result
            )
            self._tasks.resolve(run, task.seq, ok=True, result=result)
        return out

    def activity_failed(
        self, worker_id: str, task_id: str, error: dict[str, Any], now: float
    ) -> list[Effect]:
        """An attempt failed: retry it after its backoff, or fail the step."""
        st = self.state
        with self._batch(now) as out:
            st.touch(worker_id, now)
            task = st.live_task_on(worker_id, task_id)
            if task is not None:
                self._retries.attempt_failed(task, error, immediate=False)
        return out

    def activity_heartbeat(
        self, worker_id: str, task_id: str, details: Any, now: float
    ) -> tuple[bool, list[Effect]]:
        """Record heartbeat details; False means the task is gone and should stop."""
        st = self.state
        st.touch(worker_id, now)
        task = st.live_task_on(worker_id, task_id)
        if task is None:
            return False, []
        task.last_heartbeat = now
        task.heartbeat_details = details
        return True, []

    # ------------------------------------------------------------------ time

    def next_deadline(self) -> float | None:
        """When `advance` next has work, if ever."""
        return self.state.deadlines.next_time()

    def advance(self, now: float) -> list[Effect]:
        """Fire every deadline that is due at `now`."""
        deadlines = self.state.deadlines
        with self._batch(now) as out:
            while (d := deadlines.pop_due(now)) is not None:
                self._timeouts.fire(d)
        return out

    # ------------------------------------------------------------------ queries

    def is_terminal(self, run_id: str) -> bool:
        """True once the run Succeeded, Failed or was Cancelled."""
        return self.state.get_run(run_id).terminal

    def forget(self, run_id: str) -> None:
        """Drop a terminal run from memory (its object and history are gone elsewhere).

        A terminal run holds no task, deadline or session, so nothing else refers to it.
        """
        run = self.state.get_run(run_id)
        if not run.terminal:
            raise InvalidCommand(
                f"run {run_id} is {run.phase}: cancel it before forgetting it", field="run_id"
            )
        del self.state.runs[run_id]

    def run_view(self, run_id: str) -> RunViewData:
        """The run as clients see it."""
        return run_view(self.state.get_run(run_id), self.state.runs)

    def run_version(self, run_id: str) -> int:
        """A number that grows whenever the run's view changes: its view is built from its
        history and its children's phases, so the lengths of those histories."""
        run = self.state.get_run(run_id)
        runs = self.state.runs
        return len(run.history) + sum(
            len(runs[c.run_id].history) for c in run.children.values() if c.run_id in runs
        )

    def list_runs(self) -> list[RunViewData]:
        """Every run's view."""
        return [run_view(r, self.state.runs) for r in self.state.runs.values()]

    def worker_views(self) -> list[dict[str, Any]]:
        """Every worker's view (`WorkerView` dicts), lost ones included."""
        return [w.view() for w in self.state.workers.values()]

    def worker_facts(self, worker_id: str) -> WorkerFacts | None:
        """What a host may know of worker `worker_id` (None if never registered)."""
        w = self.state.workers.get(worker_id)
        return None if w is None else w.facts()

    def task_worker(self, task_id: str) -> str | None:
        """The worker a live task is dispatched to (None: unknown, ended or queued)."""
        task = self.state.tasks.get(task_id)
        return None if task is None else task.worker_id

    def demand(self) -> dict[str, Demand]:
        """Per worker pool ("" for none): work waiting for a worker, and each live
        worker's load. Placement runs at the end of every call, so what is queued here
        is what no live worker can take."""
        return pool_demand(self.state)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's history events, oldest first."""
        return list(self.state.get_run(run_id).history)

    def restore(self, run_id: str, events: list[dict[str, Any]], now: float) -> list[Effect]:
        """Rebuild a run from stored history after a scheduler restart.

        Running attempts and open sessions keep their worker for `restart_grace`
        seconds: a worker that registers again in time goes on as if nothing happened;
        otherwise they are retried and broken with `SchedulerRestarted`. The workflow
        task is replayed.
        """
        with self._batch(now) as out:
            run = Run.replay(events)
            if run.run_id in self.state.runs:
                raise RunAlreadyExists(f"run {run.run_id!r} already exists", field="run_id")
            self.state.runs[run.run_id] = run
            if not run.terminal:
                self._restore.resume(run)
        return out


def _gone_for_good(w: WorkerState) -> bool:
    return w.lost_reason is not None and is_permanent_loss(w.lost_reason)


def _outcome_lost(task: LiveTask, got: int, now: float, grace: float) -> bool:
    """Whether workflow task `task`, whose worker counted `got` outcomes, lost one: it is
    still short of what had been sent a heartbeat interval (`grace`) ago. Outcomes sent
    since may still be on their way; a stream of them only delays the verdict."""
    if got >= task.resolutions_sent:
        task.outcomes_due = None
        return False
    if task.outcomes_due is None or got >= task.outcomes_due:
        task.outcomes_due, task.outcomes_since = task.resolutions_sent, now
        return False
    return now - task.outcomes_since >= grace
