"""A scheduler restart (`Engine.restore`) loses no work a returning worker still holds."""

from __future__ import annotations

from typing import Any

from tether_operator.engine import EngineConfig

from .driver import Driver, act, done, open_session

GRACE = EngineConfig().restart_grace


def restarted(d: Driver) -> Driver:
    """A new engine rebuilt from everything `d` stored, at the same time."""
    fresh = Driver(now=d.now)
    for rid, events in d.stored.items():
        fresh.apply(fresh.engine.restore(rid, list(events), d.now))
    return fresh


def session_run(d: Driver, strategy: str) -> tuple[str, str, dict[str, Any]]:
    """A run whose session is bound to w1 and runs its first activity there."""
    d.register("wf-host", activities=())
    d.register("w1", workflows={})
    d.register("w2", workflows={})
    rid = d.start(schedule_timeout=30)
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid, strategy), act(2, "load", sid))
    task = d.take_one("w1", "activity")  # equal workers: the first in id order
    return rid, sid, task


def test_a_completion_resent_after_a_restart_is_accepted() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    fresh = restarted(d)
    assert fresh.view(rid)["activities"][0]["state"] == "Running"
    fresh.register("w1")  # the same process registers again after a 404
    wft2 = fresh.workflow_task("w1")
    assert wft2["attempt"] == 2  # workflow tasks are replayed
    fresh.commands("w1", wft2, act(1))  # the replay sends the step again: nothing new
    assert fresh.take("w1", "activity") == []
    fresh.holds("w1", task["task_id"], wft2["task_id"])
    fresh.complete("w1", task, "done")
    (resolution,) = fresh.take("w1", "resolution")
    assert (resolution["seq"], resolution["result"]) == (1, "done")
    fresh.commands("w1", wft2, done(2, "ok"))
    view = fresh.view(rid)
    assert view["phase"] == "Succeeded"
    assert [a["attempt"] for a in view["activities"][0]["attempts"]] == [1]


def test_commands_of_a_workflow_task_from_before_the_restart_are_ignored() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    fresh = restarted(d)
    fresh.register("w1")
    fresh.commands("w1", wft, act(1), done(2, "stale"))
    assert fresh.take("w1", "activity") == []
    assert fresh.view(rid)["phase"] == "Running"
    wft2 = fresh.workflow_task("w1")
    fresh.commands("w1", wft2, done(1, "fresh"))
    assert fresh.view(rid)["result"] == "fresh"


def test_a_returning_worker_that_lost_the_attempt_gets_it_again() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    d.take_one("w1", "activity")
    fresh = restarted(d)
    fresh.register("w1", incarnation="2")  # a new process: it holds nothing
    interval = fresh.engine.config.worker_heartbeat_interval
    for _ in range(3):
        fresh.now += interval
        fresh.holds("w1")
    again = fresh.take_one("w1", "activity")
    assert again["attempt"] == 2
    assert any(n.reason == "TaskLost" for n in fresh.notices)


def test_a_worker_that_does_not_come_back_in_time_has_its_attempts_retried() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    fresh = restarted(d)
    fresh.register("w2")
    fresh.tick(GRACE / 2)
    assert fresh.take("w2", "activity") == []  # still w1's
    fresh.tick(GRACE / 2)
    retried = fresh.take_one("w2", "activity")
    assert retried["attempt"] == 2
    failed = [e for e in fresh.run(rid).history if e["type"] == "ActivityFailed"]
    assert failed[-1]["data"]["error"]["reason"] == "SchedulerRestarted"
    assert failed[-1]["data"]["retry_at"] == fresh.now
    (notice,) = [n for n in fresh.notices if n.reason == "WorkerLost"]
    assert f"within {GRACE:g}s of the scheduler restart" in notice.message
    assert "1 activity attempt retried" in notice.message
    fresh.register("w1")  # too late: its completion of the old attempt is void
    fresh.complete("w1", task, "late")
    assert fresh.view(rid)["activities"][0]["state"] == "Running"


def test_a_soft_session_keeps_its_worker_across_a_restart() -> None:
    d = Driver()
    rid, sid, task = session_run(d, "SOFT")
    d.complete("w1", task)
    fresh = restarted(d)
    fresh.register("wf-host", activities=())
    fresh.register("w2", workflows={})
    wft2 = fresh.workflow_task("wf-host")
    fresh.commands("wf-host", wft2, open_session(1, sid, "SOFT"), act(2, "load", sid))
    fresh.commands("wf-host", wft2, act(3, "predict", sid))
    assert fresh.take("w2", "activity") == []  # waits for the session's worker
    fresh.tick(GRACE / 2)
    fresh.register("w1", workflows={})
    t = fresh.take_one("w1", "activity")
    assert (t["seq"], t["cold_start"]) == (3, False)  # the model is still loaded
    s = fresh.view(rid)["sessions"][0]
    assert (s["state"], s["workers"], s["breaks"]) == ("Open", ["w1"], [])


