"""Worker pools in the engine: placement restricted to a run's pool, and demand per pool."""

from __future__ import annotations

import pytest

from tether_operator.engine import NO_POOL, Run, WorkerLoad, WorkerRetired

from .driver import Driver, act, done, open_session


def test_a_run_with_a_pool_runs_only_on_that_pools_workers() -> None:
    d = Driver()
    d.register("other", pool="cpu", slots=8)
    d.register("gpu-1", pool="gpu", slots=1)
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    d.commands("gpu-1", wft, act(1), act(2))
    assert d.take_one("gpu-1", "activity")["seq"] == 1
    assert d.take("other") == []  # seq 2 waits for a free gpu slot, not for "other"
    assert d.engine.demand()["gpu"].queued == 1
    d.complete("gpu-1", {"task_id": f"{rid}/1/1"})
    assert d.take_one("gpu-1", "activity")["seq"] == 2
    assert d.view(rid)["activities"][1]["worker"] == "gpu-1"


def test_a_run_without_a_pool_runs_on_any_worker() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    d.start()
    assert d.workflow_task("gpu-1")["workflow"] == "wf"


def test_a_run_waits_for_its_pool_and_demand_says_so() -> None:
    d = Driver()
    d.register("cpu-1", pool="cpu")
    rid = d.start(worker_pool="gpu")
    assert d.take("cpu-1") == []
    demand = d.engine.demand()
    assert demand["gpu"].queued == 1
    assert demand["gpu"].unmet
    assert demand["gpu"].workers == {}
    assert demand["cpu"].workers == {"cpu-1": WorkerLoad(tasks=0, sessions=0)}
    assert not demand["cpu"].unmet
    d.register("gpu-1", pool="gpu")
    assert d.workflow_task("gpu-1")["run_id"] == rid
    demand = d.engine.demand()
    assert not demand["gpu"].unmet
    assert demand["gpu"].workers["gpu-1"] == WorkerLoad(tasks=1, sessions=0)


def test_a_soft_session_rebinds_only_within_the_pool() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    d.register("cpu-1", pool="cpu")
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    sid = f"{rid}/s1"
    d.commands("gpu-1", wft, open_session(1, sid), act(2, "a", sid))
    d.take_one("gpu-1", "activity")
    assert d.engine.demand()["gpu"].workers["gpu-1"] == WorkerLoad(tasks=2, sessions=1)
    d.lose("gpu-1", "ScaledDown")
    assert d.take("cpu-1") == []
    demand = d.engine.demand()["gpu"]
    # The workflow task and the session's activity both wait for a gpu worker.
    assert (demand.queued, demand.sessions_waiting, demand.workers) == (1, 1, {})
    d.register("gpu-2", pool="gpu")
    assert d.take_one("gpu-2", "activity")["cold_start"] is True
    assert d.view(rid)["sessions"][0]["worker"] == "gpu-2"


def test_a_broken_hard_session_is_not_demand_for_a_new_worker() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    sid = f"{rid}/s1"
    d.commands("gpu-1", wft, open_session(1, sid, "HARD"), act(2, "a", sid))
    d.take_one("gpu-1", "activity")
    d.register("gpu-2", pool="gpu")
    d.lose("gpu-1", "NodeLost")  # the pod may come back: the session waits for it
    demand = d.engine.demand()["gpu"]
    assert (demand.sessions_waiting, demand.hard_waiting) == (0, 1)
    assert d.take("gpu-2", "activity") == []


def test_a_new_session_that_finds_no_free_slot_is_waiting_demand() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu", capacity=1)
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    s1, s2 = f"{rid}/s1", f"{rid}/s2"
    d.commands("gpu-1", wft, open_session(1, s1), open_session(2, s2))
    d.commands("gpu-1", wft, act(3, "a", s1), act(4, "a", s2))
    d.take_one("gpu-1", "activity")
    demand = d.engine.demand()["gpu"]
    assert (demand.queued, demand.sessions_waiting) == (0, 1)
    assert demand.workers["gpu-1"].sessions == 1


