"""Property tests for the pure engine: random interleavings, invariants after every step.

A hypothesis state machine plays everything around the engine: worker processes
(a small pool of ids, so restarts and re-registrations happen), the SDK running
workflow code (deterministic scripts of sessions, activities, timers; replayed from
the history on every new workflow task), activity outcomes, worker losses of every
reason, silence, the clock, cancellations and scheduler restarts (`Engine.restore`).
The host is a durable one (as with the Kubernetes store): history reaches the store
some time after the engine records it (`store_writes`), a delivery waits until the
history before it is written, and a completion is acknowledged only once its history
is; a scheduler restart rebuilds every run from the written prefix alone, and worker
processes keep their running attempts and re-send unacknowledged completions.

After every step it checks the invariants of DESIGN.md / docs/internals.md:

1. a run ends in exactly one terminal state, and nothing is dispatched for it after;
2. no activity result is recorded twice;
3. a session never has two live bindings (nor running attempts on two workers);
4. a HARD session never moves;
5. slots and session capacity are never exceeded;
6. the persisted history replays to the live state (and restores into a fresh engine);
7. a HARD session fails on schedule timeout only if its worker did not come back;
8. an activity whose completion was acknowledged keeps its recorded result across
   restarts and never starts again;
9. a draining worker (its pod terminates, its process got SIGTERM) gets no new task,
   holds no open session and no workflow task;
10. an attempt a draining worker still runs stays its (never dispatched again) until it
    reports, is cancelled, or the worker is lost;
11. no task crosses a namespace: a run's tasks and sessions go only to workers of its
    namespace (two namespaces share worker pool names and workflow names here);
12. a run's view changes only when `Engine.run_version` does (the run page's ETag).

`settle` adds a liveness property: a healthy worker, no more losses and enough time
drive every run to a terminal phase — even though `message_lost` drops tasks on their way
to a live worker, because heartbeats list what each worker holds and the engine sends a
missing task again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tether_operator.engine import (
    TERMINAL_PHASES,
    Deliver,
    Effect,
    Engine,
    EngineConfig,
    Persist,
    Run,
    RunEnded,
    UnknownWorker,
    WorkerGone,
    WorkerRetired,
)
from tether_operator.engine.demand import Demand
from tether_operator.engine.runs import SessionRecord
from tether_types.commands import command_from_wire
from tether_types.notices import Notice

from .driver import Driver, act, done, open_session

# ---------------------------------------------------------------------------- settings

_EXAMPLES = int(os.environ.get("TETHER_PROPERTY_EXAMPLES", "200"))

PROPERTY_SETTINGS = settings(
    max_examples=_EXAMPLES,
    stateful_step_count=40,
    deadline=None,
    report_multiple_bugs=False,  # shrink one failure, not all of them: keeps a red run short
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

POOL = ("w0", "w1", "w2", "w3")
WORKER_POOL = {"w0": "p", "w1": "p", "big-p": "p"}
"""Worker pools (the others have none); runs that name pool "p" run only on these."""
WORKER_NAMESPACE = {"w3": "b", "big-b": "b"}
"""Namespaces (the others are in "a"): a run of namespace "b" runs only on these, and
a run of "a" never on them."""
NODES = ("n0", "n1")
WORKFLOWS = {"wf": None, "soft-wf": "SOFT", "hard-wf": "HARD", "child": None}
ACTIVITIES = ("a", "b")
LOSS_REASONS = ("ProcessExited", "HeartbeatTimeout", "PodDeleted", "ScaledDown", "NodeLost")
PERMANENT_LOSSES = ("PodDeleted", "ScaledDown", "Evicted")
TERMINAL_EVENTS = frozenset({"RunCompleted", "RunFailed", "RunCancelled"})
MAX_RUNS = 6

# ---------------------------------------------------------------------------- workflow scripts


@dataclass
class Step:
    """One workflow-side operation; it takes one seq whatever path the workflow takes."""

    kind: str  # "open" | "act" | "timer" | "close" | "child"
    strategy: str = "SOFT"
    activity: str = "a"
    session: int | str | None = None
    """act/close: None (no session), "wf" (the workflow session), or an index into the
    sessions opened so far."""
    options: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Script:
    """Workflow code: batches of steps; each batch waits for its activities and timers."""

    batches: list[list[Step]]
    fail_on_error: list[bool]
    end: str  # "complete" | "fail"

    def commands(
        self, run_id: str, wf_session: str | None, outcomes: dict[int, bool]
    ) -> list[dict[str, Any]]:
        """The commands the workflow has issued once it knows `outcomes` (seq -> ok).

        Seqs depend only on the position of a step, so a replay with more outcomes
        issues the same commands for the same seqs and then some more.
        """
        cmds: list[dict[str, Any]] = []
        opened: list[str] = []
        seq = 0

        def session_of(ref: int | str | None) -> str | None:
            if ref == "wf":
                return wf_session
            if isinstance(ref, int) and opened:
                return opened[ref % len(opened)]
            return None

        total = sum(len(b) for b in self.batches)
        for batch, fail_on_error in zip(self.batches, self.fail_on_error, strict=True):
            awaited: list[int] = []
            for step in batch:
                seq += 1
                if step.kind == "open":
                    sid = f"{run_id}/s{seq}"
                    opened.append(sid)
                    cmds.append(
                        {
                            "type": "open_session",
                            "seq": seq,
                            "session_id": sid,
                            "strategy": step.strategy,
                        }
                    )
                elif step.kind == "act":
                    cmds.append(
                        {
                            "type": "schedule_activity",
                            "seq": seq,
                            "activity": step.activity,
                            "args": [seq],
                            "kwargs": {},
                            "options": json.loads(json.dumps(step.options)),
                            "session_id": session_of(step.session),
                        }
                    )
                    awaited.append(seq)
                elif step.kind == "timer":
                    cmds.append({"type": "start_timer", "seq": seq, "seconds": step.seconds})
                    awaited.append(seq)
                elif step.kind == "child":
                    cmds.append(
                        {"type": "start_child", "seq": seq, "workflow": "child", "input": seq}
                    )
                    awaited.append(seq)
                else:  # close
                    closing = session_of(step.session)
                    if closing is not None and closing != wf_session:
                        cmds.append({"type": "close_session", "seq": seq, "session_id": closing})
            if not all(s in outcomes for s in awaited):
                return cmds
            if fail_on_error and not all(outcomes[s] for s in awaited):
                cmds.append(
                    {
                        "type": "fail_workflow",
                        "seq": total + 1,
                        "error": {"type": "ActivityError", "message": "an activity failed"},
                    }
                )
                return cmds
        if self.end == "complete":
            cmds.append({"type": "complete_workflow", "seq": total + 1, "result": total})
        else:
            cmds.append(
                {
                    "type": "fail_workflow",
                    "seq": total + 1,
                    "error": {"type": "ValueError", "message": "the workflow gave up"},
                }
            )
        return cmds


retry_policies = st.fixed_dictionaries(
    {
        "max_attempts": st.integers(1, 3),
        "initial_interval": st.sampled_from([0.5, 1.0, 2.0]),
        "backoff_coefficient": st.sampled_from([1.0, 2.0]),
        "max_interval": st.just(4.0),
    },
    optional={"non_retryable_errors": st.just(["KeyError"])},
)
activity_options = st.fixed_dictionaries(
    {},
    optional={
        "retry": retry_policies,
        "start_to_close_timeout": st.sampled_from([1.0, 5.0, 20.0]),
        "heartbeat_timeout": st.sampled_from([1.0, 3.0]),
    },
)
session_refs = st.one_of(st.none(), st.just("wf"), st.integers(0, 2), st.integers(0, 2))
steps = st.one_of(
    st.builds(
        lambda a, s, o: Step("act", activity=a, session=s, options=o),
        st.sampled_from(ACTIVITIES),
        session_refs,
        activity_options,
    ),
    st.builds(lambda s: Step("open", strategy=s), st.sampled_from(["SOFT", "HARD"])),
    st.builds(lambda s: Step("timer", seconds=s), st.sampled_from([0.5, 2.0, 10.0])),
    st.builds(lambda k: Step("close", session=k), st.integers(0, 2)),
    st.just(Step("child")),
)
CHILD_SCRIPT = Script([[Step("act")]], [True], "complete")
"""What every child run does: one activity, then it completes (or fails with it)."""


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    batches = draw(st.lists(st.lists(steps, min_size=1, max_size=3), max_size=4))
    fail_on_error = draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    end = draw(st.sampled_from(["complete", "complete", "fail"]))
    return Script(batches, fail_on_error, end)


# ---------------------------------------------------------------------------- the host model


@dataclass
class WorkerConfig:
    node: str
    slots: int
    capacity: int
    serves_workflows: bool


worker_configs = st.builds(
    WorkerConfig,
    st.sampled_from(NODES),
    st.integers(1, 3),
    st.integers(1, 3),
    st.booleans(),
)


@dataclass
class WorkflowTaskState:
    """The SDK's view of one workflow task: what it knows and what it already sent."""

    task_id: str
    run_id: str
    session_id: str | None
    outcomes: dict[int, bool]
    sent: int = 0
    received: int = 0
    """Resolutions received (the heartbeat's `outcomes` count)."""


