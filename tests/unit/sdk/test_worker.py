"""The worker loop against a fake scheduler on httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import worker_runtime as workflows
from worker_runtime import ApplicationError, Worker, activity, workflow
from worker_runtime.loader import collect_activities

from .fakes import FakeScheduler, workflow_task


@workflows.activity(start_to_close_timeout=5, heartbeat_timeout=2)
async def echo(value: Any) -> dict[str, Any]:
    info = activity.info()
    return {
        "value": value,
        "worker": info.worker_id,
        "attempt": info.attempt,
        "session": info.session,
        "cold_start": info.cold_start,
    }


@workflows.activity()
def sync_info(x: int) -> list[Any]:
    info = activity.info()
    return [x * 2, info.task_id, threading.current_thread() is not threading.main_thread()]


@workflows.activity()
async def failing(kind: str) -> None:
    if kind == "app":
        raise ApplicationError("do not retry", non_retryable=True, type="BadInput")
    raise ValueError("bad value")


@workflows.activity()
async def huge() -> str:
    return "x" * (3 * 1024 * 1024)


@workflows.activity()
async def not_json() -> Any:
    return object()


gates: list[asyncio.Event] = []


@pytest.fixture(autouse=True)
def gate() -> asyncio.Event:
    """A fresh event per test (an Event belongs to one event loop)."""
    gates[:] = [asyncio.Event()]
    return gates[0]


@workflows.activity()
async def waits() -> str:
    await gates[0].wait()
    return "released"


@workflows.activity()
async def beats() -> str:
    activity.heartbeat({"step": 1})
    await asyncio.sleep(5)
    return "never"


@workflows.activity(start_to_close_timeout=0.05)
async def too_slow() -> None:
    await asyncio.sleep(5)


@workflow.define(name="hello", sticky=workflows.StickyStrategy.SOFT)
class Hello:
    @workflow.entrypoint
    async def run(self, name: str) -> Any:
        return await echo(name)


@workflows.activity()
async def own_timeout() -> None:
    async with asyncio.timeout(0.01):  # the activity's own deadline on some call
        await asyncio.sleep(1)


@workflows.activity()
def sync_own_timeout() -> None:
    raise TimeoutError("the database did not answer")


ALL = [
    echo,
    sync_info,
    failing,
    huge,
    not_json,
    waits,
    beats,
    too_slow,
    own_timeout,
    sync_own_timeout,
]


def activity_task(task_id: str, name: str, *args: Any, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "activity",
        "task_id": task_id,
        "run_id": "run-1",
        "seq": 1,
        "workflow": "hello",
        "activity": name,
        "args": list(args),
        "kwargs": {},
        "attempt": extra.pop("attempt", 1),
        "options": {},
        **extra,
    }


@pytest.fixture
async def worker(scheduler: FakeScheduler) -> AsyncIterator[Worker]:
    w = Worker(
        [Hello],
        ALL,
        scheduler_url="http://scheduler",
        worker_id="w1",
        pod="pod-1",
        node="node-a",
        slots=4,
        transport=scheduler.transport,
        poll_wait=0.2,
    )
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(w.wait_ready(), 2)
    yield w
    if w.running:
        await asyncio.wait_for(w.stop(), 5)
    await asyncio.wait_for(runner, 5)


async def test_register_payload(scheduler: FakeScheduler, worker: Worker) -> None:
    reg = scheduler.registrations[0]
    assert reg["worker_id"] == "w1"
    assert reg["pod"] == "pod-1"
    assert reg["node"] == "node-a"
    assert reg["slots"] == 4
    assert reg["session_capacity"] == 4
    assert len(reg["incarnation"]) == 32
    assert reg["workflows"] == [
        {
            "name": "hello",
            "sticky": "SOFT",
            "input_schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
                "x-tether-positional": "name",
            },
            "schedules": [],
        }
    ]
    names = {a["name"]: a["options"] for a in reg["activities"]}
    assert set(names) == {a.name for a in ALL}
    assert names["echo"]["start_to_close_timeout"] == 5.0
    assert worker.running


async def test_activity_task_completes(scheduler: FakeScheduler, worker: Worker) -> None:
    await scheduler.tasks.put(
        activity_task("t1", "echo", "hi", attempt=2, session_id="s", cold_start=True)
    )
    await scheduler.tasks.put(activity_task("t2", "sync_info", 21))
    done = await scheduler.wait_for(
        lambda: len(scheduler.completions()) == 2 and scheduler.completions()
    )
    by_id = {c["task_id"]: c for c in done}
    assert by_id["t1"] == {
        "task_id": "t1",
        "ok": True,
        "result": {"value": "hi", "worker": "w1", "attempt": 2, "session": "s", "cold_start": True},
    }
    assert by_id["t2"]["result"] == [42, "t2", True]


async def test_activity_failures(scheduler: FakeScheduler, worker: Worker) -> None:
    for task_id, name, args in [
        ("f1", "failing", ["app"]),
        ("f2", "failing", ["other"]),
        ("f3", "huge", []),
        ("f4", "not_json", []),
        ("f5", "missing", []),
        ("f6", "too_slow", []),
        ("f7", "own_timeout", []),
        ("f8", "sync_own_timeout", []),
    ]:
        task = activity_task(task_id, name, *args)
        if name == "too_slow":
            task["options"] = {"start_to_close_timeout": 0.05}
        await scheduler.tasks.put(task)
    done = await scheduler.wait_for(
        lambda: len(scheduler.completions()) == 8 and scheduler.completions()
    )
    errors = {c["task_id"]: c["error"] for c in done}
    assert all(not c["ok"] for c in done)
    assert errors["f1"]["type"] == "BadInput"
    assert errors["f1"]["non_retryable"]
    assert errors["f2"]["type"] == "ValueError"
    assert not errors["f2"]["non_retryable"]
    assert "bad value" in errors["f2"]["message"]
    assert "Traceback" in errors["f2"]["traceback"]
    assert errors["f3"]["type"] == "PayloadTooLargeError"
    assert errors["f3"]["non_retryable"]
    assert "'huge'" in errors["f3"]["message"]
    assert errors["f4"]["type"] == "TypeError"
    assert "'not_json'" in errors["f4"]["message"]
    assert errors["f5"]["type"] == "ActivityNotRegistered"
    assert errors["f6"]["type"] == "StartToCloseTimeout"
    # A TimeoutError raised by the activity's own code is its own error, not ours.
    assert errors["f7"]["type"] == "TimeoutError"
    assert (errors["f8"]["type"], errors["f8"]["message"]) == (
        "TimeoutError",
        "the database did not answer",
    )


async def test_workflow_task_round_trip(scheduler: FakeScheduler, worker: Worker) -> None:
    await scheduler.tasks.put(
        {
            "kind": "workflow",
            "task_id": "wft-1",
            "run_id": "run-1",
            "workflow": "hello",
            "input": "bob",
            "attempt": 1,
            "history": [],
            "session_id": "run-1/wf",
        }
    )
    cmds = await scheduler.wait_for(lambda: scheduler.commands())
    assert cmds[0]["type"] == "schedule_activity"
    assert cmds[0]["session_id"] == "run-1/wf"
    report = next(r for r in scheduler.reports if r["workflows"])
    assert report["workflows"][0]["run_id"] == "run-1"
    assert report["workflows"][0]["workflow_task_id"] == "wft-1"
    await scheduler.tasks.put(
        {
            "kind": "resolution",
            "run_id": "run-1",
            "workflow_task_id": "wft-1",
            "seq": 1,
            "ok": True,
            "result": {"v": 1},
        }
    )
    cmds = await scheduler.wait_for(lambda: len(scheduler.commands()) == 2 and scheduler.commands())
    assert cmds[1] == {"type": "complete_workflow", "seq": 2, "result": {"v": 1}}


async def test_piggybacked_tasks_and_batching(scheduler: FakeScheduler, worker: Worker) -> None:
    served = False

    def reply(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal served
        if served:
            return {}
        served = True
        assert body["max_tasks"] >= 0
        return {"tasks": [activity_task(f"p{i}", "echo", i) for i in range(3)]}

    scheduler.report_reply = reply
    for i in range(3):
        await scheduler.tasks.put(activity_task(f"b{i}", "echo", i))
    done = await scheduler.wait_for(
        lambda: len(scheduler.completions()) == 6 and scheduler.completions()
    )
    assert {c["task_id"] for c in done} == {"b0", "b1", "b2", "p0", "p1", "p2"}
    assert len(scheduler.reports) <= 4  # completions are coalesced


async def test_reregisters_after_404(scheduler: FakeScheduler, worker: Worker) -> None:
    scheduler.known_workers.clear()
    await scheduler.wait_for(lambda: len(scheduler.registrations) >= 2)
    regs = scheduler.registrations
    assert regs[0]["incarnation"] == regs[1]["incarnation"]
    await scheduler.tasks.put(activity_task("after", "echo", 1))
    await scheduler.wait_for(lambda: scheduler.completions())


async def test_a_completion_rides_out_a_scheduler_restart(scheduler: FakeScheduler) -> None:
    """The scheduler is down for longer than the connect timeout (which only bounds the
    first registration) while an activity finishes: the worker stays up, keeps the
    completion, registers again with the same incarnation and sends it to the new
    scheduler."""
    w = Worker(
        [Hello],
        ALL,
        scheduler_url="http://scheduler",
        worker_id="w1",
        transport=scheduler.transport,
        poll_wait=0.2,
        connect_timeout=0.1,
    )
    runner = asyncio.create_task(w.run())
    await asyncio.wait_for(w.wait_ready(), 2)
    gates[0] = asyncio.Event()
    await scheduler.tasks.put(activity_task("t1", "waits"))
    await scheduler.wait_for(lambda: ("held", ["t1"]) in scheduler.events)
    scheduler.down = True
    gates[0].set()
    await asyncio.sleep(1.0)  # polls, heartbeats and the report all fail meanwhile
    assert w.running
    assert scheduler.completions() == []
    scheduler.restart()
    done = await scheduler.wait_for(lambda: scheduler.completions(), within=5.0)
    assert [(c["task_id"], c["result"]) for c in done] == [("t1", "released")]
    regs = scheduler.registrations
    assert len(regs) == 2
    assert regs[0]["incarnation"] == regs[1]["incarnation"]
    await asyncio.wait_for(w.stop(), 5)
    await asyncio.wait_for(runner, 5)


async def test_cancel_task_and_heartbeats(scheduler: FakeScheduler, worker: Worker) -> None:
    scheduler.report_reply = lambda body: (
        {"cancelled": [h["task_id"] for h in body["heartbeats"]]} if body["heartbeats"] else {}
    )
    await scheduler.tasks.put(activity_task("hb", "beats"))
    await scheduler.tasks.put(activity_task("w", "waits"))
    beats_seen = await scheduler.wait_for(
        lambda: [h for r in scheduler.reports for h in r["heartbeats"]]
    )
    assert beats_seen == [{"task_id": "hb", "details": {"step": 1}}]
    await scheduler.tasks.put({"kind": "cancel", "task_id": "w", "reason": "RunCancelled"})
    await scheduler.wait_for(lambda: worker._free_slots() == 4)
    assert scheduler.completions() == []


async def test_graceful_stop_waits_for_running_activity(
    scheduler: FakeScheduler, worker: Worker, gate: asyncio.Event
) -> None:
    await scheduler.tasks.put(activity_task("g", "waits"))
    await scheduler.wait_for(lambda: worker._free_slots() == 3)
    stopping = asyncio.create_task(worker.stop())
    await asyncio.sleep(0.05)
    assert not stopping.done()
    gate.set()
    await asyncio.wait_for(stopping, 3)
    assert scheduler.completions() == [{"task_id": "g", "ok": True, "result": "released"}]
    assert not worker.running


async def test_stopping_tells_the_scheduler_it_drains_before_the_running_attempt_ends(
    scheduler: FakeScheduler, worker: Worker, gate: asyncio.Event
) -> None:
    await scheduler.tasks.put(activity_task("g", "waits"))
    await scheduler.wait_for(lambda: worker._free_slots() == 3)
    stopping = asyncio.create_task(worker.stop())
    drains = await scheduler.wait_for(
        lambda: [body for path, body in scheduler.requests if path == "/v1/workers/w1/drain"]
    )
    assert drains[0]["reason"] == "ProcessExited"
    assert drains[0]["tasks"] == ["g"]  # what it holds: the rest was never started
    assert drains[0]["incarnation"]
    assert scheduler.completions() == []
    await scheduler.tasks.put(activity_task("late", "waits"))  # handed back, not run
    gate.set()
    await asyncio.wait_for(stopping, 3)
    assert scheduler.completions() == [{"task_id": "g", "ok": True, "result": "released"}]


async def test_kill_sends_nothing_more(
    scheduler: FakeScheduler, worker: Worker, gate: asyncio.Event
) -> None:
    await scheduler.tasks.put(activity_task("k", "waits"))
    await scheduler.wait_for(lambda: worker._free_slots() == 3)
    worker.kill()
    count = len(scheduler.requests)
    gate.set()
    await asyncio.sleep(0.1)
    assert len(scheduler.requests) == count
    assert scheduler.completions() == []


def test_collect_activities_from_workflow_modules() -> None:
    names = {a.name for a in collect_activities([Hello])}
    assert {"echo", "waits", "huge"} <= names


async def test_unreachable_scheduler_is_a_clear_error() -> None:
    import httpx

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    w = Worker(
        [Hello], [echo], worker_id="w", transport=httpx.MockTransport(refuse), connect_timeout=0.2
    )
    with pytest.raises(workflows.SchedulerUnavailableError, match="cannot reach the scheduler"):
        await w.run()
    assert not w.running


async def test_a_report_over_the_body_limit_is_split_in_order_not_dropped(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    limit = 300  # bytes: stands in for MAX_BODY_BYTES
    accepted: list[dict[str, Any]] = []
    refused = 0
    original = scheduler.handle

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if request.url.path.endswith("/report") and len(request.content) > limit:
            refused += 1
            problem = {"error": "BodyTooLarge", "message": "too large", "field": None}
            return httpx.Response(413, json=problem)
        response = await original(request)
        if request.url.path.endswith("/report"):
            accepted.append(json.loads(request.content))
        return response

    scheduler.transport.handler = handle  # type: ignore[assignment]
    for i in range(6):
        await scheduler.tasks.put(activity_task(f"big{i}", "echo", "x" * 60))
    await scheduler.wait_for(lambda: len([c for r in accepted for c in r["completions"]]) == 6)
    ids = [c["task_id"] for r in accepted for c in r["completions"]]
    assert sorted(ids) == [f"big{i}" for i in range(6)]
    assert refused >= 1  # the batched report really was over the limit, and was split
    assert all(len(json.dumps(r)) <= limit + 50 for r in accepted)


async def test_a_report_naming_an_unknown_run_does_not_make_the_worker_reregister(
    scheduler: FakeScheduler, worker: Worker
) -> None:
    original = scheduler.handle
    bad_reports = 0

    async def handle(request: httpx.Request) -> httpx.Response:
        nonlocal bad_reports
        if request.url.path.endswith("/report"):
            body = json.loads(request.content)
            if any(w["run_id"] == "gone" for w in body["workflows"]):
                bad_reports += 1
                problem = {"error": "RunNotFound", "message": "run 'gone' not found"}
                return httpx.Response(404, json=problem)
        return await original(request)

    scheduler.transport.handler = handle  # type: ignore[assignment]
    await scheduler.tasks.put(workflow_task("hello", "ada", run_id="gone").model_dump(mode="json"))
    await scheduler.tasks.put(activity_task("ok-1", "echo", 1))
    await scheduler.wait_for(lambda: [c for c in scheduler.completions() if c["task_id"] == "ok-1"])
    await asyncio.sleep(0.1)
    assert len(scheduler.registrations) == 1  # no re-registration storm
    assert 1 <= bad_reports <= 3