def test_a_soft_session_whose_worker_stays_away_breaks_and_moves() -> None:
    d = Driver()
    rid, *_ = session_run(d, "SOFT")
    fresh = restarted(d)
    fresh.register("wf-host", activities=())
    fresh.register("w2", workflows={})
    fresh.tick(GRACE)
    moved = fresh.take_one("w2", "activity")
    assert (moved["attempt"], moved["cold_start"]) == (2, True)
    s = fresh.view(rid)["sessions"][0]
    assert (s["state"], s["worker"]) == ("Open", "w2")
    assert [b["reason"] for b in s["breaks"]] == ["SchedulerRestarted"]


def test_a_hard_session_whose_worker_stays_away_keeps_the_hard_rules() -> None:
    d = Driver()
    rid, *_ = session_run(d, "HARD")
    fresh = restarted(d)
    fresh.register("wf-host", activities=())
    fresh.register("w2", workflows={})
    fresh.tick(GRACE)
    s = fresh.view(rid)["sessions"][0]
    assert (s["state"], s["reason"]) == ("Broken", "SchedulerRestarted")
    assert fresh.take("w2", "activity") == []  # HARD never moves
    fresh.tick(10)
    fresh.register("w1", workflows={}, incarnation="2")  # back within scheduleTimeout
    again = fresh.take_one("w1", "activity")
    assert (again["attempt"], again["cold_start"]) == (2, True)
    fresh.tick(40)
    assert fresh.view(rid)["phase"] == "Running"


def test_a_hard_session_fails_when_its_worker_never_comes_back() -> None:
    d = Driver()
    rid, *_ = session_run(d, "HARD")
    fresh = restarted(d)
    fresh.register("wf-host", activities=())
    fresh.tick(GRACE)
    fresh.tick(30)
    view = fresh.view(rid)
    assert (view["phase"], view["error"]["reason"]) == ("Failed", "SessionBroken")


def child_run(d: Driver) -> tuple[str, str, dict[str, Any]]:
    """A parent run that started child workflow `child` at seq 1: (parent, child, start)."""
    d.register("w1", workflows={"wf": None, "child": None})
    rid = d.start()
    start = {"type": "start_child", "seq": 1, "workflow": "child", "input": 7}
    d.commands("w1", d.workflow_task("w1"), start)
    return rid, f"{rid}-c1", start


def test_a_child_that_ended_before_its_parent_heard_resolves_the_parent_after_a_restart() -> None:
    # The child's end and the parent's ChildCompleted go to two histories; a crash
    # between the two writes stores the first alone.
    d = Driver()
    rid, _, start = child_run(d)
    d.commands("w1", d.workflow_task("w1"), done(1, "child-done"))
    assert d.stored[rid][-1]["type"] == "ChildCompleted"
    d.stored[rid] = [ev for ev in d.stored[rid] if ev["type"] != "ChildCompleted"]
    fresh = restarted(d)
    fresh.register("w1", workflows={"wf": None, "child": None})
    wft = fresh.workflow_task("w1")
    assert wft["run_id"] == rid
    fresh.commands("w1", wft, start)  # the replay sends the start again
    (resolution,) = fresh.take("w1", "resolution")
    assert (resolution["seq"], resolution["result"]) == (1, "child-done")
    fresh.commands("w1", wft, done(2, "parent-done"))
    view = fresh.view(rid)
    assert (view["phase"], view["children"][0]["phase"]) == ("Succeeded", "Succeeded")


def test_a_child_whose_start_was_never_stored_is_started_by_the_parents_replay() -> None:
    d = Driver()
    _, cid, start = child_run(d)
    del d.stored[cid]  # the crash came between the parent's write and the child's
    fresh = restarted(d)
    fresh.register("w1", workflows={"wf": None, "child": None})
    wft = fresh.workflow_task("w1")
    fresh.commands("w1", wft, start)
    child = fresh.workflow_task("w1")
    assert (child["run_id"], child["input"]) == (cid, 7)
    fresh.commands("w1", child, done(1, "child-done"))
    (resolution,) = fresh.take("w1", "resolution")
    assert resolution["result"] == "child-done"


def test_a_child_restored_without_its_parents_child_started_is_adopted_on_replay() -> None:
    d = Driver()
    rid, cid, start = child_run(d)
    d.stored[rid] = [ev for ev in d.stored[rid] if ev["type"] != "ChildStarted"]
    fresh = restarted(d)
    fresh.register("w1", workflows={"wf": None, "child": None})
    first, second = fresh.take("w1", "workflow")
    wft, child = (first, second) if first["run_id"] == rid else (second, first)
    fresh.commands("w1", child, done(1, "child-done"))  # ends before the parent replays
    assert fresh.view(cid)["phase"] == "Succeeded"
    fresh.commands("w1", wft, start)
    (resolution,) = fresh.take("w1", "resolution")
    assert resolution["result"] == "child-done"
    assert [c["phase"] for c in fresh.view(rid)["children"]] == ["Succeeded"]
