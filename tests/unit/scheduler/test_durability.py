"""Durable before acknowledged: with a durable store nothing leaves the scheduler (a task
to a worker, an answer to a report, a run start or a cancel) before the history behind
it is written; a restarted scheduler accepts the completions its workers send again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tether_operator.engine import EngineConfig
from tether_operator.scheduler import SchedulerService, create_app
from tether_operator.store.memory import DurableMemoryStore
from worker_runtime.protocol import ReportRequest, WorkerHeartbeat

from .conftest import FakeClock, commands, complete, register, schedule, start


class GatedStore(DurableMemoryStore):
    """A durable store whose appends of a run wait while that run's gate is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.closed: dict[str, asyncio.Event] = {}

    def hold(self, run_id: str) -> None:
        self.closed[run_id] = asyncio.Event()

    def release(self, run_id: str) -> None:
        self.closed.pop(run_id).set()

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        gate = self.closed.get(run_id)
        if gate is not None:
            await gate.wait()
        await super().append(run_id, events)


@pytest.fixture
async def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
async def durable(store: GatedStore, clock: FakeClock) -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(EngineConfig(worker_heartbeat_timeout=10.0), store=store, clock=clock)
    await svc.start()
    yield svc
    for run_id in list(store.closed):
        store.release(run_id)
    await svc.stop()


