"""A namespace is a trust boundary: a run's tasks and sessions go only to its own
namespace's workers, and a workflow name means one workflow per namespace."""

from __future__ import annotations

import pytest

from tether_operator.engine import Engine, EngineConfig, WorkerIdTaken, WorkflowNotFound

from .driver import Driver, act, done, open_session
from .test_restart import restarted


def lenient() -> Driver:
    """A driver whose engine lets a run wait for a worker that never registered."""
    return Driver(engine=Engine(EngineConfig(require_registered_workflows=False)))


def test_a_run_never_goes_to_another_namespaces_worker() -> None:
    d = lenient()
    d.register("a-1", namespace="team-a", slots=8)
    rid = d.start(namespace="team-b")
    assert d.take("a-1") == [], "team-a's pod must not receive team-b's run"
    d.register("b-1", namespace="team-b")
    assert d.workflow_task("b-1")["run_id"] == rid


def test_each_namespace_runs_its_runs_of_a_shared_workflow_name_on_its_own_workers() -> None:
    d = Driver()
    d.register("a-1", namespace="team-a", slots=8)
    d.register("b-1", namespace="team-b", slots=8)
    runs = {ns: [d.start(namespace=ns) for _ in range(3)] for ns in ("team-a", "team-b")}
    got_a = {m["run_id"] for m in d.take("a-1", "workflow")}
    got_b = {m["run_id"] for m in d.take("b-1", "workflow")}
    assert got_a == set(runs["team-a"])
    assert got_b == set(runs["team-b"])


def test_activities_and_sessions_stay_in_the_namespace() -> None:
    d = Driver()
    d.register("a-host", namespace="team-a", activities=())
    d.register("a-1", namespace="team-a", workflows={})
    d.register("b-1", namespace="team-b", workflows={}, slots=50, capacity=50)
    rid = d.start(namespace="team-a")
    wft = d.workflow_task("a-host")
    sid = f"{rid}/s1"
    d.commands("a-host", wft, open_session(1, sid), act(2, "load", sid), act(3, "a"))
    assert {m["seq"] for m in d.take("a-1", "activity")} == {2, 3}
    assert d.take("b-1") == []
    # The session's worker is lost: SOFT rebinds, but never to the idle team-b worker.
    d.lose("a-1")
    assert d.take("b-1") == []
    assert d.run(rid).sessions[sid].state == "Broken"
    d.register("a-2", namespace="team-a", workflows={})
    assert {m["seq"] for m in d.take("a-2", "activity")} == {2, 3}
    assert d.run(rid).sessions[sid].worker == "a-2"


def test_a_child_runs_in_its_parents_namespace() -> None:
    d = Driver()
    d.register("a-1", namespace="team-a", workflows={"wf": None, "child": None})
    d.register("b-1", namespace="team-b", workflows={"wf": None, "child": None}, slots=50)
    rid = d.start(namespace="team-a")
    d.commands(
        "a-1", d.workflow_task("a-1"), {"type": "start_child", "seq": 1, "workflow": "child"}
    )
    child = d.workflow_task("a-1")
    assert child["parent_run_id"] == rid
    assert d.run(child["run_id"]).namespace == "team-a"
    assert d.take("b-1") == []


def test_an_unknown_workflow_names_only_the_namespaces_own_workflows() -> None:
    d = Driver()
    d.register("a-1", namespace="team-a", workflows={"secret-a": None})
    d.register("b-1", namespace="team-b", workflows={"public-b": None})
    with pytest.raises(WorkflowNotFound) as caught:
        d.start("secret-a", namespace="team-b")
    assert "'public-b'" in caught.value.message
    assert "secret-a'; registered" in caught.value.message  # the name asked for, once
    assert "secret-a" not in caught.value.message.partition("registered workflows")[2]
    assert "namespace 'team-b'" in caught.value.message


def test_the_registered_sticky_strategy_is_the_namespaces_own() -> None:
    d = Driver()
    d.register("a-1", namespace="team-a", workflows={"wf": "HARD"})
    d.register("b-1", namespace="team-b", workflows={"wf": None})
    a, b = d.start(namespace="team-a"), d.start(namespace="team-b")
    assert d.run(a).sticky == "HARD"
    assert d.run(b).sticky is None
    d.commands("b-1", d.workflow_task("b-1"), done(1))
    assert d.run(b).phase == "Succeeded"


def test_a_worker_id_held_by_another_namespace_is_refused() -> None:
    d = Driver()
    d.register("pod-x", namespace="team-a")
    with pytest.raises(WorkerIdTaken) as caught:
        d.register("pod-x", namespace="team-b", incarnation="2")
    assert caught.value.field == "worker_id"
    assert "'team-a'" in caught.value.message
    assert d.engine.workers["pod-x"].namespace == "team-a"


def test_a_hard_session_waiting_for_its_pod_keeps_the_id_from_another_namespace() -> None:
    d = Driver()
    d.register("a-host", namespace="team-a", activities=())
    d.register("pod-x", namespace="team-a", workflows={})
    rid = d.start(namespace="team-a", schedule_timeout=60)
    sid = f"{rid}/s1"
    d.commands("a-host", d.workflow_task("a-host"), open_session(1, sid, "HARD"), act(2, "a", sid))
    d.take_one("pod-x", "activity")
    d.lose("pod-x", "ProcessExited")  # a container restart: HARD waits for the same pod
    with pytest.raises(WorkerIdTaken):
        d.register("pod-x", namespace="team-b", incarnation="2", workflows={})
    d.register("pod-x", namespace="team-a", incarnation="2", workflows={})
    assert d.take_one("pod-x", "activity")["seq"] == 2
    assert d.run(rid).sessions[sid].state == "Open"


def test_after_a_restart_another_namespace_cannot_take_a_returning_workers_id() -> None:
    d = Driver()
    d.register("a-host", namespace="team-a", activities=())
    d.register("pod-x", namespace="team-a", workflows={})
    rid = d.start(namespace="team-a")
    sid = f"{rid}/s1"
    d.commands("a-host", d.workflow_task("a-host"), open_session(1, sid), act(2, "a", sid))
    task = d.take_one("pod-x", "activity")
    fresh = restarted(d)
    assert fresh.run(rid).namespace == "team-a", "the namespace is in the history"
    with pytest.raises(WorkerIdTaken):
        fresh.register("pod-x", namespace="team-b", workflows={})
    fresh.register("pod-x", namespace="team-a", workflows={})
    fresh.complete("pod-x", task, "ok")
    assert fresh.run(rid).activities[2].state == "Completed"


def test_a_gone_workers_id_may_be_reused_by_another_namespace_without_its_past() -> None:
    d = Driver()
    d.register("pod-x", namespace="team-a")
    d.lose("pod-x", "PodDeleted")
    d.register("pod-x", namespace="team-b", incarnation="2")
    w = d.engine.workers["pod-x"]
    assert (w.namespace, w.alive, w.sessions) == ("team-b", True, set())


def test_an_unknown_workflow_lists_only_what_live_workers_serve() -> None:
    d = Driver()
    d.register("old", namespace="team-a", workflows={"retired": None})
    d.register("new", namespace="team-a", workflows={"current": None})
    d.apply(d.engine.worker_lost("old", "PodDeleted", "", d.now))
    with pytest.raises(WorkflowNotFound) as caught:
        d.start("typo", namespace="team-a")
    listed = caught.value.message.partition("registered workflows")[2]
    assert "'current'" in listed
    assert "retired" not in listed, "a deleted pod's workflows are not offered"
    d.start("retired", namespace="team-a")  # accepted: its pool may start a worker again