@dataclass
class WorkerProcess:
    """One worker process as the test sees it: the tasks it holds."""

    wid: str
    config: WorkerConfig
    incarnation: int = 0
    activities: dict[str, dict[str, Any]] = field(default_factory=dict)
    stale: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Cancelled or abandoned attempts that may still report (late results)."""
    wfts: dict[str, WorkflowTaskState] = field(default_factory=dict)
    unacked: dict[str, Report] = field(default_factory=dict)
    """Outcomes reported but not acknowledged yet: re-sent after re-registering."""
    draining: bool = False
    """It got SIGTERM: it takes no new task and finishes the attempts it runs."""

    def forget_everything(self) -> None:
        self.draining = False
        self.activities.clear()
        self.stale.clear()
        self.wfts.clear()
        self.unacked.clear()

    def held(self) -> set[str]:
        """What the process's heartbeat lists: attempts it runs, its workflow tasks and
        outcomes not acknowledged yet."""
        return (
            set(self.activities) | {wft.task_id for wft in self.wfts.values()} | set(self.unacked)
        )


@dataclass
class Report:
    """An activity outcome a worker sent, waiting for its acknowledgement."""

    task: dict[str, Any]
    error: dict[str, Any] | None
    """None: a completion."""
    mark: int
    """The run's history length when it was applied: acknowledged once that is written."""
    accepted: bool
    """The scheduler recorded it as the step's completion."""


def outcomes_in(history: list[dict[str, Any]]) -> dict[int, bool]:
    """seq -> ok for every awaited step with a recorded outcome (what the SDK replays)."""
    out: dict[int, bool] = {}
    for ev in history:
        d = ev["data"]
        if ev["type"] in ("ActivityCompleted", "TimerFired", "ChildCompleted"):
            out[d["seq"]] = True
        elif ev["type"] == "ChildFailed" or (
            ev["type"] == "ActivityFailed" and d.get("retry_at") is None
        ):
            out[d["seq"]] = False
    return out


class HostDriver(Driver):
    """The scenario driver, storing history as JSON (as a real store would)."""

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for fx in effects:
            if isinstance(fx, Deliver):
                self.inbox.setdefault(fx.worker_id, []).append(fx.message)
            elif isinstance(fx, Persist):
                self.stored.setdefault(fx.run_id, []).extend(json.loads(json.dumps(fx.events)))
            elif isinstance(fx, Notice):
                self.notices.append(fx)
        return effects


@dataclass
class DurableHostDriver(HostDriver):
    """A host with a durable store, as `SchedulerService` with one: `stored` is what the
    engine recorded, `written` how much of it the store holds; a delivery waits until
    its run's history before it is written, and a task (not a cancel) is void if its
    worker was lost or began draining since. An activity attempt goes out at once
    (speculatively, before its schedule is written), as the service sends it."""

    written: dict[str, int] = field(default_factory=dict)
    held: dict[str, list[tuple[int, int, Deliver]]] = field(default_factory=dict)
    epochs: dict[str, int] = field(default_factory=dict)

    def apply(self, effects: list[Effect]) -> list[Effect]:
        for fx in effects:
            if isinstance(fx, Deliver):
                rid = fx.run_id
                mark = len(self.stored.get(rid, ()))
                speculative = fx.message["kind"] == "activity"
                if speculative or (rid not in self.held and self.written.get(rid, 0) >= mark):
                    self.inbox.setdefault(fx.worker_id, []).append(fx.message)
                else:
                    entry = (mark, self.epochs.get(fx.worker_id, 0), fx)
                    self.held.setdefault(rid, []).append(entry)
            elif isinstance(fx, WorkerGone):
                self.epochs[fx.worker_id] = self.epochs.get(fx.worker_id, 0) + 1
            else:
                super().apply([fx])
        return effects

    def write(self, rid: str) -> None:
        """The store writes everything recorded for `rid`; held deliveries go out."""
        self.written[rid] = len(self.stored.get(rid, ()))
        for _, epoch, fx in self.held.pop(rid, ()):
            if self.epochs.get(fx.worker_id, 0) == epoch or fx.message["kind"] == "cancel":
                self.inbox.setdefault(fx.worker_id, []).append(fx.message)

    def crash(self) -> None:
        """The scheduler process dies: unwritten history and held deliveries are lost."""
        for rid, evs in self.stored.items():
            del evs[self.written.get(rid, 0) :]
        self.held.clear()
        self.inbox.clear()


