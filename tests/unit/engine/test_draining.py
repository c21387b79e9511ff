"""A draining worker (its pod terminates, its process got SIGTERM): sessions break at
once, nothing new goes there, what runs there finishes there; and later, more specific
loss reports refine the sessions' reason."""

from __future__ import annotations

from typing import Any

from .driver import Driver, act, done, open_session


def _session_run(d: Driver, strategy: str = "SOFT", **kw: Any) -> tuple[dict[str, Any], str]:
    """Run r with session r/s1 whose first activity (seq 2) runs on w1; returns the
    workflow task (on `host`) and the activity's task id."""
    d.register("host", activities=())
    d.register("w1", workflows={}, node="node-a")
    d.start(run_id="r", **kw)
    wft = d.workflow_task("host")
    d.commands("host", wft, open_session(1, "r/s1", strategy), act(2, "a", "r/s1"))
    task = d.take_one("w1", "activity")
    return wft, task["task_id"]


def _drain(d: Driver, wid: str, reason: str, unstarted: tuple[str, ...] = ()) -> None:
    d.apply(d.engine.worker_draining(wid, reason, "", d.now, unstarted))


def test_soft_session_breaks_at_once_and_the_running_attempt_finishes_where_it_is() -> None:
    d = Driver()
    wft, tid = _session_run(d)
    d.register("w2", workflows={}, node="node-b")
    d.register("w3", workflows={}, node="node-a")
    _drain(d, "w1", "PodDeleted")

    s = d.view("r")["sessions"][0]
    assert (s["state"], s["reason"], s["pod"], s["node"]) == (
        "Broken",
        "PodDeleted",
        "w1",
        "node-a",
    )
    assert s["broken_at"] == d.now
    notes = [n.message for n in d.notices if n.reason == "SessionBroken"]
    assert notes == ["session r/s1 (SOFT) broken: pod w1 on node node-a was deleted (PodDeleted)"]
    assert d.engine.workers["w1"].draining
    assert d.engine.workers["w1"].alive
    assert not d.take("w2")
    assert not d.take("w3")

    d.tick(0.5)
    d.complete("w1", {"task_id": tid}, "done on w1")
    history = [e["type"] for e in d.run("r").history]
    assert history.count("ActivityCompleted") == 1
    assert history.count("ActivityStarted") == 1

    d.commands("host", wft, act(3, "a", "r/s1"))
    nxt = d.take_one("w3", "activity")  # the same node is preferred
    assert nxt["cold_start"] is True
    assert not d.take("w1")
    d.complete("w3", nxt)
    d.commands("host", wft, done(4))
    view = d.view("r")
    assert view["phase"] == "Succeeded"
    bindings = view["sessions"][0]["bindings"]
    assert [(b["pod"], b["node"], b["reason"]) for b in bindings] == [
        ("w1", "node-a", "PodDeleted"),
        ("w3", "node-a", None),
    ]
    assert bindings[0]["ended_at"] == 1000.0
    assert bindings[1]["ended_at"] == d.now
    assert view["sessions"][0]["broken_at"] is None


def test_a_draining_worker_gets_no_new_task() -> None:
    d = Driver()
    d.register("w1")
    _drain(d, "w1", "ScaledDown")
    d.start(run_id="r")
    assert not d.take("w1")
    d.register("w2")
    d.workflow_task("w2")
    assert d.engine.workers["w1"].free_slots == 0
    assert d.engine.worker_views()[0]["draining"] is True


def test_a_workflow_task_on_a_draining_worker_is_replayed_elsewhere_at_once() -> None:
    d = Driver()
    d.register("w1")
    d.start(run_id="r")
    d.workflow_task("w1")
    d.register("w2")
    _drain(d, "w1", "PodDeleted")
    wft = d.workflow_task("w2")
    d.commands("w2", wft, done(1))
    assert d.view("r")["phase"] == "Succeeded"


def test_hard_session_fails_when_its_pod_is_deleted() -> None:
    d = Driver()
    _session_run(d, "HARD")
    d.register("w2", workflows={}, node="node-a")
    _drain(d, "w1", "PodDeleted")
    view = d.view("r")
    assert view["phase"] == "Failed"
    assert view["error"]["reason"] == "SessionBroken"
    assert "pod w1 on node node-a" in view["error"]["message"]
    assert "was deleted (PodDeleted)" in view["error"]["message"]
    assert not d.take("w2", "activity")


