"""A restarted worker's old long-polls never take its work; lost tasks come back."""

from __future__ import annotations

import asyncio

import pytest

from tether_operator.engine import WorkerReplaced
from tether_operator.scheduler import SchedulerService
from worker_runtime.protocol import WorkerHeartbeat

from .conftest import FakeClock, commands, register, schedule, start


async def test_a_poll_left_by_a_dead_process_never_takes_its_successors_work(
    service: SchedulerService,
) -> None:
    register(service, incarnation="old")
    orphan = asyncio.ensure_future(service.poll("w1", 8, 30.0, incarnation="old"))
    await asyncio.sleep(0.01)
    register(service, incarnation="new")  # killed and straight back, same worker id
    run_id = start(service)
    assert await asyncio.wait_for(orphan, 1.0) == []
    (task,) = await service.poll("w1", 8, 0, incarnation="new")
    assert (task["kind"], task["run_id"]) == ("workflow", run_id)


async def test_a_replaced_incarnation_is_told_to_stop_not_to_register_again(
    service: SchedulerService,
) -> None:
    register(service, incarnation="old")
    register(service, incarnation="new")
    with pytest.raises(WorkerReplaced, match=r"newer process.*must stop") as err:
        await service.poll("w1", 8, 0, incarnation="old")
    assert err.value.field == "incarnation"
    with pytest.raises(WorkerReplaced):
        service.heartbeat("w1", WorkerHeartbeat(incarnation="old", tasks=[]))
    # Registering again would have evicted the newer process: it is left alone.
    assert [w["worker_id"] for w in service.workers() if w["alive"]] == ["w1"]
    assert await service.poll("w1", 8, 0, incarnation="new") == []


async def test_tasks_taken_for_a_caller_that_left_go_back_in_order(
    service: SchedulerService,
) -> None:
    register(service)
    run_id = start(service)
    (wf,) = await service.poll("w1", 8, 0)

    async def gone() -> bool:
        return False

    left = asyncio.ensure_future(service.poll("w1", 8, 30.0, still_wanted=gone))
    await asyncio.sleep(0.01)
    service.report("w1", commands(run_id, wf["task_id"], schedule(1), schedule(2), max_tasks=0))
    assert await asyncio.wait_for(left, 1.0) == []
    assert [t["seq"] for t in await service.poll("w1", 8, 0)] == [1, 2]


async def test_a_task_the_worker_does_not_hold_is_sent_again(
    service: SchedulerService, clock: FakeClock
) -> None:
    register(service)
    run_id = start(service)
    (wf,) = await service.poll("w1", 8, 0)
    service.report("w1", commands(run_id, wf["task_id"], schedule(1), max_tasks=0))
    # Still in the mailbox: the worker has not polled it yet, so nothing is lost.
    for _ in range(3):
        clock.tick(0.3)
        service.heartbeat("w1", WorkerHeartbeat(incarnation="i1", tasks=[wf["task_id"]]))
    (lost,) = await service.poll("w1", 8, 0)
    for _ in range(2):  # taken, then never seen by the worker
        clock.tick(0.3)
        service.heartbeat("w1", WorkerHeartbeat(incarnation="i1", tasks=[wf["task_id"]]))
    cancel, again = await service.poll("w1", 8, 0)
    assert (cancel["kind"], cancel["task_id"]) == ("cancel", lost["task_id"])
    assert (again["kind"], again["seq"], again["attempt"]) == ("activity", 1, 2)


async def test_a_heartbeat_without_a_task_list_checks_nothing(
    service: SchedulerService, clock: FakeClock
) -> None:
    register(service)
    start(service)
    await service.poll("w1", 8, 0)
    for _ in range(3):
        clock.tick(0.3)
        service.heartbeat("w1", WorkerHeartbeat())
        service.heartbeat("w1")
    assert await service.poll("w1", 8, 0) == []