# ---------------------------------------------------------------------------- invariants


_HARD_TIMEOUT = re.compile(r"HARD session (\S+) lost worker (\S+) \(.*did not come back")


def check_run(engine: Engine, stored: list[dict[str, Any]], run: Run) -> None:
    """Invariants 1, 2, 4 and 6 for one run."""
    rid = run.run_id
    # 6: the persisted history folds back into exactly the live state.
    assert Run.replay(stored) == run, f"{rid}: stored history does not replay to the live run"

    # 1: exactly one terminal event, and only session bookkeeping after it.
    ends = [i for i, ev in enumerate(stored) if ev["type"] in TERMINAL_EVENTS]
    assert len(ends) == (1 if run.terminal else 0), f"{rid}: terminal events at {ends}"
    if ends:
        after = [ev["type"] for ev in stored[ends[0] + 1 :]]
        assert set(after) <= {"SessionClosed"}, f"{rid}: events after the end: {after}"
        live = [t for t in engine.tasks.values() if t.run_id == rid]
        assert not live, f"{rid} is {run.phase} but still has tasks {live}"
        assert engine.workflow_task_of.get(rid) is None

    # 2: one result per activity.
    completed: dict[int, int] = {}
    final_failed: dict[int, int] = {}
    for ev in stored:
        d = ev["data"]
        if ev["type"] == "ActivityCompleted":
            completed[d["seq"]] = completed.get(d["seq"], 0) + 1
        elif ev["type"] == "ActivityFailed":
            seq = d["seq"]
            assert seq not in completed, f"{rid}: seq {seq} failed after it completed"
            if d.get("retry_at") is None:
                final_failed[seq] = final_failed.get(seq, 0) + 1
        elif ev["type"] == "ActivityStarted":
            seq = d["seq"]
            again = f"{rid}: seq {seq} started again after its final outcome"
            assert seq not in completed, again
            assert seq not in final_failed, again
    for seq in set(completed) | set(final_failed):
        assert completed.get(seq, 0) + final_failed.get(seq, 0) == 1, (
            f"{rid}: seq {seq} has {completed.get(seq, 0)} completions and "
            f"{final_failed.get(seq, 0)} final failures"
        )

    # 4: HARD sessions never move.
    strategy = {
        ev["data"]["session_id"]: ev["data"]["strategy"]
        for ev in stored
        if ev["type"] == "SessionOpened"
    }
    bound: dict[str, set[str]] = {}
    for ev in stored:
        if ev["type"] == "SessionBound":
            bound.setdefault(ev["data"]["session_id"], set()).add(ev["data"]["worker"])
    for sid, workers in bound.items():
        if strategy[sid] == "HARD":
            assert len(workers) == 1, f"HARD session {sid} moved between {sorted(workers)}"


def check_engine(engine: Engine) -> None:
    """Invariants 3 and 5, across runs and workers."""
    owners: dict[str, list[str]] = {}
    for w in engine.workers.values():
        for sid in w.sessions:
            owners.setdefault(sid, []).append(w.worker_id)
    for sid, ws in owners.items():
        assert len(ws) == 1, f"session {sid} is held by several workers: {sorted(ws)}"

    sessions = {sid: s for run in engine.runs.values() for sid, s in run.sessions.items()}
    for w in engine.workers.values():
        # 5: capacity.
        assert len(w.running) <= w.slots, f"{w.worker_id}: {len(w.running)} > {w.slots} slots"
        assert len(w.sessions) <= w.session_capacity, (
            f"{w.worker_id}: {sorted(w.sessions)} exceed session capacity {w.session_capacity}"
        )
        open_here = sorted(
            sid for sid, s in sessions.items() if s.state == "Open" and s.worker == w.worker_id
        )
        assert len(open_here) <= w.session_capacity, (
            f"{w.worker_id}: open sessions {open_here} exceed capacity {w.session_capacity}"
        )
        # 3: the worker's reservations match the runs' view.
        for sid in w.sessions:
            s = sessions.get(sid)
            assert s is not None, f"{w.worker_id} holds session {sid} of no run"
            assert s.state != "Closed", f"{w.worker_id} still holds closed session {sid}"
            assert s.worker == w.worker_id, f"{w.worker_id} holds {sid}, bound to {s.worker}"
            assert s.state == "Open" or s.strategy == "HARD", (
                f"{w.worker_id} still holds broken SOFT session {sid}"
            )
            # 11: a session binds only to a worker of its run's namespace.
            run = engine.state.run_of_session(sid)
            assert run is not None, f"{w.worker_id} holds session {sid} of no run"
            assert run.namespace == w.namespace, (
                f"{w.worker_id} of namespace {w.namespace} holds session {sid} of another one"
            )
        for tid in (*w.running, *w.workflow_tasks):
            task = engine.tasks.get(tid)
            if task is not None:
                owner = engine.runs[task.run_id]
                assert owner.namespace == w.namespace, (
                    f"{tid} of namespace {owner.namespace} is on {w.worker_id} of {w.namespace}"
                )
        if w.draining:
            assert w.alive, f"{w.worker_id} is draining but lost"
            assert not open_here, f"{w.worker_id} is draining but sessions {open_here} are Open"
            assert not w.workflow_tasks, f"{w.worker_id} is draining but runs workflow tasks"
        if w.alive:
            missing = [sid for sid in open_here if sid not in w.sessions]
            assert not missing, f"{w.worker_id} is alive but does not hold its sessions {missing}"
        for tid in w.running:
            task = engine.tasks.get(tid)
            assert task is not None, f"{w.worker_id} runs {tid}, which is not a live task"
            assert task.worker_id == w.worker_id, (
                f"{tid} runs on {w.worker_id} and {task.worker_id}"
            )

    # 3: running attempts of a live session are all on one worker (but a draining one
    # finishes what it runs there while the session moves on).
    on: dict[str, set[str]] = {}
    draining = {w.worker_id for w in engine.workers.values() if w.draining}
    for task in engine.tasks.values():
        if task.worker_id in draining:
            continue
        if task.kind == "activity" and task.worker_id is not None and task.session_id:
            s = sessions.get(task.session_id)
            if s is not None and s.state != "Closed":
                on.setdefault(task.session_id, set()).add(task.worker_id)
    for sid, where in on.items():
        assert len(where) == 1, f"session {sid} runs attempts on {sorted(where)} at once"
    check_demand(engine, sessions)


