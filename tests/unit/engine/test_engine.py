"""Scenario tests for the engine: one behaviour of DESIGN.md each."""

from __future__ import annotations

import pytest

from tether_operator.engine import (
    Engine,
    EngineConfig,
    InvalidCommand,
    Run,
    RunAlreadyExists,
    RunNotFound,
    UnknownWorker,
    WorkflowNotFound,
)

from .driver import Driver, act, done, open_session


def test_a_run_executes_an_activity_and_succeeds() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start(input={"x": 1})
    wft = d.workflow_task("w1")
    assert wft["input"] == {"x": 1}
    assert d.view(rid)["phase"] == "Running"
    d.commands("w1", wft, act(1))
    task = d.take_one("w1", "activity")
    assert (task["activity"], task["attempt"], task["args"]) == ("a", 1, [1])
    d.complete("w1", task, {"y": 2})
    res = d.take_one("w1", "resolution")
    assert (res["seq"], res["ok"], res["result"]) == (1, True, {"y": 2})
    d.commands("w1", wft, done(2, "fin"))
    view = d.view(rid)
    assert (view["phase"], view["result"]) == ("Succeeded", "fin")
    assert view["activities"][0]["worker"] == "w1"
    assert d.engine.is_terminal(rid)


def test_an_unregistered_workflow_is_refused_naming_the_known_ones() -> None:
    d = Driver()
    with pytest.raises(WorkflowNotFound, match="start a worker first"):
        d.start("wf")
    d.register("w1")
    with pytest.raises(WorkflowNotFound, match=r"'typo'.*registered workflows: 'wf'") as err:
        d.start("typo")
    assert err.value.field == "workflow"


def test_a_run_waits_pending_until_a_worker_registers_the_workflow() -> None:
    d = Driver(engine=Engine(EngineConfig(require_registered_workflows=False)))
    rid = d.start()
    assert d.view(rid)["phase"] == "Pending"
    d.register("w1")
    assert d.workflow_task("w1")["run_id"] == rid


def test_duplicate_run_id_and_unknown_run_are_clear_errors() -> None:
    d = Driver()
    d.register("w1")
    d.start(run_id="r1")
    with pytest.raises(RunAlreadyExists, match="r1"):
        d.start(run_id="r1")
    with pytest.raises(RunNotFound, match="nope"):
        d.engine.run_view("nope")


def test_unknown_worker_must_register_again() -> None:
    d = Driver()
    with pytest.raises(UnknownWorker, match="ghost"):
        d.engine.worker_seen("ghost", d.now)


def test_retries_back_off_exponentially_then_fail_the_activity() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands(
        "w1",
        wft,
        act(1, retry={"max_attempts": 3, "initial_interval": 1.0, "backoff_coefficient": 2.0}),
    )
    d.fail("w1", d.take_one("w1", "activity"))
    assert d.view(rid)["activities"][0]["state"] == "Backoff"
    d.tick(0.9)
    assert d.take("w1", "activity") == []
    d.tick(0.1)
    t2 = d.take_one("w1", "activity")
    assert t2["attempt"] == 2
    d.fail("w1", t2)
    d.tick(1.9)
    assert d.take("w1", "activity") == []
    d.tick(0.1)
    t3 = d.take_one("w1", "activity")
    assert t3["attempt"] == 3
    d.fail("w1", t3)
    res = d.take_one("w1", "resolution")
    assert res["ok"] is False
    assert res["error"]["type"] == "ValueError"
    assert (res["error"]["attempts"], res["error"]["message"]) == (3, "boom")
    assert d.view(rid)["activities"][0]["state"] == "Failed"


def test_non_retryable_error_types_fail_at_once() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1, retry={"max_attempts": 5, "non_retryable_errors": ["KeyError"]}))
    d.fail("w1", d.take_one("w1", "activity"), "KeyError")
    assert d.take_one("w1", "resolution")["ok"] is False
    d.commands("w1", wft, act(2, retry={"max_attempts": 5}))
    d.fail("w1", d.take_one("w1", "activity"), "ApplicationError", non_retryable=True)
    assert d.take_one("w1", "resolution")["ok"] is False


def test_start_to_close_timeout_cancels_the_attempt_and_retries() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands(
        "w1",
        wft,
        act(1, start_to_close_timeout=5.0, retry={"max_attempts": 2, "initial_interval": 1.0}),
    )
    t1 = d.take_one("w1", "activity")
    d.tick(5.0)
    cancel = d.take_one("w1", "cancel")
    assert (cancel["task_id"], cancel["reason"]) == (t1["task_id"], "StartToCloseTimeout")
    d.complete("w1", t1, "late")  # the late result of a timed-out attempt is ignored
    assert d.take("w1", "resolution") == []
    d.tick(1.0)
    assert d.take_one("w1", "activity")["attempt"] == 2


