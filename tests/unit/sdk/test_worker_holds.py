"""What a worker holds: every heartbeat lists it, and no outcome is lost before an ack.

The scheduler dispatches again any task a worker's heartbeats stop listing, so a
heartbeat that omitted a task the worker really has would run that task twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import worker_runtime as workflows
import worker_runtime.worker as worker_module
from worker_runtime import Worker, WorkerReplacedError, workflow

from .fakes import FakeScheduler

gates: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_gates() -> None:
    """Events belong to one event loop: a fresh set per test."""
    gates.clear()


def gate(name: str) -> asyncio.Event:
    return gates.setdefault(name, asyncio.Event())


@workflows.activity()
async def quick(x: int) -> int:
    return x + 1


@workflows.activity()
async def gated(name: str) -> str:
    await gate(name).wait()
    return name


@workflow.define(name="waiter")
class Waiter:
    @workflow.entrypoint
    async def run(self, name: str) -> Any:
        return await gated(name)


@workflow.define(name="twice")
class Twice:
    @workflow.entrypoint
    async def run(self, name: str) -> Any:
        await gated(name)
        return await gated(name + "!")


def activity_task(task_id: str, name: str, *args: Any) -> dict[str, Any]:
    return {
        "kind": "activity",
        "task_id": task_id,
        "run_id": "run-1",
        "seq": 1,
        "workflow": "waiter",
        "activity": name,
        "args": list(args),
        "kwargs": {},
        "attempt": 1,
        "options": {},
    }


def workflow_task(task_id: str, run_id: str, name: str) -> dict[str, Any]:
    return {
        "kind": "workflow",
        "task_id": task_id,
        "run_id": run_id,
        "workflow": "waiter",
        "input": name,
        "attempt": 1,
        "history": [],
    }


@pytest.fixture
async def worker(scheduler: FakeScheduler) -> AsyncIterator[Worker]:
    w = Worker(
        [Waiter, Twice],
        [quick, gated],
        scheduler_url="http://scheduler",
        worker_id="w1",
        slots=4,
        transport=scheduler.transport,
        heartbeat_interval=0.02,
        poll_wait=0.2,
    )
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(w.wait_ready(), 2)
    yield w
    for event in gates.values():
        event.set()
    if w.running:
        await asyncio.wait_for(w.stop(), 5)
    await asyncio.wait_for(runner, 5)


def assert_never_omitted(events: list[tuple[str, list[str]]]) -> None:
    """Between the poll response that handed a task and the ack of its outcome, every
    heartbeat lists it."""
    outstanding: set[str] = set()
    for kind, ids in events:
        if kind == "handed":
            outstanding.update(ids)
        elif kind == "acked":
            outstanding.difference_update(ids)
        else:
            missing = outstanding - set(ids)
            assert not missing, f"a heartbeat omitted {sorted(missing)} (events: {events})"


async def test_heartbeats_carry_the_incarnation_and_polls_too(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    await scheduler.wait_for(lambda: scheduler.heartbeats())
    incarnation = scheduler.registrations[0]["incarnation"]
    beats = [b for p, b in scheduler.requests if p.endswith("/heartbeat")]
    polls = [b for p, b in scheduler.requests if p.endswith("/poll")]
    assert beats[0] == {"incarnation": incarnation, "tasks": [], "outcomes": {}}
    assert polls[0]["incarnation"] == incarnation


async def test_a_running_activity_is_held_until_its_completion_is_acknowledged(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    await scheduler.tasks.put(activity_task("slow", "gated", "slow"))
    await scheduler.tasks.put(activity_task("fast", "quick", 1))
    await scheduler.wait_for(lambda: any("slow" in ids for ids in scheduler.heartbeats()))
    await scheduler.wait_for(lambda: [c for c in scheduler.completions() if c["task_id"] == "fast"])
    gate("slow").set()
    await scheduler.wait_for(lambda: len(scheduler.completions()) == 2)
    seen = len(scheduler.heartbeats())
    await scheduler.wait_for(
        lambda: len(scheduler.heartbeats()) > seen and not scheduler.heartbeats()[-1]
    )
    assert_never_omitted(scheduler.events)


async def test_a_live_workflow_instance_is_held_and_let_go_once_its_commands_are_acknowledged(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    await scheduler.tasks.put(workflow_task("wft-a", "run-a", "a"))
    await scheduler.wait_for(lambda: scheduler.commands())
    # Waiting on its activity's resolution, the instance is still live: held.
    count = len(scheduler.heartbeats())
    await scheduler.wait_for(lambda: len(scheduler.heartbeats()) > count + 1)
    assert "wft-a" in scheduler.heartbeats()[-1]
    await scheduler.tasks.put(
        {
            "kind": "resolution",
            "run_id": "run-a",
            "workflow_task_id": "wft-a",
            "seq": 1,
            "ok": True,
            "result": "a",
        }
    )
    await scheduler.wait_for(lambda: len(scheduler.commands()) == 2)
    count = len(scheduler.heartbeats())
    await scheduler.wait_for(
        lambda: len(scheduler.heartbeats()) > count and "wft-a" not in scheduler.heartbeats()[-1]
    )


async def test_heartbeats_count_the_outcomes_each_live_workflow_task_received(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    """The scheduler replays a workflow task whose count stays short of what it sent."""
    await scheduler.tasks.put({**workflow_task("wft-b", "run-b", "b"), "workflow": "twice"})
    await scheduler.wait_for(lambda: scheduler.commands())

    def outcomes() -> Any:
        beats = [b for p, b in scheduler.requests if p.endswith("/heartbeat")]
        return beats[-1].get("outcomes") if beats else None

    await scheduler.wait_for(lambda: outcomes() == {"wft-b": 0})
    resolution = {"kind": "resolution", "run_id": "run-b", "workflow_task_id": "wft-b"}
    await scheduler.tasks.put({**resolution, "seq": 1, "ok": True, "result": "b"})
    await scheduler.wait_for(lambda: outcomes() == {"wft-b": 1})
    await scheduler.tasks.put({**resolution, "workflow_task_id": "other", "seq": 2, "ok": True})
    await asyncio.sleep(0.1)
    assert outcomes() == {"wft-b": 1}, "a resolution for another workflow task is not counted"


async def test_no_heartbeat_omits_a_task_under_load(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    for i in range(30):
        await scheduler.tasks.put(activity_task(f"q{i}", "quick", i))
        if i % 7 == 0:
            await asyncio.sleep(0.01)
    await scheduler.wait_for(lambda: len(scheduler.completions()) == 30)
    assert_never_omitted(scheduler.events)
    assert len(scheduler.heartbeats()) >= 1


async def test_a_completion_is_resent_until_acknowledged_and_held_meanwhile(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    original = scheduler.handle
    refused = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if request.url.path.endswith("/report") and refused < 4:
            refused += 1
            raise httpx.ConnectError("connection refused", request=request)
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    await scheduler.tasks.put(activity_task("kept", "quick", 41))
    done = await scheduler.wait_for(lambda: scheduler.completions(), within=5)
    assert done == [{"task_id": "kept", "ok": True, "result": 42}]
    assert refused == 4
    held = [ids for ids in scheduler.heartbeats() if "kept" in ids]
    assert held, "the unacknowledged completion was not listed as held"
    assert_never_omitted(scheduler.events)


async def test_a_completion_is_resent_after_the_scheduler_forgot_the_worker(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    original = scheduler.handle
    forgotten = False

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal forgotten
        if request.url.path.endswith("/report") and not forgotten:
            forgotten = True
            scheduler.known_workers.clear()  # the scheduler restarted without our state
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    await scheduler.tasks.put(activity_task("survivor", "quick", 1))
    done = await scheduler.wait_for(lambda: scheduler.completions())
    assert done == [{"task_id": "survivor", "ok": True, "result": 2}]
    assert len(scheduler.registrations) == 2
    assert scheduler.registrations[1]["incarnation"] == scheduler.registrations[0]["incarnation"]


async def test_a_rejected_report_is_dropped_and_logged_with_what_it_held(
    scheduler: FakeScheduler, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    original = scheduler.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            body = json.loads(request.content)
            if any(c["task_id"] == "doomed" for c in body["completions"]):
                problem = {"error": "Conflict", "message": "no", "field": None}
                return httpx.Response(409, json=problem)
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR, logger="worker_runtime.worker"):
        await scheduler.tasks.put(activity_task("doomed", "quick", 1))
        await scheduler.wait_for(lambda: "doomed" in caplog.text)
    assert "scheduler rejected a report of doomed" in caplog.text
    count = len(scheduler.heartbeats())
    await scheduler.wait_for(
        lambda: len(scheduler.heartbeats()) > count and "doomed" not in scheduler.heartbeats()[-1]
    )


async def test_a_4xx_without_a_problem_body_is_not_the_schedulers_refusal_and_is_retried(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    """Something else answered at the scheduler's address (a Service still moving to a
    new leader): the completion is kept and sent again, not dropped."""
    original = scheduler.handle
    answered = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal answered
        if request.url.path.endswith("/report") and answered < 2:
            answered += 1
            return httpx.Response(404)
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    await scheduler.tasks.put(activity_task("kept", "quick", 1))
    done = await scheduler.wait_for(lambda: scheduler.completions())
    assert done == [{"task_id": "kept", "ok": True, "result": 2}]
    assert answered == 2


async def test_a_report_unacknowledged_at_stop_is_logged_with_what_it_held(
    scheduler: FakeScheduler,
    worker: Worker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "REPORT_DRAIN_SECONDS", 0.3)
    original = scheduler.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/report"):
            raise httpx.ConnectError("connection refused", request=request)
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    await scheduler.tasks.put(activity_task("stranded", "quick", 1))
    await scheduler.wait_for(lambda: any("stranded" in ids for ids in scheduler.heartbeats()))
    with caplog.at_level(logging.ERROR, logger="worker_runtime.worker"):
        await asyncio.wait_for(worker.stop(), 5)
    assert "dropping a report of stranded: unacknowledged when the worker stopped" in caplog.text


async def test_a_worker_forgotten_while_the_scheduler_restarts_registers_again_and_lives_on(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    original = scheduler.handle
    refused = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if request.url.path == "/v1/workers" and refused < 3:
            refused += 1
            return httpx.Response(503, json={"error": "Starting", "message": "not ready"})
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    scheduler.known_workers.clear()
    await scheduler.wait_for(lambda: len(scheduler.registrations) == 2, within=5)
    assert refused == 3
    assert worker.running
    await scheduler.tasks.put(activity_task("after-restart", "quick", 1))
    await scheduler.wait_for(lambda: scheduler.completions())


async def test_a_worker_replaced_by_a_newer_process_stops_instead_of_registering_again(
    scheduler: FakeScheduler,
) -> None:
    w = Worker(
        [Waiter],
        [quick],
        scheduler_url="http://scheduler",
        worker_id="w1",
        transport=scheduler.transport,
        heartbeat_interval=0.02,
        poll_wait=0.2,
    )
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(w.wait_ready(), 2)
    scheduler.replaced.add("w1")
    with pytest.raises(WorkerReplacedError, match="replaced by a newer process"):
        await asyncio.wait_for(runner, 5)
    assert len(scheduler.registrations) == 1