def test_hard_session_waits_for_a_restarted_container_and_goes_on_cold() -> None:
    d = Driver()
    wft, tid = _session_run(d, "HARD", schedule_timeout=30)
    _drain(d, "w1", "ProcessExited")  # SIGTERM: the process finishes and exits
    d.complete("w1", {"task_id": tid})
    d.commands("host", wft, act(3, "a", "r/s1"))
    assert not d.take("w1")  # waits: the same pod only, once it is back
    d.tick(2)
    d.register("w1", workflows={}, node="node-a", incarnation="2")
    nxt = d.take_one("w1", "activity")
    assert nxt["cold_start"] is True
    d.complete("w1", nxt)
    d.commands("host", wft, done(4))
    view = d.view("r")
    assert view["phase"] == "Succeeded"
    assert [b["pod"] for b in view["sessions"][0]["bindings"]] == ["w1", "w1"]


def test_an_attempt_still_running_when_the_worker_is_lost_is_retried() -> None:
    d = Driver()
    _, tid = _session_run(d)
    d.register("w2", workflows={}, node="node-a")
    _drain(d, "w1", "PodDeleted")
    d.lose("w1", "PodDeleted")  # the grace period ran out: the pod is gone
    retried = d.take_one("w2", "activity")
    assert retried["attempt"] == 2
    assert retried["cold_start"] is True
    d.complete("w1", {"task_id": tid})  # too late: ignored
    assert [e["type"] for e in d.run("r").history].count("ActivityCompleted") == 0


def test_a_task_the_draining_worker_never_started_is_dispatched_again_at_once() -> None:
    d = Driver()
    _, tid = _session_run(d, retry={"max_attempts": 1})
    d.register("w2", workflows={}, node="node-b")
    _drain(d, "w1", "ProcessExited", unstarted=(tid,))
    again = d.take_one("w2", "activity")
    assert again["attempt"] == 2
    assert again["cold_start"] is True
    failed = [e for e in d.run("r").history if e["type"] == "ActivityFailed"]
    assert [f["data"]["error"]["reason"] for f in failed] == ["WorkerDraining"]
    assert failed[0]["data"]["retry_at"] == d.now


def test_a_more_specific_reason_refines_the_break() -> None:
    d = Driver()
    d.register("host", activities=())
    d.register("w1", workflows={}, node="node-a")
    d.start(run_id="r", schedule_timeout=60)
    wft = d.workflow_task("host")
    d.commands(
        "host",
        wft,
        open_session(1, "r/s1", "HARD"),
        open_session(2, "r/s2", "SOFT"),
        act(3, "a", "r/s1"),
        act(4, "a", "r/s2"),
    )
    d.take("w1")
    d.lose("w1", "HeartbeatTimeout")
    broken_at = d.now
    d.tick(1)
    d.lose("w1", "NodeLost")
    sessions = {s["id"]: s for s in d.view("r")["sessions"]}
    for s in sessions.values():
        assert (s["state"], s["reason"], s["broken_at"]) == ("Broken", "NodeLost", broken_at)
        assert [b["reason"] for b in s["breaks"]] == ["NodeLost"]
        assert s["bindings"][-1]["reason"] == "NodeLost"
    refined = [n.message for n in d.notices if n.reason == "SessionBroken"][-2:]
    assert all(
        "was lost with its node (NodeLost; first reported as HeartbeatTimeout)" in m
        for m in refined
    )
    assert d.view("r")["phase"] == "Running"  # NodeLost: HARD still waits

    d.lose("w1", "PodDeleted")  # the node's pods are deleted: HARD cannot wait any more
    view = d.view("r")
    assert view["phase"] == "Failed"
    assert view["error"]["reason"] == "SessionBroken"
    assert "was deleted (PodDeleted)" in view["error"]["message"]


def test_a_less_specific_report_changes_nothing() -> None:
    d = Driver()
    _session_run(d)
    _drain(d, "w1", "PodDeleted")
    before = len(d.run("r").history)
    _drain(d, "w1", "ProcessExited")  # the process's own SIGTERM report, later
    d.lose("w1", "HeartbeatTimeout")
    assert d.view("r")["sessions"][0]["reason"] == "PodDeleted"
    assert len(d.run("r").history) == before + 1  # only the retried attempt's failure


def test_process_exited_then_pod_deleted_fails_a_waiting_hard_session() -> None:
    d = Driver()
    _session_run(d, "HARD", schedule_timeout=60)
    _drain(d, "w1", "ProcessExited")
    assert d.view("r")["phase"] == "Running"
    _drain(d, "w1", "PodDeleted")
    view = d.view("r")
    assert view["phase"] == "Failed"
    assert view["sessions"][0]["reason"] == "PodDeleted"