def test_heartbeat_timeout_fails_the_attempt_and_details_reach_the_next() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands(
        "w1", wft, act(1, heartbeat_timeout=2.0, retry={"max_attempts": 2, "initial_interval": 0.5})
    )
    t1 = d.take_one("w1", "activity")
    d.tick(1.5)
    alive, _ = d.engine.activity_heartbeat("w1", t1["task_id"], {"done": 7}, d.now)
    assert alive
    d.tick(1.5)  # 1.5 s since the heartbeat: still fine
    assert d.take("w1", "cancel") == []
    d.tick(0.6)
    assert d.take_one("w1", "cancel")["reason"] == "HeartbeatTimeout"
    d.tick(0.5)
    t2 = d.take_one("w1", "activity")
    assert (t2["attempt"], t2["heartbeat_details"]) == (2, {"done": 7})
    alive, _ = d.engine.activity_heartbeat("w1", t1["task_id"], {}, d.now)
    assert not alive


def test_a_session_keeps_every_activity_on_its_worker() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("w1", workflows={}, slots=1)
    d.register("w2", workflows={}, slots=8)
    rid = d.start()
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid), act(2, "load", sid))
    bound = next(w for w in ("w1", "w2") if d.inbox.get(w))
    t = d.take_one(bound, "activity")
    assert t["cold_start"] is True
    d.complete(bound, t)
    for seq in (3, 4, 5):
        d.commands("wf-host", wft, act(seq, "predict", sid))
        t = d.take_one(bound, "activity")
        assert t["cold_start"] is False
        d.complete(bound, t)
    other = "w2" if bound == "w1" else "w1"
    assert d.take(other, "activity") == []
    view = d.view(rid)
    assert {a["worker"] for a in view["activities"]} == {bound}
    assert view["sessions"][0]["state"] == "Open"


def test_session_capacity_is_never_exceeded_a_third_session_waits() -> None:
    d = Driver()
    d.register("w1", capacity=1)
    d.register("w2", capacity=1)
    runs = [d.start() for _ in range(3)]
    wfts = {}
    for w in ("w1", "w2"):
        for m in d.take(w, "workflow"):
            wfts[m["run_id"]] = (w, m)
    for rid in runs:
        w, m = wfts[rid]
        d.commands(w, m, open_session(1, f"{rid}/s1"), act(2, "load", f"{rid}/s1"))
    placed = d.take("w1", "activity") + d.take("w2", "activity")
    assert len(placed) == 2  # the third session has no worker with capacity
    for w in d.engine.workers.values():
        assert len(w.sessions) <= w.session_capacity
    # closing one session frees capacity for the waiting one
    first = placed[0]
    owner = d.engine.tasks[first["task_id"]].worker_id or ""
    d.complete(owner, first)
    w, m = wfts[first["run_id"]]
    d.commands(w, m, {"type": "close_session", "seq": 3, "session_id": f"{first['run_id']}/s1"})
    assert len(d.take(owner, "activity")) == 1


def test_soft_session_rebinds_on_the_same_node_with_a_cold_start() -> None:
    d = Driver()
    d.register("wf-host", node="node-z", activities=())
    d.register("w1", node="node-a", workflows={})
    d.register("w2", node="node-b", workflows={})
    d.register("w3", node="node-a", workflows={})
    rid = d.start()
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid, "SOFT"), act(2, "load", sid))
    t = next(d.take_one(w, "activity") for w in ("w1", "w2", "w3") if d.inbox.get(w))
    bound = d.engine.tasks[t["task_id"]].worker_id or ""
    node = d.engine.workers[bound].node
    d.complete(bound, t)
    d.commands("wf-host", wft, act(3, "predict", sid))
    t = d.take_one(bound, "activity")
    d.lose(bound, "ProcessExited")
    # the in-flight attempt was retried at once on a new worker of the same node
    new = next(w for w in ("w1", "w2", "w3") if w != bound and d.inbox.get(w))
    t2 = d.take_one(new, "activity")
    assert d.engine.workers[new].node == node
    assert (t2["attempt"], t2["cold_start"]) == (2, True)
    view = d.view(rid)
    assert (view["sessions"][0]["state"], view["sessions"][0]["workers"]) == ("Open", [bound, new])
    broken = [e for e in d.run(rid).history if e["type"] == "SessionBroken"]
    assert broken[0]["data"]["reason"] == "ProcessExited"
    assert any(n.reason == "SessionBroken" for n in d.notices)