def check_demand(engine: Engine, sessions: dict[str, SessionRecord]) -> None:
    """What the pool controller labels pods with and spares: every open session of an
    unfinished run is pinned to its live worker, nothing closed or finished is pinned,
    and a new pod prefers only nodes of broken SOFT sessions."""
    demand = engine.demand()
    pinned = {(pool, wid): sids for pool, d in demand.items() for wid, sids in d.pinned.items()}
    for w in engine.workers.values():
        held = pinned.get((w.pool, w.worker_id), frozenset())
        for sid in held:
            run = engine.runs[sid.rsplit("/", 1)[0]]
            assert not run.terminal, f"{w.worker_id} is pinned by {sid} of a finished run"
            assert sessions[sid].state != "Closed", f"{w.worker_id} is pinned by closed {sid}"
        if w.alive:
            live = {
                sid
                for sid, s in sessions.items()
                if s.state == "Open"
                and s.worker == w.worker_id
                and not engine.runs[sid.rsplit("/", 1)[0]].terminal
            }
            assert live <= held, f"{w.worker_id}: open sessions {sorted(live - held)} not pinned"
            if w.usable:  # a draining worker takes no work: it is no capacity of its pool
                load = demand[w.pool].workers[w.worker_id]
                assert load.sessions == len(held), f"{w.worker_id}: load and pins disagree"
            else:
                assert w.worker_id not in demand.get(w.pool, Demand()).workers
    soft_nodes = {s.node for s in sessions.values() if s.state == "Broken" and s.strategy == "SOFT"}
    for pool, d in demand.items():
        assert d.rebind_nodes <= soft_nodes, f"pool {pool} prefers {sorted(d.rebind_nodes)}"


def normalised_view(view: dict[str, Any]) -> dict[str, Any]:
    """A run view without what restore legitimately changes (running -> retried, open -> broken)."""
    v = dict(view)
    v.pop("history_length")
    acts = []
    for a in v["activities"]:
        a = dict(a)
        if a["state"] == "Running" or "SchedulerRestarted" in json.dumps(a["error"]):
            a["state"], a["error"] = "Interrupted", None
        a["attempts"] = [
            {**t, "state": "Interrupted", "error": None, "finished_at": None, "retry_at": None}
            if t["state"] == "Running" or "SchedulerRestarted" in json.dumps(t["error"])
            else t
            for t in a["attempts"]
        ]
        acts.append(a)
    v["activities"] = acts
    sess = []
    for s in v["sessions"]:
        s = dict(s)
        if s["state"] == "Open" and s["worker"] is not None:
            s["state"], s["reason"], s["message"] = "Interrupted", None, None
        if s["reason"] == "SchedulerRestarted":
            s["state"], s["reason"], s["message"] = "Interrupted", None, None
        s["breaks"] = [b for b in s["breaks"] if b["reason"] != "SchedulerRestarted"]
        sess.append(s)
    v["sessions"] = sess
    return v


# ---------------------------------------------------------------------------- the machine


class EngineMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = DurableHostDriver(engine=Engine(EngineConfig(require_registered_workflows=False)))
        self.procs: dict[str, WorkerProcess] = {}
        self.scripts: dict[str, Script] = {}
        self.phases: dict[str, str] = {}
        self.run_ids: list[str] = []
        self.started = 0
        self.restarts = 0
        self.acknowledged: dict[tuple[str, int], int] = {}
        """(run, seq) -> attempt of every completion acknowledged as the step's result."""
        self.views: dict[str, tuple[int, Any]] = {}
        """run -> (its version, its view) when last checked (12)."""

    @initialize(configs=st.lists(worker_configs, min_size=len(POOL), max_size=len(POOL)))
    def setup(self, configs: list[WorkerConfig]) -> None:
        self.procs = {wid: WorkerProcess(wid, cfg) for wid, cfg in zip(POOL, configs, strict=True)}

    # ------------------------------------------------------------------ plumbing

    @property
    def engine(self) -> Engine:
        return self.d.engine

    def call(self, effects: list[Effect]) -> None:
        """Carry out one engine call's effects and hand messages to the worker processes."""
        self.d.apply(effects)
        eng = self.engine
        for rid in eng.runs:
            if rid not in self.run_ids:  # a child run the engine started
                self.scripts.setdefault(rid, CHILD_SCRIPT)
                self.run_ids.append(rid)
                if self.restarts:
                    event("a child run started after a scheduler restart")
        for fx in effects:
            if isinstance(fx, Deliver) and fx.message["kind"] in ("activity", "workflow"):
                rid = fx.message["run_id"]
                # 1: nothing is dispatched for a terminal run, nor to a dead worker.
                assert not eng.runs[rid].terminal, f"{fx.message['kind']} task for ended {rid}"
                w = eng.workers.get(fx.worker_id)
                assert w is not None, f"task dispatched to unknown {fx.worker_id}"
                assert w.alive, f"task dispatched to dead {fx.worker_id}"
                # 9: a draining worker gets no new task.
                assert not w.draining, f"task dispatched to draining {fx.worker_id}"
                run = eng.runs[rid]
                # 11: no task crosses a namespace.
                assert w.namespace == run.namespace, (
                    f"{rid} of namespace {run.namespace} dispatched to {fx.worker_id} of "
                    f"namespace {w.namespace}"
                )
                pool = run.worker_pool
                assert w.serves(run.namespace, pool), (
                    f"{rid} of pool {pool} dispatched to {fx.worker_id}"
                )
        self.hand_out()

    def hand_out(self) -> None:
        """Worker processes receive what was delivered to them."""
        while self.d.inbox:
            inbox, self.d.inbox = self.d.inbox, {}
            for wid, msgs in inbox.items():
                proc = self.procs[wid]
                for m in msgs:
                    self.receive(proc, m)

    def write(self, rid: str) -> None:
        """The store writes `rid`'s history: deliveries and acknowledgements follow."""
        self.d.write(rid)
        self.hand_out()
        written = self.d.written.get(rid, 0)
        for proc in self.procs.values():
            for tid, report in list(proc.unacked.items()):
                if report.task["run_id"] == rid and report.mark <= written:
                    del proc.unacked[tid]
                    if report.accepted:
                        self.acknowledged[(rid, report.task["seq"])] = report.task["attempt"]

    def write_all(self) -> None:
        for rid in self.run_ids:
            self.write(rid)

    def report(self, proc: WorkerProcess, tid: str, report: Report) -> None:
        """`proc` sends an activity outcome; it keeps it until acknowledged."""
        rid, seq, now = report.task["run_id"], report.task["seq"], self.d.now
        proc.unacked[tid] = report
        if not self.registered(proc.wid) or rid not in self.engine.runs:
            return  # answered 404 UnknownWorker: sent again after registering
        if report.error is None:
            fx = self.engine.activity_completed(proc.wid, tid, {"seq": seq}, now)
        else:
            fx = self.engine.activity_failed(proc.wid, tid, report.error, now)
        report.accepted = any(
            ev["type"] == "ActivityCompleted" and ev["data"]["seq"] == seq
            for f in fx
            if isinstance(f, Persist) and f.run_id == rid
            for ev in f.events
        )
        if report.accepted and self.restarts:
            event("a completion accepted after a scheduler restart")
        if report.accepted and self.engine.workers[proc.wid].draining:
            event("a completion accepted from a draining worker")
        self.call(fx)
        report.mark = len(self.d.stored[rid])
        if self.d.written.get(rid, 0) >= report.mark:
            self.write(rid)  # nothing was waiting: acknowledged at once

    def receive(self, proc: WorkerProcess, m: dict[str, Any]) -> None:
        kind = m["kind"]
        if proc.draining and kind in ("activity", "workflow"):
            return  # a stopping worker starts nothing new (its drain hands it back)
        if kind == "activity":
            proc.activities[m["task_id"]] = m
        elif kind == "workflow":
            proc.wfts[m["run_id"]] = WorkflowTaskState(
                m["task_id"], m["run_id"], m["session_id"], outcomes_in(m["history"])
            )
        elif kind == "cancel":
            task = proc.activities.pop(m["task_id"], None)
            if task is not None:
                proc.stale[m["task_id"]] = task
        elif kind == "resolution":
            wft = proc.wfts.get(m["run_id"])
            if wft is None or wft.task_id != m["workflow_task_id"]:
                return
            assert m["seq"] not in wft.outcomes, f"seq {m['seq']} resolved twice: {m}"
            wft.received += 1
            recorded = outcomes_in(self.d.stored[m["run_id"]])
            assert recorded.get(m["seq"]) == m["ok"], f"resolution {m} disagrees with history"
            wft.outcomes[m["seq"]] = m["ok"]

    def outcomes_of(self, wid: str) -> dict[str, int]:
        """The heartbeat's `outcomes`, with resolutions still held for the worker counted
        as received (as `SchedulerService.heartbeat` counts them)."""
        counts = {wft.task_id: wft.received for wft in self.procs[wid].wfts.values()}
        for entries in self.d.held.values():
            for _, _, fx in entries:
                wft_id = fx.message.get("workflow_task_id")
                if fx.worker_id == wid and fx.message["kind"] == "resolution" and wft_id in counts:
                    counts[wft_id] += 1
        return counts

    def registered(self, wid: str) -> bool:
        w = self.engine.workers.get(wid)
        return w is not None and w.alive

    def register(self, proc: WorkerProcess) -> None:
        cfg = proc.config
        self.d.silent.discard(proc.wid)
        old = self.engine.workers.get(proc.wid)
        retired = old is not None and not old.usable and old.lost_reason in PERMANENT_LOSSES
        with pytest.raises(WorkerRetired) if retired else contextlib.nullcontext():
            # A worker lost for good (its pod is gone) never registers again.
            self._register(proc, cfg)

    def _register(self, proc: WorkerProcess, cfg: WorkerConfig) -> None:
        self.call(
            self.engine.register_worker(
                {
                    "worker_id": proc.wid,
                    "pod": proc.wid,
                    "node": cfg.node,
                    "pool": WORKER_POOL.get(proc.wid, ""),
                    "namespace": WORKER_NAMESPACE.get(proc.wid, "a"),
                    "incarnation": str(proc.incarnation),
                    "workflows": [{"name": n, "sticky": s} for n, s in WORKFLOWS.items()]
                    if cfg.serves_workflows
                    else [],
                    "activities": [{"name": a} for a in ACTIVITIES],
                    "slots": cfg.slots,
                    "session_capacity": cfg.capacity,
                },
                self.d.now,
            )
        )
        # The reporter sends again what the scheduler has not acknowledged.
        for tid, report in sorted(proc.unacked.items()):
            self.report(proc, tid, report)
        if proc.draining:
            self.drain(proc, "ProcessExited", own=True)  # a new scheduler hears it again

    def undelivered(self, wid: str) -> set[str]:
        """Tasks held back for `wid` until their history is written (the host knows them)."""
        epoch = self.d.epochs.get(wid, 0)
        return {
            fx.message["task_id"]
            for entries in self.d.held.values()
            for _, e, fx in entries
            if fx.worker_id == wid and e == epoch and fx.message["kind"] in ("activity", "workflow")
        }

    def drain(self, proc: WorkerProcess, reason: str, *, own: bool) -> None:
        """`proc`'s pod terminates (the controller reports it) or the process itself got
        SIGTERM (`own`: it lists what it holds, and starts nothing new from now on)."""
        w = self.engine.workers.get(proc.wid)
        if w is None:
            return
        unstarted = self.undelivered(proc.wid)
        if w.alive and not w.draining and proc.activities:
            event("a worker drains while it runs attempts")
        if own:
            proc.draining = True
            proc.wfts.clear()  # the SDK cancels its workflow instances
            if w.alive:
                held = proc.held()
                unstarted |= {t for t in (*w.running, *w.workflow_tasks) if t not in held}
        self.call(self.engine.worker_draining(proc.wid, reason, "test", self.d.now, unstarted))

    def progress(self, proc: WorkerProcess, wft: WorkflowTaskState) -> None:
        """The SDK runs the workflow code as far as it can and sends the new commands."""
        cmds = self.scripts[wft.run_id].commands(wft.run_id, wft.session_id, wft.outcomes)
        new = cmds[wft.sent :]
        if not new:
            return
        try:
            fx = self.engine.workflow_commands(
                proc.wid, wft.run_id, wft.task_id, [command_from_wire(c) for c in new], self.d.now
            )
        except UnknownWorker:
            assert not self.registered(proc.wid)
            proc.wfts.clear()  # the scheduler forgot us: the workflow tasks are gone
            return
        wft.sent = len(cmds)
        self.call(fx)

    def talking(self, wid: str) -> bool:
        return wid not in self.d.silent

    # ------------------------------------------------------------------ rules

    @rule(i=st.sampled_from(range(len(POOL))), restart=st.booleans())
    def register_worker(self, i: int, restart: bool) -> None:
        """A worker (re)registers: a new process (restart) or the same one after a 404."""
        proc = self.procs[POOL[i]]
        if restart:
            proc.incarnation += 1
            proc.forget_everything()
        elif self.registered(proc.wid) and self.talking(proc.wid):
            return  # nothing to do: it is registered and heartbeating
        elif not self.registered(proc.wid):
            proc.wfts.clear()  # the scheduler forgot this process: its workflow tasks too
        self.register(proc)

    @precondition(lambda self: len(self.run_ids) < MAX_RUNS)
    @rule(
        workflow=st.sampled_from(sorted(WORKFLOWS)),
        sticky=st.sampled_from([None, None, "SOFT", "HARD"]),
        schedule_timeout=st.sampled_from([None, 2.0, 10.0, 60.0]),
        script=scripts(),
        pool=st.sampled_from([None, None, "p"]),
        namespace=st.sampled_from(["a", "a", "b"]),
    )
    def start_run(
        self,
        workflow: str,
        sticky: str | None,
        schedule_timeout: float | None,
        script: Script,
        pool: str | None,
        namespace: str,
    ) -> None:
        rid = f"r{self.started}"
        self.started += 1
        req: dict[str, Any] = {
            "run_id": rid,
            "workflow": workflow,
            "input": {"n": rid},
            "namespace": namespace,
        }
        if namespace == "b":
            pool = None  # pool "p" is namespace a's
        if sticky is not None:
            req["sticky"] = sticky
        if schedule_timeout is not None:
            req["schedule_timeout"] = schedule_timeout
        if pool is not None:
            req["worker_pool"] = pool
        self.scripts[rid] = script
        self.run_ids.append(rid)
        got, fx = self.engine.start_run(req, self.d.now)
        assert got == rid
        self.call(fx)

    @rule(pick=st.integers(0, 15))
    def workflow_code_runs(self, pick: int) -> None:
        busy = [
            (proc, wft)
            for proc in self.procs.values()
            if self.talking(proc.wid)
            for wft in sorted(proc.wfts.values(), key=lambda t: t.run_id)
        ]
        if busy:
            self.progress(*busy[pick % len(busy)])

    @rule(
        pick=st.integers(0, 15),
        outcome=st.sampled_from(
            ["complete", "complete", "retryable", "KeyError", "non_retryable", "heartbeat"]
        ),
        late=st.booleans(),
    )
    def activity_reports(self, pick: int, outcome: str, late: bool) -> None:
        """A worker reports on an attempt it holds (late: one cancelled or abandoned)."""
        held_by = [
            (proc, tid)
            for proc in self.procs.values()
            if self.talking(proc.wid)
            for tid in sorted(proc.stale if late else proc.activities)
        ]
        if not held_by:
            return
        proc, tid = held_by[pick % len(held_by)]
        held = proc.stale if late else proc.activities
        task = held[tid]
        now = self.d.now
        if outcome == "heartbeat":
            alive, fx = self.engine.activity_heartbeat(proc.wid, tid, {"at": now}, now)
            self.call(fx)
            if not alive:
                proc.stale.pop(tid, None)
                proc.activities.pop(tid, None)
            return
        held.pop(tid)
        err: dict[str, Any] | None = None
        if outcome != "complete":
            err = {"type": "ValueError", "message": "boom"}
            if outcome == "KeyError":
                err["type"] = "KeyError"
            elif outcome == "non_retryable":
                err["non_retryable"] = True
        self.report(proc, tid, Report(task, err, mark=0, accepted=False))

    @rule(i=st.sampled_from(range(len(POOL))), reason=st.sampled_from(LOSS_REASONS))
    def worker_lost(self, i: int, reason: str) -> None:
        proc = self.procs[POOL[i]]
        if proc.wid not in self.engine.workers:
            try:
                self.engine.worker_lost(proc.wid, reason, "", self.d.now)
            except UnknownWorker:
                return
            raise AssertionError("worker_lost of an unknown worker must raise UnknownWorker")
        proc.forget_everything()  # the process (or its pod) is gone
        self.d.silent.discard(proc.wid)
        self.call(self.engine.worker_lost(proc.wid, reason, "test", self.d.now))

    @rule(
        i=st.sampled_from(range(len(POOL))),
        reason=st.sampled_from(LOSS_REASONS),
        own=st.booleans(),
    )
    def worker_drains(self, i: int, reason: str, own: bool) -> None:
        """The pod starts terminating (the controller says why), or the worker process
        got SIGTERM and says so itself (ProcessExited, with the tasks it holds)."""
        proc = self.procs[POOL[i]]
        if proc.wid not in self.engine.workers or not self.talking(proc.wid):
            return
        self.drain(proc, "ProcessExited" if own else reason, own=own)

    @precondition(lambda self: any(p.activities and not p.draining for p in self.procs.values()))
    @rule(pick=st.integers(0, 3), reason=st.sampled_from(LOSS_REASONS), own=st.booleans())
    def busy_worker_drains(self, pick: int, reason: str, own: bool) -> None:
        """As `worker_drains`, for a worker that runs attempts."""
        running = [p for p in self.procs.values() if p.activities and not p.draining]
        proc = running[pick % len(running)]
        if proc.wid not in self.engine.workers or not self.talking(proc.wid):
            return
        self.drain(proc, "ProcessExited" if own else reason, own=own)

    @rule(i=st.sampled_from(range(len(POOL))))
    def container_restarts(self, i: int) -> None:
        """The same pod comes straight back with a new process (a HARD session may stay)."""
        proc = self.procs[POOL[i]]
        proc.incarnation += 1
        proc.forget_everything()
        self.register(proc)

    @rule(i=st.sampled_from(range(len(POOL))))
    def worker_goes_silent(self, i: int) -> None:
        """Partitioned: no heartbeats, no reports, but the process keeps its tasks."""
        self.d.silent.add(POOL[i])

    @rule(pick=st.integers(0, 15), workflow_task=st.booleans())
    def message_lost(self, pick: int, workflow_task: bool) -> None:
        """A task never reaches the live worker it was sent to (a connection dropped it)."""
        lost = [
            (proc, key)
            for proc in self.procs.values()
            for key in sorted(proc.wfts if workflow_task else proc.activities)
        ]
        if lost:
            proc, key = lost[pick % len(lost)]
            (proc.wfts if workflow_task else proc.activities).pop(key)

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 40.0]))
    def time_passes(self, seconds: float) -> None:
        self.write_all()  # a write takes milliseconds, not a tick
        self.d.now += seconds
        for wid, w in list(self.engine.workers.items()):
            if w.alive and self.talking(wid):
                # The heartbeat lists what the process holds: what it lost is sent again.
                held, outcomes = self.procs[wid].held(), self.outcomes_of(wid)
                self.call(self.engine.worker_holds(wid, held, self.d.now, outcomes))
        self.call(self.engine.advance(self.d.now))

    @precondition(lambda self: bool(self.run_ids))
    @rule(pick=st.integers(0, MAX_RUNS - 1))
    def cancel_run(self, pick: int) -> None:
        rid = self.run_ids[pick % len(self.run_ids)]
        self.call(self.engine.cancel_run(rid, self.d.now))
        assert self.engine.is_terminal(rid)

    @precondition(lambda self: bool(self.run_ids))
    @rule(pick=st.integers(0, MAX_RUNS - 1))
    def store_writes(self, pick: int) -> None:
        """The store finishes writing one run's history."""
        self.write(self.run_ids[pick % len(self.run_ids)])

    @precondition(lambda self: bool(self.run_ids))
    @rule(mid_write=st.integers(0, 2**12 - 1))
    def scheduler_restarts(self, mid_write: int) -> None:
        """The scheduler dies; a new one restores every run from what the store holds.
        Workers keep running their attempts and must re-register. `mid_write` picks runs
        whose pending history the store wrote just before the crash (bit i: run i): a
        parent's and its child's histories are written apart, so one may be stored
        without the other."""
        for i, rid in enumerate(self.run_ids[:12]):
            if mid_write >> i & 1:
                self.d.write(rid)
        old = self.engine
        self.restarts += 1
        self.views.clear()  # a new engine: the scheduler's ETags carry a new incarnation
        whole = all(self.d.written.get(rid, 0) == len(self.d.stored[rid]) for rid in self.run_ids)
        self.d.crash()
        self._note_torn_children()
        for rid in [rid for rid in self.run_ids if not self.d.stored[rid]]:
            # Its start was never acknowledged: the client starts it again, or not.
            self.run_ids.remove(rid)
            del self.d.stored[rid]
            self.phases.pop(rid, None)
        fresh = Engine(EngineConfig(require_registered_workflows=False))
        fx: list[Effect] = []
        n_stored = {rid: len(self.d.stored[rid]) for rid in self.run_ids}
        for rid in self.run_ids:
            fx += fresh.restore(rid, json.loads(json.dumps(self.d.stored[rid])), self.d.now)
        self.d.engine = fresh
        self.call(fx)
        for rid in self.run_ids:
            live, back = old.runs[rid], fresh.runs[rid]
            assert back.history[: n_stored[rid]] == self.d.stored[rid][: n_stored[rid]]
            extra = self.d.stored[rid][n_stored[rid] :]
            for ev in extra:
                assert ev["type"] in ("SessionBroken", "ActivityFailed"), ev
                assert "SchedulerRestarted" in json.dumps(ev), ev
            if whole and live.terminal:
                assert not extra
                assert fresh.run_view(rid) == old.run_view(rid)
            elif whole:
                assert normalised_view(fresh.run_view(rid)) == normalised_view(old.run_view(rid))
            # What was not written is undone (it was not acknowledged either).
            self.phases[rid] = back.phase
        for proc in self.procs.values():
            # The old scheduler's workflow tasks are gone; attempts keep running.
            proc.wfts.clear()
        self.d.silent.clear()

    def _note_torn_children(self) -> None:
        """Tell hypothesis when a crash stored a parent and its child apart."""
        stored = self.d.stored
        for evs in stored.values():
            for ev in evs:
                if ev["type"] != "ChildStarted":
                    continue
                seq, cid = ev["data"]["seq"], ev["data"]["child_run_id"]
                told = any(
                    e["type"] in ("ChildCompleted", "ChildFailed") and e["data"]["seq"] == seq
                    for e in evs
                )
                if not stored.get(cid):
                    event("a crash stored a parent's ChildStarted without the child")
                elif not told and any(e["type"] in TERMINAL_EVENTS for e in stored[cid]):
                    event("a crash stored a child's end without its parent's")

    @precondition(lambda self: any(not r.terminal for r in self.engine.runs.values()))
    @rule(drains=st.sampled_from([None, None, "ProcessExited", "PodDeleted", "NodeLost"]))
    def settle(self, drains: str | None) -> None:
        """Liveness: a big healthy worker, no more losses, everything completes, time passes.
        With `drains`, the first worker found running attempts starts draining for that
        reason (its own SIGTERM for ProcessExited) and finishes them meanwhile."""
        for wid in ("big", "big-p", "big-b"):
            big = self.procs.setdefault(
                wid, WorkerProcess(wid, WorkerConfig("n0", 50, 50, serves_workflows=True))
            )
            if not self.registered(wid):
                self.register(big)
        self.d.silent.clear()
        for _ in range(400):
            if all(r.terminal for r in self.engine.runs.values()):
                break
            busy = [p for p in self.procs.values() if p.activities and self.registered(p.wid)]
            if drains is not None and busy and not busy[0].wid.startswith("big"):
                event("a worker drains while it runs attempts, then settles")
                self.drain(busy[0], drains, own=drains == "ProcessExited")
                self.check()  # 10: what it runs is still its own
                drains = None
            for proc in list(self.procs.values()):
                if not self.registered(proc.wid):
                    continue
                for tid in sorted(proc.activities):
                    task = proc.activities.pop(tid)
                    self.report(proc, tid, Report(task, None, mark=0, accepted=False))
                for wft in sorted(proc.wfts.values(), key=lambda t: t.run_id):
                    self.progress(proc, wft)
            self.check()
            self.time_passes(1.0)
        stuck = {
            rid: (r.phase, {sid: (s.state, s.worker) for sid, s in r.sessions.items()})
            for rid, r in self.engine.runs.items()
            if not r.terminal
        }
        assert not stuck, f"runs never finished: {stuck}"

    # ------------------------------------------------------------------ invariants

    @invariant()
    def check(self) -> None:
        eng = self.engine
        assert set(eng.runs) == set(self.run_ids)
        for rid, run in eng.runs.items():
            # 12: a run's view changes only when its version (its ETag) does.
            version, view = eng.run_version(rid), eng.run_view(rid)
            if rid in self.views and self.views[rid][0] == version:
                assert view == self.views[rid][1], f"{rid}'s view changed at version {version}"
            self.views[rid] = (version, view)
            check_run(eng, self.d.stored[rid], run)
            prev = self.phases.get(rid)
            if prev in TERMINAL_PHASES:
                assert run.phase == prev, f"{rid} went from {prev} to {run.phase}"
            elif run.terminal and run.error and run.error.get("reason") == "SessionBroken":
                # 7: a HARD run fails on schedule timeout only if its worker stayed away.
                m = _HARD_TIMEOUT.search(run.error.get("message", ""))
                if m is not None:
                    w = eng.workers.get(m.group(2))
                    assert w is None or not w.usable, (
                        f"{rid} failed ({run.error['message']}) although worker "
                        f"{m.group(2)} is back"
                    )
            self.phases[rid] = run.phase
        check_engine(eng)
        # 10: an attempt a draining worker still runs is not dispatched again meanwhile.
        for proc in self.procs.values():
            w = eng.workers.get(proc.wid)
            if w is None or not w.alive or not w.draining:
                continue
            cancels = {
                fx.message["task_id"]
                for entries in self.d.held.values()
                for _, _, fx in entries
                if fx.worker_id == proc.wid and fx.message["kind"] == "cancel"
            }
            for tid in proc.activities:
                task = eng.tasks.get(tid)
                if task is None and (tid in cancels or eng.runs[tid.split("/")[0]].terminal):
                    continue  # cancelled: the worker is told once the history is written
                assert task is not None, f"{tid} runs on draining {proc.wid}; the engine dropped it"
                assert task.worker_id == proc.wid, f"{tid} runs on {proc.wid} and elsewhere"
        for pool, demand in eng.demand().items():
            for wid in demand.workers:
                assert eng.workers[wid].alive
                assert eng.workers[wid].pool == pool
        # 8: an acknowledged completion is the step's result for good.
        for (rid, seq), attempt in self.acknowledged.items():
            if rid not in eng.runs:
                continue
            stored = self.d.stored[rid]
            assert any(
                ev["type"] == "ActivityCompleted"
                and ev["data"]["seq"] == seq
                and ev["data"]["attempt"] == attempt
                for ev in stored
            ), f"{rid}: acknowledged completion of seq {seq} (attempt {attempt}) was lost"
            again = [
                ev["data"]["attempt"]
                for ev in stored
                if ev["type"] == "ActivityStarted"
                and ev["data"]["seq"] == seq
                and ev["data"]["attempt"] > attempt
            ]
            assert not again, f"{rid}: seq {seq} ran again (attempts {again}) after acknowledgement"


