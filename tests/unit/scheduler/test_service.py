"""SchedulerService with the real engine: mailboxes, long-polls, effects, waits, timers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tether_operator.engine import EngineConfig, RunNotFound, UnknownWorker
from tether_operator.scheduler import SchedulerService
from tether_operator.store import StoreError
from tether_operator.store.memory import MemoryStore
from tether_types.notices import Notice
from worker_runtime.protocol import ReportRequest

from .conftest import FakeClock, commands, complete, register, schedule, start


async def first_workflow_task(svc: SchedulerService, worker_id: str = "w1") -> dict[str, Any]:
    (task,) = await svc.poll(worker_id, 8, 0)
    assert task["kind"] == "workflow"
    return task


async def test_poll_returns_queued_tasks_at_once(service: SchedulerService) -> None:
    register(service)
    run_id = start(service)
    loop = asyncio.get_running_loop()
    began = loop.time()
    tasks = await service.poll("w1", 8, 30.0)
    assert loop.time() - began < 0.5
    assert [(t["kind"], t["run_id"]) for t in tasks] == [("workflow", run_id)]


async def test_long_poll_wakes_when_a_task_is_delivered(service: SchedulerService) -> None:
    register(service)
    poll = asyncio.ensure_future(service.poll("w1", 8, 30.0))
    await asyncio.sleep(0.01)
    assert not poll.done()
    run_id = start(service)
    tasks = await asyncio.wait_for(poll, 1.0)
    assert [t["run_id"] for t in tasks] == [run_id]


async def test_long_poll_returns_empty_after_wait(service: SchedulerService) -> None:
    register(service)
    assert await service.poll("w1", 8, 0.02) == []


async def test_poll_hands_out_at_most_max_tasks(service: SchedulerService) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    req = commands(run_id, wf["task_id"], schedule(1), schedule(2), schedule(3), max_tasks=0)
    assert service.report("w1", req) == {"cancelled": [], "tasks": []}
    first = await service.poll("w1", 2, 0)
    second = await service.poll("w1", 2, 0)
    assert [t["seq"] for t in first + second] == [1, 2, 3]
    assert len(first) == 2


async def test_poll_from_an_unknown_worker_asks_it_to_register(service: SchedulerService) -> None:
    with pytest.raises(UnknownWorker):
        await service.poll("ghost", 8, 0)


async def test_completion_resolves_and_piggybacks_the_resolution(
    service: SchedulerService, clock: FakeClock
) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    out = service.report("w1", commands(run_id, wf["task_id"], schedule(1, args=[2])))
    (activity,) = out["tasks"]
    assert activity["kind"] == "activity"
    assert activity["args"] == [2]
    done = ReportRequest.model_validate(
        {"completions": [{"task_id": activity["task_id"], "ok": True, "result": 4}], "max_tasks": 8}
    )
    (resolution,) = service.report("w1", done)["tasks"]
    assert resolution == {
        "kind": "resolution",
        "run_id": run_id,
        "workflow_task_id": wf["task_id"],
        "seq": 1,
        "ok": True,
        "result": 4,
        "error": None,
        "time": clock.now,
    }


async def test_failed_completion_without_error_still_fails_the_attempt(
    service: SchedulerService,
) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    retry = {"max_attempts": 1}
    out = service.report(
        "w1", commands(run_id, wf["task_id"], schedule(1, options={"retry": retry}))
    )
    (activity,) = out["tasks"]
    failed = ReportRequest.model_validate(
        {"completions": [{"task_id": activity["task_id"], "ok": False}], "max_tasks": 8}
    )
    (resolution,) = service.report("w1", failed)["tasks"]
    assert resolution["ok"] is False
    assert resolution["error"]["type"] == "ActivityError"


async def test_heartbeat_for_a_gone_task_asks_the_worker_to_cancel(
    service: SchedulerService,
) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    (activity,) = service.report("w1", commands(run_id, wf["task_id"], schedule(1)))["tasks"]
    beats = ReportRequest.model_validate(
        {"heartbeats": [{"task_id": activity["task_id"], "details": 1}, {"task_id": "gone"}]}
    )
    out = service.report("w1", beats)
    assert (out["cancelled"], out["tasks"]) == (["gone"], [])


async def test_a_rejected_item_does_not_stop_the_others(service: SchedulerService) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    (activity,) = service.report("w1", commands(run_id, wf["task_id"], schedule(1)))["tasks"]
    req = ReportRequest.model_validate(
        {
            "completions": [{"task_id": activity["task_id"], "ok": True, "result": 1}],
            "workflows": [{"run_id": "nope", "workflow_task_id": "x", "commands": [schedule(1)]}],
            "max_tasks": 8,
        }
    )
    with pytest.raises(RunNotFound):
        service.report("w1", req)
    # The completion was applied; its resolution waits in the mailbox.
    (resolution,) = await service.poll("w1", 8, 0)
    assert (resolution["kind"], resolution["result"]) == ("resolution", 1)


async def test_effects_reach_store_waiters_and_subscribers(service: SchedulerService) -> None:
    notices: list[Notice] = []
    unsubscribe = service.subscribe(notices.append)
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    waiter = asyncio.ensure_future(service.wait_run(run_id, 30.0))
    await asyncio.sleep(0)
    service.report("w1", commands(run_id, wf["task_id"], complete(1, "done")))
    view = await asyncio.wait_for(waiter, 1.0)
    assert (view["phase"], view["result"]) == ("Succeeded", "done")
    await service.flush()
    stored = await service.store.load(run_id)
    assert stored == service.history(run_id)
    assert stored[0]["type"] == "RunStarted"
    assert stored[-1]["type"] == "RunCompleted"
    assert "WorkerRegistered" in [n.reason for n in notices]
    unsubscribe()
    count = len(notices)
    register(service, "w2")
    assert len(notices) == count


async def test_a_failing_subscriber_is_logged_not_raised(
    service: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(notice: Notice) -> None:
        raise RuntimeError("boom")

    service.subscribe(broken)
    register(service)
    assert "notice subscriber" in caplog.text


async def test_wait_run_times_out_with_the_current_view(service: SchedulerService) -> None:
    register(service)
    run_id = start(service)
    view = await service.wait_run(run_id, 0.01)
    assert view["phase"] == "Running"
    assert not service._waiters
    with pytest.raises(RunNotFound):
        await service.wait_run("nope", 1.0)


async def test_timer_follows_the_engines_earliest_deadline(
    service: SchedulerService, clock: FakeClock
) -> None:
    register(service)
    assert service.timer_armed_at == pytest.approx(clock.now + 10.0)
    run_id = start(service)
    wf = await first_workflow_task(service)
    opts = {"start_to_close_timeout": 1.0, "retry": {"max_attempts": 1}}
    (activity,) = service.report("w1", commands(run_id, wf["task_id"], schedule(1, options=opts)))[
        "tasks"
    ]
    # The start-to-close deadline is earlier than the worker's: re-armed.
    assert service.timer_armed_at == pytest.approx(clock.now + 1.0)
    clock.tick(1.5)
    service.advance()
    cancel, resolution = await service.poll("w1", 8, 0)
    assert cancel == {
        "kind": "cancel",
        "task_id": activity["task_id"],
        "reason": "StartToCloseTimeout",
    }
    assert resolution["ok"] is False
    assert resolution["error"]["reason"] == "StartToCloseTimeout"


async def test_deadline_timer_fires_by_itself() -> None:
    svc = SchedulerService(EngineConfig(worker_heartbeat_timeout=0.05))
    await svc.start()
    try:
        register(svc)
        await asyncio.wait_for(_until(lambda: not _alive(svc, "w1")), 2.0)
        (view,) = svc.workers()
        assert view["lost_reason"] == "HeartbeatTimeout"
        with pytest.raises(UnknownWorker):
            svc.heartbeat("w1")
    finally:
        await svc.stop()


async def test_worker_lost_drops_its_queued_tasks(service: SchedulerService) -> None:
    register(service)
    start(service)
    assert service.queued("w1") == 1
    service.worker_lost("w1", "ProcessExited", "killed")
    assert service.queued("w1") == 0
    with pytest.raises(UnknownWorker):
        await service.poll("w1", 8, 0)
    # Registering again (a new process) gets the workflow task re-delivered.
    register(service, incarnation="i2")
    (task,) = await service.poll("w1", 8, 0)
    assert task["kind"] == "workflow"
    assert task["attempt"] == 2


async def test_a_draining_worker_keeps_what_it_runs_and_hands_back_the_rest(
    service: SchedulerService,
) -> None:
    register(service)
    run_id = start(service)
    wf = await first_workflow_task(service)
    req = commands(run_id, wf["task_id"], schedule(1), schedule(2), max_tasks=0)
    service.report("w1", req)
    (running,) = await service.poll("w1", 1, 0)  # seq 2 stays in the mailbox
    register(service, "w2")
    service.worker_draining(
        "w1", "ProcessExited", "SIGTERM", incarnation="i1", held=[running["task_id"]]
    )
    assert service.queued("w1") == 0
    moved = await service.poll("w2", 8, 0)
    assert sorted(t["kind"] for t in moved) == ["activity", "workflow"]  # seq 2, and a replay
    assert [t["seq"] for t in moved if t["kind"] == "activity"] == [2]
    assert service.workers()[0]["draining"] is True
    done = ReportRequest.model_validate(
        {"completions": [{"task_id": running["task_id"], "ok": True, "result": 1}]}
    )
    service.report("w1", done)  # accepted from the draining worker
    history = [e["type"] for e in service.history(run_id)]
    assert history.count("ActivityCompleted") == 1


async def test_reregistering_the_same_process_keeps_its_tasks(service: SchedulerService) -> None:
    register(service)
    start(service)
    register(service)
    assert service.queued("w1") == 1


async def test_a_new_incarnation_drops_tasks_of_the_old_one(service: SchedulerService) -> None:
    register(service)
    start(service)
    register(service, incarnation="i2")
    tasks = await service.poll("w1", 8, 0)
    # Only the re-delivered workflow task, not the stale first attempt.
    assert [t["attempt"] for t in tasks] == [2]


async def test_stop_releases_long_polls_and_waits(clock: FakeClock) -> None:
    svc = SchedulerService(clock=clock)
    await svc.start()
    register(svc)
    run_id = start(svc)
    await svc.poll("w1", 8, 0)
    poll = asyncio.ensure_future(svc.poll("w1", 8, 30.0))
    wait = asyncio.ensure_future(svc.wait_run(run_id, 30.0))
    await asyncio.sleep(0.01)
    await svc.stop()
    assert await asyncio.wait_for(poll, 1.0) == []
    assert (await asyncio.wait_for(wait, 1.0))["phase"] == "Running"


class FlakyStore(MemoryStore):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("store unavailable")
        await super().append(run_id, events)


async def test_a_failing_store_is_retried_in_order_and_logged(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FlakyStore(failures=2)
    svc = SchedulerService(store=store, clock=clock)
    svc.history_writer._retry_initial = 0.001
    await svc.start()
    try:
        register(svc)
        run_id = start(svc)
        wf = await first_workflow_task(svc)
        await asyncio.sleep(0)
        svc.report("w1", commands(run_id, wf["task_id"], complete(1, 7)))
        await asyncio.wait_for(svc.flush(), 2.0)
        assert await store.load(run_id) == svc.history(run_id)
        assert svc.history_writer.failures == 2
        assert "could not persist" in caplog.text
    finally:
        await svc.stop()


async def test_recover_rebuilds_runs_from_the_store(clock: FakeClock) -> None:
    store = MemoryStore()
    first = SchedulerService(store=store, clock=clock)
    await first.start()
    register(first)
    done = start(first, "done-run")
    wf = await first_workflow_task(first)
    first.report("w1", commands(done, wf["task_id"], complete(1, "ok")))
    running = start(first, "running-run")
    await first.stop()

    second = SchedulerService(store=store, clock=clock)
    await second.start()
    try:
        assert sorted(await second.recover()) == ["done-run", "running-run"]
        assert second.get_run(done)["phase"] == "Succeeded"
        assert second.get_run(done)["result"] == "ok"
        assert second.get_run(running)["phase"] in ("Pending", "Running")
        register(second)
        (task,) = await second.poll("w1", 8, 0)
        assert task["run_id"] == running
    finally:
        await second.stop()


async def test_a_history_from_before_namespaces_recovers_in_the_schedulers_own(
    clock: FakeClock,
) -> None:
    store = MemoryStore()
    started = {"run_id": "old-run", "workflow": "wf", "input": {"n": 1}}
    await store.append("old-run", [{"type": "RunStarted", "time": clock(), "data": started}])
    svc = SchedulerService(store=store, clock=clock, namespace="team")
    await svc.start()
    try:
        assert await svc.recover() == ["old-run"]
        assert svc.engine.runs["old-run"].namespace == "team"
        register(svc)  # a registration without a namespace serves the scheduler's own
        (task,) = await svc.poll("w1", 8, 0)
        assert task["run_id"] == "old-run"
    finally:
        await svc.stop()


def _alive(svc: SchedulerService, worker_id: str) -> bool:
    return any(w["alive"] for w in svc.workers() if w["worker_id"] == worker_id)


async def _until(predicate: Any) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)


async def test_log_level_of_notices(
    service: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tether.scheduler")
    register(service)
    assert any(
        r.levelno == logging.INFO and "WorkerRegistered" in r.message for r in caplog.records
    )


class _Gone(StoreError):
    permanent = True


class GoneStore(MemoryStore):
    """A store whose run's object was deleted: every append fails for good."""

    def __init__(self) -> None:
        super().__init__()
        self.appends = 0

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.appends += 1
        raise _Gone(run_id, f"run {run_id} is gone")