def test_hard_session_waits_for_the_same_worker_to_come_back() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("w1", workflows={})
    d.register("w2", workflows={})
    rid = d.start(schedule_timeout=30)
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid, "HARD"), act(2, "load", sid))
    t = next(d.take_one(w, "activity") for w in ("w1", "w2") if d.inbox.get(w))
    bound = d.engine.tasks[t["task_id"]].worker_id or ""
    other = "w2" if bound == "w1" else "w1"
    d.lose(bound, "ProcessExited")
    assert d.view(rid)["sessions"][0]["state"] == "Broken"
    d.tick(10)
    assert d.take(other, "activity") == []  # HARD never moves
    d.register(bound, incarnation="2", workflows={})  # the container restarted in the same pod
    t2 = d.take_one(bound, "activity")
    assert (t2["attempt"], t2["cold_start"]) == (2, True)
    s = d.view(rid)["sessions"][0]
    assert (s["state"], s["workers"]) == ("Open", [bound, bound])
    d.tick(30)
    assert d.view(rid)["phase"] == "Running"


def test_hard_session_fails_the_run_after_schedule_timeout() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("w1", workflows={})
    rid = d.start(schedule_timeout=5)
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid, "HARD"), act(2, "load", sid))
    d.take_one("w1", "activity")
    d.lose("w1", "HeartbeatTimeout")
    d.tick(4.9)
    assert d.view(rid)["phase"] == "Running"
    d.tick(0.2)
    view = d.view(rid)
    assert view["phase"] == "Failed"
    assert view["error"]["reason"] == "SessionBroken"
    assert "scheduleTimeout=5s" in view["error"]["message"]


def test_hard_session_fails_at_once_when_the_pod_is_deleted() -> None:
    d = Driver()
    d.register("wf-host", activities=())
    d.register("w1", workflows={})
    rid = d.start()
    wft = d.workflow_task("wf-host")
    sid = f"{rid}/s1"
    d.commands("wf-host", wft, open_session(1, sid, "HARD"), act(2, "load", sid))
    d.lose("w1", "PodDeleted")
    view = d.view(rid)
    assert (view["phase"], view["error"]["reason"]) == ("Failed", "SessionBroken")
    assert view["sessions"][0]["reason"] == "PodDeleted"


def test_missed_heartbeats_lose_the_worker_within_one_second() -> None:
    d = Driver()
    d.register("w1")
    d.tick(0.5)
    d.silent.add("w1")
    d.tick(0.9)
    assert d.engine.workers["w1"].alive
    d.tick(0.11)
    w = d.engine.workers["w1"]
    assert (w.alive, w.lost_reason) == (False, "HeartbeatTimeout")
    assert d.gone == [("w1", "HeartbeatTimeout")]  # the host learns it from advance()


def test_a_lost_workflow_worker_replays_the_run_elsewhere() -> None:
    d = Driver()
    d.register("w1", activities=())
    rid = d.start()
    wft = d.workflow_task("w1")
    d.register("w2")
    d.commands("w1", wft, act(1))
    t = d.take_one("w2", "activity")
    d.complete("w2", t, 42)
    d.commands("w1", wft, act(2))
    d.lose("w1")
    wft2 = d.workflow_task("w2")
    assert wft2["attempt"] == 2
    types = [e["type"] for e in wft2["history"]]
    assert "ActivityCompleted" in types
    assert "WorkflowTaskLost" in types
    # Replay: the workflow resends step 2 (in flight), which is not scheduled twice.
    d.commands("w2", wft2, act(2))
    running = d.take("w2", "activity")
    assert [m["seq"] for m in running] == [2]
    d.complete("w2", running[0], 7)
    res = d.take_one("w2", "resolution")
    assert (res["workflow_task_id"], res["result"]) == (wft2["task_id"], 7)
    d.commands("w2", wft2, done(3, "ok"))
    assert d.view(rid)["result"] == "ok"
    assert d.ended == [rid]  # regression: a dropped workflow task once hid the run's end
    assert [a["attempt"] for a in d.view(rid)["activities"]] == [1, 1]


def test_a_different_path_on_replay_fails_with_nondeterminism() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1, "a"))
    d.commands("w1", wft, act(1, "b"))
    view = d.view(rid)
    assert (view["phase"], view["error"]["reason"]) == ("Failed", "NonDeterminism")
    assert "activity 'a'" in view["error"]["message"]
    assert "activity 'b'" in view["error"]["message"]


def test_sticky_workflow_runs_its_activities_on_its_own_worker() -> None:
    d = Driver()
    d.register("w1", workflows={"sticky-wf": "SOFT"}, slots=1)
    d.register("w2", workflows={"sticky-wf": "SOFT"}, slots=8)
    rid = d.start("sticky-wf")
    run = d.run(rid)
    assert run.sticky == "SOFT"
    host = run.worker or ""
    wft = d.workflow_task(host)
    assert wft["session_id"] == f"{rid}/wf"
    for seq in (1, 2, 3):
        d.commands(host, wft, act(seq, "a", f"{rid}/wf"))
        d.complete(host, d.take_one(host, "activity"))
    assert d.view(rid)["sessions"][0]["worker"] == host