def test_a_child_runs_in_its_parents_pool() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu", workflows={"wf": None, "child": None})
    d.register("cpu-1", pool="cpu", workflows={"wf": None, "child": None})
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    d.commands("gpu-1", wft, {"type": "start_child", "seq": 1, "workflow": "child"})
    child = d.workflow_task("gpu-1")
    assert child["run_id"] == f"{rid}-c1"
    assert d.run(child["run_id"]).worker_pool == "gpu"
    assert d.take("cpu-1") == []


def test_the_pool_survives_a_restore() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    rid = d.start(worker_pool="gpu")
    d.commands("gpu-1", d.workflow_task("gpu-1"), done(1, "ok"))
    assert Run.replay(d.stored[rid]).worker_pool == "gpu"
    fresh = Driver()
    d2 = d.start(worker_pool="gpu", run_id="again")
    fresh.apply(fresh.engine.restore(d2, d.stored[d2], d.now))
    fresh.register("cpu-1", pool="cpu")
    assert fresh.take("cpu-1") == []
    assert fresh.engine.demand()["gpu"].queued == 1


def test_workers_without_a_pool_and_their_view() -> None:
    d = Driver()
    d.register("w1")
    d.register("gpu-1", pool="gpu")
    assert set(d.engine.demand()[NO_POOL].workers) == {"w1"}
    views = {v["worker_id"]: v["pool"] for v in d.engine.worker_views()}
    assert views == {"w1": "", "gpu-1": "gpu"}
    d.lose("w1")
    assert NO_POOL not in d.engine.demand()


def test_a_worker_lost_for_good_may_not_register_again() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    rid = d.start(worker_pool="gpu")
    d.workflow_task("gpu-1")
    d.lose("gpu-1", "ScaledDown")
    # The dying pod's process must not take the re-queued workflow task back.
    with pytest.raises(WorkerRetired, match=r"'gpu-1' was lost for good \(ScaledDown\)") as err:
        d.register("gpu-1", pool="gpu", incarnation="2")
    assert err.value.field == "worker_id"
    assert d.engine.demand()["gpu"].queued == 1
    d.register("gpu-2", pool="gpu")
    assert d.workflow_task("gpu-2")["run_id"] == rid


def test_a_worker_lost_for_a_while_registers_again() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu")
    d.lose("gpu-1", "NodeLost")
    d.register("gpu-1", pool="gpu", incarnation="2")
    assert d.engine.workers["gpu-1"].alive


def test_demand_pins_sessions_to_their_workers_and_names_the_nodes_to_rebind_near() -> None:
    d = Driver()
    d.register("gpu-1", pool="gpu", node="node-a")
    rid = d.start(worker_pool="gpu")
    wft = d.workflow_task("gpu-1")
    soft, hard = f"{rid}/s1", f"{rid}/s2"
    d.commands("gpu-1", wft, open_session(1, soft), open_session(2, hard, "HARD"))
    d.commands("gpu-1", wft, act(3, "a", soft), act(4, "a", hard))
    d.take("gpu-1", "activity")
    demand = d.engine.demand()["gpu"]
    assert demand.pinned == {"gpu-1": frozenset({soft, hard})}
    assert demand.rebind_nodes == frozenset()
    d.lose("gpu-1", "HeartbeatTimeout")
    demand = d.engine.demand()["gpu"]
    # The HARD session waits for gpu-1's pod (still pinned); the SOFT one for any worker,
    # best on its old node.
    assert demand.pinned == {"gpu-1": frozenset({hard})}
    assert "gpu-1" not in demand.workers
    assert demand.rebind_nodes == frozenset({"node-a"})
    d.apply(d.engine.cancel_run(rid, d.now))
    demand = d.engine.demand().get("gpu")
    assert demand is None or (demand.pinned, demand.rebind_nodes) == ({}, frozenset())