EngineMachine.TestCase.settings = PROPERTY_SETTINGS
TestEngineProperties = EngineMachine.TestCase


# ---------------------------------------------------------------------------- regressions
#
# Minimal examples of engine bugs the state machine found (shrunk by hypothesis, then
# written out by hand). They are plain tests on purpose: they fail until the engine
# is fixed.


def test_ending_a_run_after_its_workflow_worker_was_lost() -> None:
    """Regression (found by EngineMachine, fixed in cb0a7a8): `_lose_worker` popped the
    lost worker's workflow tasks from `Engine.tasks` but left them in `tasks_of_run`,
    so `_finish_run` hit a KeyError on the stale id. Through `workflow_commands` the
    KeyError was swallowed half-way: the run Succeeded but RunEnded was never emitted,
    its sessions stayed Open and held, its workflow task stayed live, and its queued
    activities were dispatched after the run ended."""
    d = HostDriver()
    d.register("w1")
    d.start(run_id="r")
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1, "a", None), {**open_session(2, "r/s2"), "strategy": "SOFT"})
    d.commands("w1", wft, act(3, "a", "r/s2"))
    d.register("w2")
    d.lose("w1")
    wft2 = d.workflow_task("w2")
    d.take("w2")
    fx = d.engine.workflow_commands("w2", "r", wft2["task_id"], [command_from_wire(done(4))], d.now)
    d.apply(fx)
    assert d.engine.run_view("r")["phase"] == "Succeeded"
    assert RunEnded("r") in fx
    assert not [m for m in d.take("w2") if m["kind"] in ("activity", "workflow")]
    assert not [t for t in d.engine.tasks.values() if t.run_id == "r"]
    assert {s["state"] for s in d.engine.run_view("r")["sessions"]} == {"Closed"}
    assert d.engine.workers["w2"].sessions == set()


