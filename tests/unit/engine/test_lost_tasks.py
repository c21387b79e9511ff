"""A task a live worker never received (a dropped message) is sent again, never left hanging."""

from __future__ import annotations

from typing import Any

import pytest

from tether_operator.engine import UnknownWorker

from .driver import Driver, act, done, open_session


def beat(d: Driver, wid: str, held: set[str], seconds: float = 0.25) -> None:
    d.now += seconds
    d.apply(d.engine.worker_holds(wid, held, d.now))


def test_an_activity_left_out_of_two_heartbeats_is_retried_at_once() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    lost = d.take_one("w1", "activity")  # the worker never gets it
    beat(d, "w1", {wft["task_id"]})
    assert d.take("w1") == []  # one heartbeat may race the delivery: no verdict yet
    beat(d, "w1", {wft["task_id"]})
    cancel = d.take_one("w1", "cancel")
    assert (cancel["task_id"], cancel["reason"]) == (lost["task_id"], "TaskLost")
    again = d.take_one("w1", "activity")
    assert (again["seq"], again["attempt"]) == (1, 2)
    failed = [ev for ev in d.stored[rid] if ev["type"] == "ActivityFailed"]
    assert failed[-1]["data"]["error"]["reason"] == "TaskLost"
    assert failed[-1]["data"]["retry_at"] == failed[-1]["time"]
    assert any(n.reason == "TaskLost" for n in d.notices)
    d.complete("w1", again, 7)
    d.take_one("w1", "resolution")
    d.commands("w1", wft, done(2, "ok"))
    assert d.view(rid)["phase"] == "Succeeded"


def test_a_listed_task_or_one_just_sent_is_left_alone() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    for _ in range(5):
        beat(d, "w1", {wft["task_id"], task["task_id"]})
    assert d.take("w1") == []
    # Sent a moment ago: a heartbeat that left it out may have been on its way already.
    d.commands("w1", wft, act(2))
    beat(d, "w1", {wft["task_id"], task["task_id"]}, seconds=0.01)
    beat(d, "w1", {wft["task_id"], task["task_id"]}, seconds=0.01)
    assert [m["kind"] for m in d.take("w1")] == ["activity"]


def test_a_task_that_shows_up_again_clears_the_suspicion() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    beat(d, "w1", {wft["task_id"]})
    beat(d, "w1", {wft["task_id"], task["task_id"]})
    beat(d, "w1", {wft["task_id"]})
    assert d.take("w1") == []


def test_a_lost_workflow_task_is_replayed_on_the_session_worker() -> None:
    d = Driver()
    d.register("w1", workflows={"wf": "HARD"})
    d.register("w2", workflows={"wf": "HARD"})
    rid = d.start()
    first = d.workflow_task("w1")
    d.commands("w1", first, open_session(1, f"{rid}/s1", "HARD"))
    beat(d, "w1", set())
    beat(d, "w1", set())
    assert d.take_one("w1", "cancel")["task_id"] == first["task_id"]
    again = d.workflow_task("w1")  # the HARD workflow session never moves
    assert again["task_id"] != first["task_id"]
    assert [ev["type"] for ev in again["history"]][-2:] == [
        "WorkflowTaskLost",
        "WorkflowTaskStarted",
    ]
    assert d.take("w2") == []
    # Commands of the replaced workflow task are ignored.
    d.commands("w1", first, done(2, "stale"))
    assert d.view(rid)["phase"] == "Running"


def test_holds_from_an_unknown_worker_must_register_again() -> None:
    d = Driver()
    with pytest.raises(UnknownWorker):
        d.engine.worker_holds("ghost", set(), d.now)


def beat_counting(
    d: Driver, wid: str, held: set[str], outcomes: dict[str, int], seconds: float = 0.25
) -> None:
    d.now += seconds
    d.apply(d.engine.worker_holds(wid, held, d.now, outcomes))


def step_one_resolved(d: Driver) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """A run on `w1` whose step 1 completed; its resolution was taken from the mailbox.
    Returns the run id, the workflow task and the activity task."""
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    d.complete("w1", task, 7)
    d.take_one("w1", "resolution")
    return rid, wft, task


def test_a_workflow_task_that_lost_an_outcome_is_replayed() -> None:
    """The resolution of step 1 was cut off on its way (a closed connection): the
    workflow code would wait for it forever. Its count stays short, so it is replayed."""
    d = Driver()
    rid, wft, _ = step_one_resolved(d)  # the resolution is lost on the way
    held = {wft["task_id"]}
    beat_counting(d, "w1", held, {wft["task_id"]: 0})
    assert d.take("w1") == []  # one heartbeat may race the delivery: no verdict yet
    beat_counting(d, "w1", held, {wft["task_id"]: 0})
    cancel = d.take_one("w1", "cancel")
    assert (cancel["task_id"], cancel["reason"]) == (wft["task_id"], "TaskLost")
    replay = d.workflow_task("w1")
    assert replay["task_id"] != wft["task_id"]
    assert any(ev["type"] == "ActivityCompleted" for ev in replay["history"])
    (notice,) = [n for n in d.notices if n.reason == "TaskLost"]
    assert "got 0 of the 1 outcomes sent to workflow task" in notice.message
    d.commands("w1", replay, done(2, "ok"))
    assert d.view(rid)["phase"] == "Succeeded"


def test_a_workflow_task_with_every_outcome_or_no_count_is_left_alone() -> None:
    d = Driver()
    _, wft, task = step_one_resolved(d)
    held = {wft["task_id"], task["task_id"]}
    for _ in range(3):
        beat_counting(d, "w1", held, {wft["task_id"]: 1})
        beat_counting(d, "w1", held, {})  # an instance that ended: only its commands wait
        beat(d, "w1", held)  # a worker that does not count
    assert d.take("w1") == []


def test_outcomes_still_on_their_way_at_every_heartbeat_are_no_loss() -> None:
    """A busy workflow task: each heartbeat counts one outcome short (the newest is on
    its way), but every outcome sent before the previous heartbeat has arrived."""
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    for seq in range(1, 6):
        d.commands("w1", wft, act(seq))
        task = d.take_one("w1", "activity")
        d.complete("w1", task, seq)
        d.take_one("w1", "resolution")  # taken, still on its way at the next heartbeat
        beat_counting(d, "w1", {wft["task_id"]}, {wft["task_id"]: seq - 1})
    assert not any(n.reason == "TaskLost" for n in d.notices)
