"""The WorkflowRun lifecycle against a real scheduler service (in-memory store).

The API server is replaced at the one seam we own, the `KubeClient`'s httpx
transport: every request is recorded and answered 200.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.unit.scheduler.conftest import commands, schedule
from tether_operator.engine import InvalidCommand, RunNotFound
from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.api.events import EventRecorder
from tether_operator.k8s.operator import _prune_orphans
from tether_operator.k8s.runs.api_starter import ApiRunStarter
from tether_operator.k8s.runs.controller import MAX_INPUT_BYTES, RunController, RunObject
from tether_operator.k8s.runs.mirror import MarkingStore
from tether_operator.k8s.runs.workflows import WorkflowDirectory
from tether_operator.scheduler.run_starter import RunNotStarted
from tether_operator.scheduler.service import SchedulerService
from tether_operator.store import StoreUnavailable
from tether_operator.store.memory import MemoryStore
from worker_runtime.protocol import (
    RegisterWorkerRequest,
    ReportRequest,
    StartRunRequest,
    WorkflowSpec,
)


@dataclass
class ApiServer:
    """Records requests; answers each with 200 and its body, but a GET of a Workflow:
    the one in `workflows`, else 404."""

    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    workflows: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, Any] = field(default_factory=dict)
    """WorkflowRuns a GET finds, by name."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.requests.append((request.method, request.url.path, body))
        if request.method == "GET" and "/workflows/" in request.url.path:
            found = self.workflows.get(request.url.path.rsplit("/", 1)[1])
            if found is None:
                return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
            return httpx.Response(200, json=found)
        if request.method == "GET" and "/workflowruns/" in request.url.path:
            found = self.runs.get(request.url.path.rsplit("/", 1)[1])
            if found is None:
                return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})
            return httpx.Response(200, json=found)
        if request.method == "POST" and request.url.path.endswith("/workflowruns"):
            body["metadata"]["uid"] = f"uid-{body['metadata']['name']}"  # as created
        return httpx.Response(200, json=body or {})

    def status_patches(self, name: str) -> list[dict[str, Any]]:
        return [
            body["status"]
            for method, path, body in self.requests
            if method == "PATCH" and path.endswith(f"/workflowruns/{name}/status")
        ]


@dataclass
class Setup:
    service: SchedulerService
    runs: RunController
    directory: WorkflowDirectory
    api: ApiServer
    store: MarkingStore


@pytest.fixture
async def s() -> AsyncIterator[Setup]:
    """A controller over a real service; `s.api` records what reached the API server."""
    api = ApiServer()
    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))
    store = MarkingStore(MemoryStore())
    service = SchedulerService(store=store, namespace="ns")
    directory = WorkflowDirectory()
    events = EventRecorder(client)
    runs = RunController(service, store, client, events, directory)
    service.subscribe(runs.on_notice)
    await service.start()
    runs.status.start()
    events.start()
    yield Setup(service, runs, directory, api, store)
    await events.stop()
    await runs.status.stop()
    await service.stop()
    await client.aclose()


def run_event(name: str = "r", type_: str = "ADDED", status: Any = None, **spec: Any) -> Any:
    body: dict[str, Any] = {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": 1},
        "spec": {"workflowRef": {"name": "w"}, **spec},
    }
    if status is not None:
        body["status"] = status
    return {"type": type_, "object": body}


def register(service: SchedulerService, workflow: str = "w") -> None:
    service.register_worker(
        RegisterWorkerRequest(
            worker_id="pod-1",
            incarnation="i1",
            namespace="ns",
            workflows=[WorkflowSpec(name=workflow)],
        )
    )


async def settle(s: Setup) -> None:
    await asyncio.sleep(0.05)
    await s.service.flush()
    await s.runs.status.flush()


def workflow_event(name: str = "w", **spec: Any) -> Any:
    return {
        "type": "ADDED",
        "object": {"metadata": {"namespace": "ns", "name": name}, "spec": spec},
    }


