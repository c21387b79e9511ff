"""Node loss: workers on a node that is not Ready, or deleted, are lost with `NodeLost`.

The scheduler service is the real one; node objects are what the API server sends.
The real cluster (a node powered off) is in tests/e2e/test_sessions_k8s.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether_operator.engine import EngineConfig
from tether_operator.k8s.pools.nodes import NodeWatch, node_trouble
from tether_operator.scheduler import SchedulerService
from tether_types.notices import Notice
from worker_runtime.protocol import RegisterWorkerRequest, StartRunRequest


def node(name: str, status: str, reason: str = "", message: str = "") -> dict[str, Any]:
    ready = {"type": "Ready", "status": status, "reason": reason, "message": message}
    pressure = {"type": "MemoryPressure", "status": "False"}
    return {"metadata": {"name": name}, "status": {"conditions": [pressure, ready]}}


@pytest.fixture
async def service() -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(EngineConfig(require_registered_workflows=False))
    await svc.start()
    for worker, where in (("a-1", "worker-a"), ("a-2", "worker-a"), ("b-1", "worker-b")):
        svc.register_worker(
            RegisterWorkerRequest(
                worker_id=worker,
                pod=worker,
                node=where,
                incarnation="1",
                workflows=[{"name": "wf", "sticky": "SOFT"}],
                activities=[{"name": "a"}],
            )
        )
    yield svc
    await svc.stop()


def test_node_trouble_says_why_in_the_nodes_own_words() -> None:
    assert node_trouble("MODIFIED", node("n", "True")) is None
    assert node_trouble(None, {"metadata": {"name": "n"}, "status": {}}) is None  # joining
    assert (
        node_trouble("MODIFIED", node("n", "Unknown", "NodeStatusUnknown", "Kubelet stopped."))
        == "node n is unreachable (Ready=Unknown) (NodeStatusUnknown: Kubelet stopped.)"
    )
    assert node_trouble("MODIFIED", node("n", "False", "KubeletNotReady")) == (
        "node n is NotReady (KubeletNotReady)"
    )
    assert node_trouble("DELETED", node("n", "True")) == "node n was deleted"


async def test_workers_on_a_node_that_stops_being_ready_are_lost_once(
    service: SchedulerService,
) -> None:
    notices: list[Notice] = []
    service.subscribe(notices.append)
    run = service.start_run(StartRunRequest(workflow="wf"))
    host = run["sessions"][0]["worker"]
    watch = NodeWatch(service)
    watch.on_node_event(None, node("worker-a", "True"))
    watch.on_node_event(None, node("worker-b", "True"))
    assert all(w.alive for w in service.engine.workers.values())

    unknown = node("worker-a", "Unknown", "NodeStatusUnknown", "Kubelet stopped posting.")
    watch.on_node_event("MODIFIED", unknown)
    workers = service.engine.workers
    assert [w.worker_id for w in workers.values() if not w.alive] == ["a-1", "a-2"]
    assert {workers[w].lost_reason for w in ("a-1", "a-2")} == {"NodeLost"}
    assert workers["b-1"].alive
    lost = [n.message for n in notices if n.reason == "WorkerLost"]
    assert lost[0].startswith("worker a-1 lost: NodeLost (pod a-1 lost with its node: node")
    assert "worker-a is unreachable (Ready=Unknown)" in lost[0]
    (session,) = service.get_run(run["run_id"])["sessions"]
    assert host in ("a-1", "a-2")  # the least loaded worker, by id
    assert {b["reason"] for b in session["breaks"]} == {"NodeLost"}
    assert session["worker"] == "b-1"  # SOFT: moved off the lost node

    said = len(notices)
    watch.on_node_event("MODIFIED", unknown)  # the node controller updates it again
    assert len(notices) == said


async def test_a_node_that_is_back_and_fails_again_loses_its_new_workers(
    service: SchedulerService,
) -> None:
    watch = NodeWatch(service)
    watch.on_node_event("MODIFIED", node("worker-b", "False", "KubeletNotReady"))
    assert not service.engine.workers["b-1"].alive
    watch.on_node_event("MODIFIED", node("worker-b", "True"))
    service.register_worker(
        RegisterWorkerRequest(worker_id="b-2", pod="b-2", node="worker-b", incarnation="1")
    )
    watch.on_node_event("DELETED", node("worker-b", "True"))
    assert service.engine.workers["b-2"].lost_reason == "NodeLost"
    assert service.engine.workers["a-1"].alive
