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