def test_sticky_child_must_be_registered_and_have_a_strategy() -> None:
    d = Driver()
    d.register("w1", workflows={"parent": "SOFT", "plain": None, "child": "SOFT"})
    d.register("w2", workflows={"elsewhere": "SOFT"})
    rid = d.start("parent")
    wft = d.workflow_task("w1")
    start = {"type": "start_child", "seq": 1, "workflow": "plain", "sticky": True}
    d.commands("w1", wft, start)
    res = d.take_one("w1", "resolution")
    assert res["error"]["reason"] == "StickyChildWithoutStrategy"
    d.commands("w1", wft, {**start, "seq": 2, "workflow": "elsewhere"})
    res = d.take_one("w1", "resolution")
    assert res["error"]["reason"] == "ChildNotRegistered"
    assert "'w1'" in res["error"]["message"]
    d.commands("w1", wft, {**start, "seq": 3, "workflow": "child", "input": 5})
    child_task = d.workflow_task("w1")  # the child runs on the parent's worker
    assert (child_task["workflow"], child_task["input"]) == ("child", 5)
    d.commands("w1", child_task, done(1, "child-done"))
    res = d.take_one("w1", "resolution")
    assert (res["seq"], res["result"]) == (3, "child-done")
    assert d.view(rid)["children"][-1]["phase"] == "Succeeded"


def test_timers_fire_durably() -> None:
    d = Driver()
    d.register("w1")
    d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, {"type": "start_timer", "seq": 1, "seconds": 3})
    d.tick(2.9)
    assert d.take("w1", "resolution") == []
    d.tick(0.1)
    assert d.take_one("w1", "resolution")["seq"] == 1


def test_cancel_stops_running_work() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    t = d.take_one("w1", "activity")
    d.apply(d.engine.cancel_run(rid, d.now))
    cancels = {m["task_id"] for m in d.take("w1", "cancel")}
    assert t["task_id"] in cancels
    assert d.view(rid)["phase"] == "Cancelled"
    assert d.engine.workers["w1"].running == set()


def test_only_a_finished_run_can_be_forgotten() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    with pytest.raises(InvalidCommand, match="cancel it before forgetting it"):
        d.engine.forget(rid)
    d.apply(d.engine.cancel_run(rid, d.now))
    d.engine.forget(rid)
    with pytest.raises(RunNotFound):
        d.view(rid)


def test_restore_rebuilds_the_same_state_and_resumes() -> None:
    d = Driver()
    d.register("w1")
    rid = d.start()
    wft = d.workflow_task("w1")
    d.commands("w1", wft, act(1))
    d.complete("w1", d.take_one("w1", "activity"), 1)
    d.commands("w1", wft, act(2))
    d.take_one("w1", "activity")
    live = d.run(rid)
    again = Run.replay(d.stored[rid])
    assert again == live
    fresh = Driver()
    fresh.apply(fresh.engine.restore(rid, d.stored[rid], d.now))
    fresh.register("w1", incarnation="9")
    wft2 = fresh.workflow_task("w1")
    assert wft2["attempt"] == 2
    # The running attempt waited for its worker; a new process does not hold it, so
    # its heartbeats leave it out and the lost-task rule dispatches it again.
    assert fresh.take("w1", "activity") == []
    lose_held_tasks(fresh, "w1")
    assert fresh.take_one("w1", "activity")["attempt"] == 2


def lose_held_tasks(d: Driver, wid: str) -> None:
    """`wid`'s heartbeats hold nothing for two heartbeat intervals."""
    interval = d.engine.config.worker_heartbeat_interval
    for _ in range(3):
        d.now += interval
        d.holds(wid)


def test_a_workflow_session_only_rebinds_where_the_workflow_can_run() -> None:
    # Found by the property tests: after a scheduler restart the workflow session of a
    # SOFT sticky workflow was rebound by an activity to an activity-only worker.
    d = Driver()
    d.register("host", workflows={"soft-wf": "SOFT"}, slots=1)
    d.register("helper", workflows={}, slots=8)
    rid = d.start("soft-wf")
    wft = d.workflow_task("host")
    d.commands("host", wft, act(1, "a", f"{rid}/wf"))
    d.take_one("host", "activity")
    fresh = Driver(now=d.now)
    fresh.apply(fresh.engine.restore(rid, d.stored[rid], d.now))
    fresh.register("helper", workflows={}, slots=8)
    assert fresh.take("helper", "activity") == []  # not the workflow's worker
    fresh.register("host", workflows={"soft-wf": "SOFT"}, slots=1, incarnation="2")
    assert fresh.workflow_task("host")["attempt"] == 2
    lose_held_tasks(fresh, "host")
    assert fresh.take_one("host", "activity")["attempt"] == 2