async def test_a_run_without_a_registered_workflow_waits_pending_then_starts(s: Setup) -> None:
    s.directory.on_event(workflow_event())
    await s.runs.on_event(run_event())
    await settle(s)
    assert "ns.r" in s.runs.pending
    pending = s.api.status_patches("r")[-1]
    assert pending["phase"] == "Pending"
    assert pending["conditions"][0]["reason"] == "WorkflowNotRegistered"

    register(s.service)
    s.runs.retry_pending()
    await settle(s)
    assert s.service.get_run("ns.r")["phase"] in ("Pending", "Running")
    latest = s.api.status_patches("r")[-1]
    accepted = next(c for c in latest["conditions"] if c["type"] == "Accepted")
    assert (accepted["status"], accepted["reason"]) == ("True", "RunStarted")
    assert not s.runs.pending


async def test_input_over_two_mib_fails_the_run_without_starting_it(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event(input="x" * MAX_INPUT_BYTES))
    await settle(s)
    with pytest.raises(RunNotFound):
        s.service.get_run("ns.r")
    status = s.api.status_patches("r")[-1]
    assert status["phase"] == "Failed"
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "InvalidInput"
    assert "spec.input is 2097154 bytes" in failed["message"]


async def test_a_spec_the_models_refuse_fails_the_run_naming_the_field(s: Setup) -> None:
    await s.runs.on_event(run_event(sticky="SOFT", scheduleTimeout="5m"))
    await settle(s)
    failed = s.api.status_patches("r")[-1]["conditions"][-1]
    assert (failed["type"], failed["reason"]) == ("Failed", "InvalidSpec")
    assert "scheduleTimeout applies only to HARD sessions" in failed["message"]


async def test_a_run_takes_its_workflow_defaults_and_its_own_overrides_win(s: Setup) -> None:
    s.directory.on_event(
        {
            "type": "ADDED",
            "object": {
                "metadata": {"namespace": "ns", "name": "w"},
                "spec": {"sticky": "HARD", "scheduleTimeout": "10m", "workerPool": "gpu"},
            },
        }
    )
    obj = RunObject("ns", "r", "uid", 1, {"workflowRef": {"name": "w"}})
    request = s.runs._request(obj)
    assert (request.run_id, request.sticky, request.schedule_timeout) == ("ns.r", "HARD", 600.0)
    assert request.worker_pool == "ns.gpu", "the Workflow's pool, of the run's namespace"
    obj.spec["scheduleTimeout"] = "30s"
    assert s.runs._request(obj).schedule_timeout == 30.0
    obj.spec["sticky"] = "SOFT"
    obj.spec["scheduleTimeout"] = None
    assert s.runs._request(obj).sticky == "SOFT", "the run's own strategy wins"
    obj.spec["workerPool"] = "cpu"
    assert s.runs._request(obj).worker_pool == "ns.cpu", "the run's own pool wins"
    other = RunObject("other", "r", "uid", 1, {"workflowRef": {"name": "w"}})
    assert s.runs._request(other).sticky is None


