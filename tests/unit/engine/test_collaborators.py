"""The engine's collaborators work on the state they are handed, and nothing else."""

from __future__ import annotations

import gc
import weakref

from tether_operator.engine import Engine, Persist
from tether_operator.engine.deadlines import DeadlineKind
from tether_operator.engine.effects import Outbox
from tether_operator.engine.retry import Retries
from tether_operator.engine.runs import Run, event
from tether_operator.engine.state import EngineState
from tether_operator.engine.tasks import Tasks
from tether_operator.engine.timeouts import _HANDLERS
from tether_types.notices import Notice

from .driver import Driver, act


def started_run(state: EngineState, out: Outbox) -> Run:
    run = Run.started(event("RunStarted", 0.0, run_id="r", workflow="wf", input=None))
    state.runs["r"] = run
    out.persist("r", run.history[0])
    return run


def test_the_outbox_persists_history_ahead_of_other_effects() -> None:
    state, out = EngineState(), Outbox()
    out.begin(5.0)
    run = started_run(state, out)
    out.notice("r", "Normal", "RunStarted", "run r started")
    out.record(run, "TimerStarted", seq=1, fire_at=6.0)
    fx = out.drain()
    assert [type(f) for f in fx] == [Persist, Notice]
    assert isinstance(fx[0], Persist)
    assert [e["type"] for e in fx[0].events] == ["RunStarted", "TimerStarted"]
    assert fx[0].events[1]["time"] == 5.0
    assert run.timers[1].fire_at == 6.0  # recorded events are folded into the run
    assert out.drain() == []


def test_retries_back_off_then_give_up_with_only_their_inputs() -> None:
    state, out = EngineState(), Outbox()
    tasks = Tasks(state, out)
    retries = Retries(state, out, tasks)
    out.begin(10.0)
    run = started_run(state, out)
    policy = {"max_attempts": 2, "initial_interval": 3.0}
    out.record(run, "ActivityScheduled", seq=1, activity="a", options={"retry": policy})
    for attempt in (1, 2):
        tasks.enqueue_activity(run, run.activities[1])
        tid = f"r/1/{attempt}"
        out.record(run, "ActivityStarted", seq=1, task_id=tid, attempt=attempt, worker="w")
        retries.attempt_failed(state.tasks[tid], {"type": "ValueError"}, immediate=False)
        if attempt == 1:
            assert run.activities[1].state == "Backoff"
            due = state.deadlines.pop_due(13.0)
            assert due is not None
            assert (due.kind, due.key, due.token) == (DeadlineKind.RETRY, ("r", "1"), 1)
    assert run.activities[1].state == "Failed"
    assert not state.tasks
    assert not state.pending_activities
    assert len(state.deadlines) == 0


def test_every_deadline_kind_has_a_handler() -> None:
    assert set(_HANDLERS) == set(DeadlineKind)


def test_an_engine_is_freed_without_the_cycle_collector() -> None:
    # A reference cycle would keep every run and history alive until a full collection,
    # which made the engine measurably slower under load.
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1, start_to_close_timeout=5.0))
    assert any(isinstance(m, dict) for m in d.inbox["w1"])
    assert d.view(rid)["phase"] == "Running"
    gc.disable()
    try:
        engine: Engine = d.engine
        refs = [weakref.ref(engine), weakref.ref(engine.deadlines)]  # the state is slotted
        del d, engine
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