def complete_activity(task_id: str, result: Any) -> ReportRequest:
    return ReportRequest.model_validate(
        {"completions": [{"task_id": task_id, "ok": True, "result": result}]}
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_task_reaches_its_worker_only_once_its_history_is_written(
    durable: SchedulerService, store: GatedStore
) -> None:
    register(durable)
    store.hold("r1")
    start(durable, "r1")
    await settle()
    assert await durable.poll("w1", 8, 0) == []  # WorkflowTaskStarted is not written yet
    assert durable.held_deliveries == 1
    store.release("r1")
    (task,) = await asyncio.wait_for(durable.poll("w1", 8, 5.0), 2.0)
    assert task["kind"] == "workflow"
    stored = [e["type"] for e in await store.load("r1")]
    assert stored[-1] == "WorkflowTaskStarted"
    assert durable.held_deliveries == 0


async def test_a_task_waiting_for_its_write_is_not_lost(
    durable: SchedulerService, store: GatedStore, clock: FakeClock
) -> None:
    """Found by the durable throughput bench: a task held back for its write is on its
    way to the worker, so heartbeats that do not list it yet do not make it lost."""
    register(durable)
    store.hold("r1")
    start(durable, "r1")
    await settle()
    for _ in range(4):
        clock.tick(durable.engine_config.worker_heartbeat_interval)
        durable.heartbeat("w1", WorkerHeartbeat(incarnation="i1", tasks=[]))
    store.release("r1")
    await durable.flush()
    (task,) = await durable.poll("w1", 8, 0)
    assert (task["kind"], task["attempt"]) == ("workflow", 1)


async def workflow_task(durable: SchedulerService) -> dict[str, Any]:
    """Register worker w1, start run r1 and take its first workflow task."""
    register(durable)
    start(durable, "r1")
    await durable.flush()
    (wf,) = await durable.poll("w1", 8, 0)
    return wf


async def activities(durable: SchedulerService, *runs: str) -> dict[str, dict[str, Any]]:
    """Start `runs`, schedule one activity in each; their activity tasks, by run."""
    for run_id in runs:
        start(durable, run_id)
    await durable.flush()
    for wf in await durable.poll("w1", 8, 0):
        durable.report("w1", commands(wf["run_id"], wf["task_id"], schedule(1), max_tasks=0))
    await durable.flush()
    return {t["run_id"]: t for t in await durable.poll("w1", 8, 0)}


async def test_an_acknowledgement_waits_for_the_history_of_its_runs_only(
    durable: SchedulerService, store: GatedStore
) -> None:
    register(durable)
    tasks = await activities(durable, "slow", "fast")
    store.hold("slow")
    for run_id in ("slow", "fast"):
        durable.report("w1", complete_activity(tasks[run_id]["task_id"], run_id))
    slow, fast = durable.written(["slow"]), durable.written(["fast"])
    assert slow is not None
    assert fast is not None
    await asyncio.wait_for(asyncio.ensure_future(fast), 1.0)  # not held up by "slow"
    (workflow,) = await durable.poll("w1", 8, 0)
    assert workflow["run_id"] == "fast"
    waiting = asyncio.ensure_future(slow)
    await settle()
    assert not waiting.done()
    store.release("slow")
    await asyncio.wait_for(waiting, 1.0)
    assert [t["run_id"] for t in await durable.poll("w1", 8, 0)] == ["slow"]


async def test_an_attempt_goes_out_before_its_schedule_is_written_and_commits_with_it(
    durable: SchedulerService, store: GatedStore
) -> None:
    """One commit per step: the activity task leaves at once; its schedule, start and
    completion are written in one append, and the completion is acknowledged (and the
    workflow hears of it) only after that append."""
    wf = await workflow_task(durable)
    store.hold("r1")
    durable.report("w1", commands("r1", wf["task_id"], schedule(1), max_tasks=0))
    (activity,) = await durable.poll("w1", 8, 0)
    assert activity["kind"] == "activity", "dispatched before its schedule is written"
    durable.report("w1", complete_activity(activity["task_id"], 7))
    acknowledged = asyncio.ensure_future(durable.written(["r1"]))  # type: ignore[arg-type]
    await settle()
    assert not acknowledged.done()
    assert await durable.poll("w1", 8, 0) == [], "the workflow hears after the write"
    before = store.appends
    store.release("r1")
    await asyncio.wait_for(acknowledged, 1.0)
    assert store.appends - before == 1, "schedule and completion in one append"
    types = [e["type"] for e in await store.load("r1")]
    assert types[-3:] == ["ActivityScheduled", "ActivityStarted", "ActivityCompleted"]
    (resolution,) = await durable.poll("w1", 8, 0)
    assert (resolution["kind"], resolution["run_id"]) == ("resolution", "r1")


async def test_an_activity_longer_than_a_commit_still_costs_one_append(
    durable: SchedulerService, store: GatedStore
) -> None:
    """The schedule lingers while the attempt runs (an ML prediction takes ~50 ms, a
    commit a few), so a sequential step is one write, not two."""
    wf = await workflow_task(durable)
    before = store.appends
    durable.report("w1", commands("r1", wf["task_id"], schedule(1), max_tasks=0))
    (activity,) = await durable.poll("w1", 8, 0)
    await asyncio.sleep(0.1)  # the activity runs
    durable.report("w1", complete_activity(activity["task_id"], 7))
    await asyncio.wait_for(asyncio.ensure_future(durable.written(["r1"])), 1.0)  # type: ignore[arg-type]
    assert store.appends - before == 1


async def test_the_end_of_a_run_is_written_without_lingering(
    durable: SchedulerService, store: GatedStore
) -> None:
    """Its status (Succeeded) waits for the write, and users wait for that."""
    wf = await workflow_task(durable)
    durable.report("w1", commands("r1", wf["task_id"], complete(1, "done"), max_tasks=0))
    await settle()
    assert durable.history_writer.mark("r1") == 0, "written at once"
    assert (await store.load("r1"))[-1]["type"] == "RunCompleted"


async def test_writes_pile_up_into_one_append_per_run(
    durable: SchedulerService, store: GatedStore
) -> None:
    wf = await workflow_task(durable)
    store.hold("r1")
    for seq in range(1, 21):
        durable.report("w1", commands("r1", wf["task_id"], schedule(seq), max_tasks=0))
    await settle()
    before = store.appends
    store.release("r1")
    await durable.flush()
    # One append was in flight when the gate closed; the 19 reports after it are one more.
    assert store.appends - before <= 2
    assert len(await durable.poll("w1", 20, 0)) == 8  # the worker's slots


async def test_a_held_task_for_a_worker_lost_meanwhile_is_not_delivered(
    durable: SchedulerService, store: GatedStore
) -> None:
    register(durable, "w1")
    store.hold("r1")
    start(durable, "r1")
    await settle()
    durable.worker_lost("w1", "ProcessExited")
    register(durable, "w1", incarnation="i2")
    store.release("r1")
    await durable.flush()
    tasks = await durable.poll("w1", 8, 0)
    # Only the re-queued workflow task (attempt 2), not the one sent to the lost process.
    assert [(t["kind"], t["attempt"]) for t in tasks] == [("workflow", 2)]


async def test_the_in_memory_store_answers_at_once(service: SchedulerService) -> None:
    register(service)
    run_id = start(service)
    assert service.written([run_id]) is None
    assert len(await service.poll("w1", 8, 0)) == 1


@pytest.fixture
async def http(durable: SchedulerService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(durable, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as client:
        yield client


@pytest.mark.parametrize("path", ["report", "complete"])
async def test_http_acknowledges_a_completion_once_it_is_written(
    durable: SchedulerService, store: GatedStore, http: httpx.AsyncClient, path: str
) -> None:
    wf = await workflow_task(durable)
    durable.report("w1", commands("r1", wf["task_id"], schedule(1), max_tasks=0))
    await durable.flush()
    (activity,) = await durable.poll("w1", 8, 0)
    store.hold("r1")
    completion = {"task_id": activity["task_id"], "ok": True, "result": 42}
    if path == "report":
        body = {"completions": [completion], "max_tasks": 8}
        request = http.post("/v1/workers/w1/report", json=body)
    else:
        request = http.post(
            f"/v1/tasks/{activity['task_id']}/complete",
            json=completion,
            headers={"X-Tether-Worker": "w1"},
        )
    answer = asyncio.ensure_future(request)
    await asyncio.sleep(0.05)
    assert not answer.done()
    assert "ActivityCompleted" not in [e["type"] for e in await store.load("r1")]
    store.release("r1")
    response = await asyncio.wait_for(answer, 2.0)
    assert response.status_code == 200
    assert "ActivityCompleted" in [e["type"] for e in await store.load("r1")]
    if path == "report":
        # The resolution released by that write rides on the answer.
        assert [t["kind"] for t in response.json()["tasks"]] == ["resolution"]


async def test_http_answers_a_run_start_once_it_is_written(
    durable: SchedulerService, store: GatedStore, http: httpx.AsyncClient
) -> None:
    register(durable)
    store.hold("r1")
    answer = asyncio.ensure_future(http.post("/v1/runs", json={"workflow": "wf", "run_id": "r1"}))
    await asyncio.sleep(0.05)
    assert not answer.done()
    store.release("r1")
    response = await asyncio.wait_for(answer, 2.0)
    assert response.status_code == 201
    assert (await store.load("r1"))[0]["type"] == "RunStarted"
    store.hold("r1")
    cancel = asyncio.ensure_future(http.post("/v1/runs/r1/cancel"))
    await asyncio.sleep(0.05)
    assert not cancel.done()
    store.release("r1")
    assert (await asyncio.wait_for(cancel, 2.0)).json()["phase"] == "Cancelled"
    assert "RunCancelled" in [e["type"] for e in await store.load("r1")]


async def test_a_restarted_scheduler_accepts_a_completion_sent_again(clock: FakeClock) -> None:
    store = DurableMemoryStore()
    first = SchedulerService(store=store, clock=clock)
    await first.start()
    register(first)
    run_id = start(first, "r1")
    await first.flush()
    (wf,) = await first.poll("w1", 8, 0)
    first.report("w1", commands(run_id, wf["task_id"], schedule(1), max_tasks=0))
    await first.flush()
    (activity,) = await first.poll("w1", 8, 0)
    await first.stop()  # the scheduler goes away with the attempt running on w1

    second = SchedulerService(store=store, clock=clock)
    await second.start()
    try:
        assert await second.recover() == [run_id]
        with pytest.raises(Exception, match="register it again"):
            second.report("w1", complete_activity(activity["task_id"], "kept"))
        register(second)  # the same process (incarnation) registers again and re-sends
        second.report("w1", complete_activity(activity["task_id"], "kept"))
        await second.flush()
        (record,) = second.get_run(run_id)["activities"]
        assert (record["state"], len(record["attempts"])) == ("Completed", 1)
        assert second.engine.runs[run_id].activities[1].result == "kept"
        tasks = await second.poll("w1", 8, 0)
        # The workflow is replayed and gets the result; the activity does not run again.
        assert [t["kind"] for t in tasks] == ["workflow", "resolution"]
        assert "ActivityCompleted" in [e["type"] for e in await store.load(run_id)]
    finally:
        await second.stop()


async def test_an_attempt_whose_start_a_crash_lost_goes_back_to_the_worker_running_it(
    clock: FakeClock,
) -> None:
    """The attempt left before its schedule was written and the scheduler died: the
    replay schedules it again with the same task id, and it goes to the worker whose
    heartbeat still lists that id (which ignores the duplicate), not to the least
    loaded one, so it does not run twice."""
    store = DurableMemoryStore()
    first = SchedulerService(store=store, clock=clock)
    await first.start()
    register(first, "w2")
    run_id = start(first, "r1")
    await first.flush()
    (wf,) = await first.poll("w2", 8, 0)
    first.report("w2", commands(run_id, wf["task_id"], schedule(1), max_tasks=0))
    (activity,) = await first.poll("w2", 8, 0)  # out before its schedule is written
    types = [e["type"] for e in await store.load(run_id)]
    assert "ActivityScheduled" not in types, "the crash comes before the linger ends"
    first.begin_shutdown()  # the process dies: nothing more is written

    second = SchedulerService(store=store, clock=clock)
    await second.start()
    try:
        assert await second.recover() == [run_id]
        register(second, "w1")  # least loaded, and first by id
        register(second, "w2")
        second.heartbeat("w2", WorkerHeartbeat(incarnation="i1", tasks=[activity["task_id"]]))
        await second.flush()
        polled = {w: await second.poll(w, 8, 0) for w in ("w1", "w2")}
        ((holder, (replay,)),) = [(w, tasks) for w, tasks in polled.items() if tasks]
        assert replay["kind"] == "workflow"
        second.report(holder, commands(run_id, replay["task_id"], schedule(1), max_tasks=0))
        assert [t["task_id"] for t in await second.poll("w2", 8, 0)] == [activity["task_id"]]
        assert await second.poll("w1", 8, 0) == [], "not to the least loaded worker"
    finally:
        await second.stop()