async def test_a_permanent_store_error_drops_the_batch_instead_of_retrying(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = GoneStore()
    svc = SchedulerService(store=store, clock=clock)
    svc.history_writer._retry_initial = 0.001
    await svc.start()
    try:
        register(svc)
        start(svc)
        await asyncio.wait_for(svc.flush(), 2.0)
        await asyncio.sleep(0.01)
        assert store.appends == 1
        assert svc.history_writer.dropped > 0
        assert "dropped" in caplog.text
    finally:
        await svc.stop()


class _Deleted(_Gone):
    expected = True


class DeletedStore(GoneStore):
    """A store whose run's WorkflowRun its user deleted (alone, or with its namespace)."""

    async def append(self, run_id: str, events: list[dict[str, Any]]) -> None:
        self.appends += 1
        raise _Deleted(run_id, f"run {run_id}'s WorkflowRun was deleted")


@pytest.mark.parametrize(("store_type", "level"), [(GoneStore, "ERROR"), (DeletedStore, "INFO")])
async def test_history_dropped_for_a_run_its_user_deleted_is_no_error(
    clock: FakeClock, caplog: pytest.LogCaptureFixture, store_type: type[GoneStore], level: str
) -> None:
    caplog.set_level(logging.INFO, logger="tether.scheduler")
    svc = SchedulerService(store=store_type(), clock=clock)
    await svc.start()
    try:
        register(svc)
        start(svc)
        await asyncio.wait_for(svc.flush(), 2.0)
        (dropped,) = [r for r in caplog.records if r.getMessage().startswith("dropped")]
        assert dropped.levelname == level
    finally:
        await svc.stop()