def test_cancelling_a_run_after_its_workflow_worker_was_lost() -> None:
    """Regression (same root cause as above): `cancel_run` raised KeyError('r/wf/1')."""
    d = HostDriver()
    d.register("w1")
    d.start(run_id="r")
    d.workflow_task("w1")
    d.register("w2")
    d.lose("w1")
    d.apply(d.engine.cancel_run("r", d.now))
    assert d.engine.run_view("r")["phase"] == "Cancelled"


def test_a_restored_broken_hard_session_still_times_out() -> None:
    """ENGINE BUG (found by EngineMachine, `settle`): `Engine.restore` arms the HARD
    deadline only for sessions that were Open; a HARD session already Broken when the
    scheduler restarts never times out, so its run waits forever (shrunk: a hard-wf run
    whose worker is gone, two scheduler restarts)."""
    d = HostDriver()
    d.register("w1", workflows={"hard-wf": "HARD"})
    d.start("hard-wf", run_id="r", schedule_timeout=5)
    d.workflow_task("w1")
    d.lose("w1", "ProcessExited")  # the HARD workflow session is Broken, waiting for w1
    fresh = HostDriver(now=d.now)
    fresh.apply(fresh.engine.restore("r", d.stored["r"], d.now))
    fresh.tick(6)
    view = fresh.view("r")
    assert (view["phase"], (view["error"] or {}).get("reason")) == ("Failed", "SessionBroken")