async def test_a_run_seen_again_is_not_started_twice(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    await s.runs.on_event(run_event(type_="MODIFIED"))
    await settle(s)
    assert [r["run_id"] for r in s.service.list_runs()] == ["ns.r"]


async def test_a_finished_run_unknown_to_the_engine_is_left_alone(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event(status={"phase": "Succeeded"}))
    await settle(s)
    assert s.service.list_runs() == []


async def test_deleting_a_run_cancels_and_forgets_it(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    await s.runs.on_event(run_event(type_="DELETED"))
    with pytest.raises(RunNotFound):
        s.service.get_run("ns.r")
    assert "ns.r" not in s.runs.objects
    # The name may be used again by a new object.
    await s.runs.on_event(run_event())
    assert s.service.get_run("ns.r")["phase"] in ("Pending", "Running")


async def test_deleting_a_run_cancels_and_forgets_its_child_runs(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    (task,) = await s.service.poll("pod-1", 8, 1.0)
    start_child = {"type": "start_child", "seq": 1, "workflow": "w"}
    report = {
        "workflows": [
            {"run_id": "ns.r", "workflow_task_id": task["task_id"], "commands": [start_child]}
        ],
        "max_tasks": 8,
    }
    s.service.report("pod-1", ReportRequest.model_validate(report))
    assert s.service.get_run("ns.r-c1")["parent_run_id"] == "ns.r"
    await settle(s)
    assert not s.api.status_patches("r-c1"), "a child has no WorkflowRun to write to"
    await s.runs.on_event(run_event(type_="DELETED"))
    for run_id in ("ns.r", "ns.r-c1"):
        with pytest.raises(RunNotFound):
            s.service.get_run(run_id)


async def finish_with_child(s: Setup) -> None:
    """ns.r starts child ns.r-c1, then completes (which cancels the child)."""
    (task,) = await s.service.poll("pod-1", 8, 1.0)
    commands = [
        {"type": "start_child", "seq": 1, "workflow": "w"},
        {"type": "complete_workflow", "seq": 2, "result": "done"},
    ]
    batch = {"run_id": "ns.r", "workflow_task_id": task["task_id"], "commands": commands}
    s.service.report("pod-1", ReportRequest.model_validate({"workflows": [batch]}))


async def test_a_finished_run_leaves_memory_once_its_final_status_is_written(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    await finish_with_child(s)
    await settle(s)
    assert s.api.status_patches("r")[-1]["phase"] == "Succeeded"
    assert s.service.engine.runs == {}, "the run and its child left the engine"
    assert s.runs.objects == {}
    assert s.store.durable_length("ns.r") == s.store.durable_length("ns.r-c1") == 0
    # A client that asks (or waits) after it left still gets its outcome and history.
    assert s.service.get_run("ns.r")["result"] == "done"
    assert (await s.service.wait_run("ns.r", 5.0))["phase"] == "Succeeded"
    history = await s.service.stored_history("ns.r")
    assert history[-1]["type"] == "RunCompleted"
    # Its own status write comes back as a watch event: nothing of it is kept again.
    final = s.api.status_patches("r")[-1]
    await s.runs.on_event(run_event(type_="MODIFIED", status=final))
    assert s.runs.objects == {}
    assert s.service.engine.runs == {}
    # Deleting its WorkflowRun forgets the final view too.
    await s.runs.on_event(run_event(type_="DELETED", status=final))
    with pytest.raises(RunNotFound):
        s.service.get_run("ns.r")


class PayloadStore(MemoryStore):
    """An in-memory store that also publishes large results (as the Kubernetes one does)."""

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        await asyncio.sleep(0.05)  # a round trip: the final status is written meanwhile
        return {"configMap": "r-pabc-0", "chunks": 1}


async def finish_with_a_large_result(s: Setup) -> None:
    """Start run `r` and end it with a result too large for its status."""
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    (task,) = await s.service.poll("pod-1", 8, 1.0)
    done = {"type": "complete_workflow", "seq": 1, "result": "x" * 40_000}
    batch = {"run_id": "ns.r", "workflow_task_id": task["task_id"], "commands": [done]}
    s.service.report("pod-1", ReportRequest.model_validate({"workflows": [batch]}))


@pytest.mark.parametrize("inner", [PayloadStore, MemoryStore])
async def test_a_large_result_is_stored_before_its_run_leaves_memory(
    s: Setup, inner: type[MemoryStore]
) -> None:
    s.store.inner = inner()
    await finish_with_a_large_result(s)
    await settle(s)
    await asyncio.sleep(0.1)
    await settle(s)
    final = s.api.status_patches("r")[-1]
    assert final["phase"] == "Succeeded"
    stored = bool((final.get("resultRef") or {}).get("configMap"))
    assert stored == (inner is PayloadStore), final["resultRef"]
    assert s.service.engine.runs == {}
    assert s.runs.objects == {}


@pytest.mark.parametrize("inner", [PayloadStore, MemoryStore])
async def test_a_large_result_is_read_from_the_store_once_the_run_left_memory(
    s: Setup, inner: type[MemoryStore]
) -> None:
    """`tether get run -o json` after a restart: the status has only `resultRef`, and
    the result comes from the run's history (on the Postgres tier nothing else has it)."""
    s.store.inner = inner()
    await finish_with_a_large_result(s)
    for _ in range(3):
        await settle(s)
        await asyncio.sleep(0.1)
    final = s.api.status_patches("r")[-1]
    assert final["result"] is None
    assert final["resultRef"]["bytes"] > 40_000
    s.api.runs["r"] = run_event(status=final)["object"]
    s.service._finished.clear()  # as in a new operator process
    starter = ApiRunStarter(s.runs.client, s.runs, "ns", timeout=5)
    view = await starter.view("ns.r")
    assert view is not None
    assert (view["phase"], view["result"]) == ("Succeeded", "x" * 40_000)
    assert not s.service.holds_run("ns.r"), "the read keeps nothing in memory"


class QuickPayloadStore(MemoryStore):
    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        return {"configMap": "r-pabc-0", "chunks": 1}


async def test_a_result_stored_while_the_final_status_is_being_written_is_written_too(
    s: Setup,
) -> None:
    """The result's ConfigMap is ready before the status without it is written (a slow
    API server): that write must not retire the run, or its resultRef is never written
    (seen in CI)."""
    s.store.inner = QuickPayloadStore()

    async def slow(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and request.url.path.endswith("/status"):
            await asyncio.sleep(0.05)
        return s.api.handle(request)

    s.runs.status._client = KubeClient(
        KubeConfig(server="http://api"), transport=httpx.MockTransport(slow)
    )
    await finish_with_a_large_result(s)
    for _ in range(4):
        await settle(s)
        await asyncio.sleep(0.1)
    final = s.api.status_patches("r")[-1]
    assert (final["phase"], final["resultRef"]["configMap"]) == ("Succeeded", "r-pabc-0")
    assert s.runs.objects == {}


async def test_a_recovered_run_whose_final_status_was_written_is_dropped_at_once(
    s: Setup,
) -> None:
    register(s.service)
    s.service.start_run(StartRunRequest(workflow="w", run_id="ns.r"), namespace="ns")
    await s.service.flush()
    s.service.cancel_run("ns.r")
    await s.service.flush()  # as after a restart: the engine holds it, finished
    await s.runs.on_event(run_event(status={"phase": "Cancelled"}))
    assert "ns.r" not in s.service.engine.runs
    assert s.runs.objects == {}
    assert not s.api.status_patches("r"), "its status is not written again"


async def test_status_is_written_only_for_stored_history(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    # Nothing is stored before the history writer ran: no status yet.
    assert s.runs._compute("ns.r") is None
    await settle(s)
    assert s.api.status_patches("r")
    assert s.runs._compute("ns.r") is None  # nothing changed since the last write


async def test_notices_become_events_and_a_lost_worker_is_told_to_each_run(s: Setup) -> None:
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    s.service.worker_lost("pod-1", "PodDeleted", "pod pod-1 was deleted")
    await settle(s)
    await asyncio.sleep(0.1)
    events = [
        (body["reason"], body["message"])
        for method, path, body in s.api.requests
        if method == "POST" and path == "/api/v1/namespaces/ns/events"
    ]
    assert ("RunStarted", "run ns.r of w started") in events
    lost = [message for reason, message in events if reason == "WorkerLost"]
    assert lost == [
        "worker pod-1 lost (PodDeleted): its workflow code is replayed on another worker"
    ]


class GatedStore(MemoryStore):
    """Appends wait for `gate`: a slow API server."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        await self.gate.wait()
        await super().append(run_id, events)


async def test_a_terminal_phase_is_shown_only_once_it_is_stored() -> None:
    api = ApiServer()
    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))
    inner = GatedStore()
    store = MarkingStore(inner)
    service = SchedulerService(store=store)
    runs = RunController(service, store, client, EventRecorder(client), WorkflowDirectory())
    await service.start()
    runs.status.start()
    s = Setup(service, runs, WorkflowDirectory(), api, store)
    try:
        register(service)
        await runs.on_event(run_event())
        await settle(s)
        assert api.status_patches("r")[-1]["phase"] in ("Pending", "Running")
        inner.gate.clear()
        service.cancel_run("ns.r")
        await asyncio.sleep(0.05)
        runs.mark("ns.r")
        await runs.status.flush()
        assert runs._compute("ns.r") is None
        assert api.status_patches("r")[-1]["phase"] != "Cancelled"
        inner.gate.set()
        await settle(s)
        assert api.status_patches("r")[-1]["phase"] == "Cancelled"
    finally:
        inner.gate.set()
        await runs.status.stop()
        await service.stop()
        await client.aclose()


async def test_a_restart_keeps_children_of_live_roots_and_cancels_orphans(s: Setup) -> None:
    register(s.service)
    restored = ["ns.r", "ns.r-c1", "ns.gone", "ns.gone-c1"]
    s.store.child_started("ns.r-c1", "ns.r")
    s.store.child_started("ns.gone-c1", "ns.gone")
    for run_id in restored:
        s.service.start_run(StartRunRequest(workflow="w", run_id=run_id), namespace="ns")
    await s.service.flush()
    listed = [{"metadata": {"namespace": "ns", "name": "r"}}]  # WorkflowRun ns/gone was deleted

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"items": listed, "metadata": {}})

    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(answer))
    await _prune_orphans(client, s.service, restored, ["ns"], s.store)
    await client.aclose()
    phases = {rid: s.service.get_run(rid)["phase"] for rid in restored}
    assert phases["ns.gone"] == phases["ns.gone-c1"] == "Cancelled"
    assert phases["ns.r"] != "Cancelled"
    assert phases["ns.r-c1"] != "Cancelled", "a child lives as long as its root's WorkflowRun"
    await s.service.flush()
    assert sorted(await s.store.run_ids()) == ["ns.r", "ns.r-c1"], "orphans' history is deleted"


def accepted(s: Setup, run: str = "r") -> dict[str, Any]:
    latest = s.api.status_patches(run)[-1]
    assert latest["phase"] == "Pending"
    found: dict[str, Any] = next(c for c in latest["conditions"] if c["type"] == "Accepted")
    return found


async def test_a_run_naming_no_workflow_says_so_and_names_the_namespace(s: Setup) -> None:
    await s.runs.on_event(run_event(workflowRef={"name": "typo"}))
    await settle(s)
    why = accepted(s)
    assert (why["status"], why["reason"]) == ("False", "WorkflowNotFound")
    assert why["message"].startswith("spec.workflowRef.name: there is no Workflow 'typo'")
    assert "namespace 'ns'" in why["message"]
    assert "workerPool" not in why["message"]


async def test_a_pending_run_says_why_its_pool_cannot_start_and_follows_it(s: Setup) -> None:
    pools = s.runs.pools
    s.directory.on_event(workflow_event(workerPool="gpu"))
    await s.runs.on_event(run_event())
    await settle(s)
    why = accepted(s)
    assert why["reason"] == "WorkerPoolNotFound"
    assert why["message"].startswith("Workflow w's spec.workerPool: there is no WorkerPool 'gpu'")

    pools.seen(("ns", "gpu"), "pod gpu-x1: ErrImagePull: container worker: pull nope:1 failed")
    await settle(s)
    why = accepted(s)
    assert why["reason"] == "WorkerPoolNotReady"
    assert "ErrImagePull: container worker: pull nope:1 failed" in why["message"]

    pools.seen(("ns", "gpu"))  # fixed: its pods start
    await settle(s)
    why = accepted(s)
    assert why["reason"] == "WorkflowNotRegistered"
    assert "WorkerPool 'gpu'" in why["message"]
    pools.seen(("ns", "other"), "a pool of no concern")
    await settle(s)
    assert accepted(s)["reason"] == "WorkflowNotRegistered"

    # The run's own spec.workerPool wins and is the field named.
    await s.runs.on_event(run_event("r2", workerPool="cpu"))
    await settle(s)
    why = accepted(s, "r2")
    assert why["message"].startswith("spec.workerPool: there is no WorkerPool 'cpu'")


async def test_a_workflow_the_watch_has_not_delivered_yet_is_read_not_denied(s: Setup) -> None:
    """An operator that just started sees runs before their Workflows: it asks."""
    s.api.workflows["w"] = {"metadata": {"name": "w", "namespace": "ns"}, "spec": {}}
    await s.runs.on_event(run_event())
    await settle(s)
    why = accepted(s)
    assert why["reason"] == "WorkflowNotRegistered", why


async def test_a_run_started_over_http_answers_once_its_workflow_run_started(s: Setup) -> None:
    """`POST /v1/runs` on Kubernetes creates the WorkflowRun and answers when the
    controller started it: woken by the start, not by polling."""
    register(s.service)
    starter = ApiRunStarter(s.runs.client, s.runs, "ns", timeout=5)
    start = asyncio.create_task(starter.start(StartRunRequest(workflow="w", run_id="ns.r")))
    await asyncio.sleep(0.05)
    assert not start.done(), "no answer before the watch delivers the WorkflowRun"
    await s.runs.on_event(run_event())
    view = await asyncio.wait_for(start, 1)
    assert (view["run_id"], view["phase"]) == ("ns.r", "Running")


async def test_a_run_refused_by_the_controller_is_refused_over_http(s: Setup) -> None:
    register(s.service)
    starter = ApiRunStarter(s.runs.client, s.runs, "ns", timeout=5)
    start = asyncio.create_task(starter.start(StartRunRequest(workflow="w", run_id="ns.r")))
    await asyncio.sleep(0.05)
    await s.runs.on_event(run_event(sticky="SOFT", scheduleTimeout="5m"))
    with pytest.raises(InvalidCommand, match="was refused"):
        await asyncio.wait_for(start, 1)


async def test_a_workflow_run_that_never_starts_is_a_timeout_naming_it(s: Setup) -> None:
    register(s.service)
    starter = ApiRunStarter(s.runs.client, s.runs, "ns", timeout=0.2)
    with pytest.raises(RunNotStarted, match=r"kubectl describe wfr -n ns r.*run id is ns\.r"):
        await starter.start(StartRunRequest(workflow="w", run_id="ns.r"))
    assert s.runs._settling == {}


class FlakyStore(MemoryStore):
    """Appends fail while `down` (the database is unreachable), then succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        if self.down:
            raise StoreUnavailable(run_id, "the history database postgresql://t:***@db is down")
        await super().append(run_id, events)


async def test_a_store_outage_is_said_in_an_event_and_a_condition_until_it_ends(
    s: Setup,
) -> None:
    flaky = s.store.inner = FlakyStore()
    register(s.service)
    await s.runs.on_event(run_event())
    await settle(s)
    assert "HistoryStored" not in {c["type"] for c in s.api.status_patches("r")[-1]["conditions"]}
    flaky.down = True
    (task,) = await s.service.poll("pod-1", 8, 1.0)
    s.service.report("pod-1", commands("ns.r", task["task_id"], schedule(1), max_tasks=0))
    await asyncio.sleep(0.2)
    await s.runs.status.flush()
    stored = next(
        c for c in s.api.status_patches("r")[-1]["conditions"] if c["type"] == "HistoryStored"
    )
    assert (stored["status"], stored["reason"]) == ("False", "HistoryStoreUnavailable")
    assert "postgresql://t:***@db is down" in stored["message"]
    flaky.down = False
    await settle(s)
    await asyncio.sleep(0.2)
    await settle(s)
    final = s.api.status_patches("r")[-1]
    assert final["progress"] == "0/1", "nothing was lost meanwhile"
    stored = next(c for c in final["conditions"] if c["type"] == "HistoryStored")
    assert (stored["status"], stored["reason"]) == ("True", "HistoryStored")
    reasons = [
        body["reason"]
        for method, path, body in s.api.requests
        if method == "POST" and path == "/api/v1/namespaces/ns/events"
    ]
    assert reasons.count("HistoryNotStored") == 1, "once per outage, not per retry"
    assert "HistoryStored" in reasons