def test_restore_keeps_the_capacity_reserved_by_a_broken_hard_session() -> None:
    """ENGINE BUG (found by EngineMachine): a broken HARD session reserves a session slot
    on its worker, but `Engine.restore` does not recreate that reservation. When the
    worker registers again, another session takes the slot and the HARD session then
    rebinds on top of it: 2 sessions on a worker with sessionCapacity=1."""
    d = HostDriver()
    d.register("host", activities=(), workflows={"wf": None})
    d.register("w1", workflows={}, slots=2, capacity=1)
    d.start(run_id="a")
    wa = d.workflow_task("host")
    d.commands("host", wa, open_session(1, "a/s1", "HARD"), act(2, "a", "a/s1"))
    d.take_one("w1", "activity")
    d.lose("w1", "ProcessExited")  # a/s1 is Broken and keeps w1's only session slot
    d.start(run_id="b")
    wb = d.workflow_task("host")
    d.commands("host", wb, open_session(1, "b/s1", "SOFT"), act(2, "a", "b/s1"))
    fresh = HostDriver(now=d.now)
    for rid in ("b", "a"):
        fresh.apply(fresh.engine.restore(rid, d.stored[rid], d.now))
    fresh.register("w1", workflows={}, slots=2, capacity=1, incarnation="2")
    w = fresh.engine.workers["w1"]
    assert len(w.sessions) <= w.session_capacity, sorted(w.sessions)


def test_an_idle_hard_session_survives_a_container_restart() -> None:
    """ENGINE BUG (found by invariant 7): a HARD session whose worker restarts while the
    session is idle stays Broken after the same pod registers again (nothing rebinds
    it), so the run fails with SessionBroken "did not come back within scheduleTimeout"
    although the pod came back at once. DESIGN.md: the run waits for the same pod to
    come back; it fails only if the pod is deleted or the timeout passes."""
    d = HostDriver()
    d.register("host", activities=())
    d.register("w1", workflows={})
    d.start(run_id="r", schedule_timeout=5)
    wft = d.workflow_task("host")
    d.commands("host", wft, open_session(1, "r/s1", "HARD"), act(2, "a", "r/s1"))
    d.complete("w1", d.take_one("w1", "activity"))
    d.commands("host", wft, {"type": "start_timer", "seq": 3, "seconds": 30})
    d.register("w1", workflows={}, incarnation="2")  # container restart, same pod
    d.tick(6)
    assert d.view("r")["phase"] == "Running", d.view("r")["error"]
