"""The workflow loop: time from history, durable asyncio timers, seeded randomness, and
replays that take the same path as the live run, in the same order."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import run_activities_locally, workflow
from worker_runtime.protocol import HistoryEventModel
from worker_runtime.workflow_instance import Outcome, WorkflowInstance
from worker_runtime.workflow_loop import WorkflowLoop

from .fakes import settle, workflow_task


@workflows.activity()
async def echo(value: Any) -> Any:
    return value


class Engine:
    """Plays the engine for one run: records history from commands and outcomes."""

    def __init__(self) -> None:
        self.history: list[HistoryEventModel] = []
        self.commands: list[dict[str, Any]] = []
        self.clock = 1_000.0
        self.instance: WorkflowInstance | None = None

    def record(self, type: str, **data: Any) -> None:
        self.history.append(HistoryEventModel(type=type, time=self.clock, data=data))

    def sink(self, _instance: WorkflowInstance, command: dict[str, Any]) -> None:
        self.commands.append(command)
        seq = command["seq"]
        if any(e.data.get("seq") == seq for e in self.history):
            return  # sent again by a replay: the engine keeps the first
        match command["type"]:
            case "schedule_activity":
                self.record(
                    "ActivityScheduled", seq=seq, activity=command["activity"], args=command["args"]
                )
            case "start_timer":
                self.record("TimerStarted", seq=seq, fire_at=self.clock + command["seconds"])
            case "record_local_activity":
                self.record(
                    "LocalActivityRecorded",
                    **{k: v for k, v in command.items() if k != "type"},
                )
            case "complete_workflow":
                self.record("RunCompleted", result=command["result"])
            case "fail_workflow":
                self.record("RunFailed", error=command["error"])

    def start(self, cls: type[Any], task_id: str, input: Any = None) -> WorkflowInstance:
        self.record("WorkflowTaskStarted", task_id=task_id, worker="w1")
        name = workflow.get_definition(cls).name
        task = workflow_task(name, input, history=list(self.history), task_id=task_id)
        self.commands = []
        self.instance = WorkflowInstance(task, workflow.get_definition(cls), self.sink)
        self.instance.start()
        return self.instance

    def complete(self, seq: int, result: Any, at: float) -> None:
        assert self.instance is not None
        self.clock = at
        self.record("ActivityCompleted", seq=seq, attempt=1, result=result)
        self.instance.resolve(seq, Outcome(True, result, time=at), self.instance.task_id)

    def fire(self, seq: int, at: float) -> None:
        assert self.instance is not None
        self.clock = at
        self.record("TimerFired", seq=seq)
        self.instance.resolve(seq, Outcome(True, time=at), self.instance.task_id)

    def last(self) -> dict[str, Any]:
        return self.commands[-1]


@workflow.define(name="every-api")
class EveryApi:
    @workflow.entrypoint
    async def run(self) -> Any:
        seen: dict[str, Any] = {
            "loop": type(asyncio.get_running_loop()).__name__,
            "start": workflow.now().timestamp(),
            "random": workflow.random().random(),
            "uuid": str(workflow.uuid4()),
        }
        seen["echo"] = await echo("a")  # seq 1
        seen["after_echo"] = workflow.now().timestamp()
        await asyncio.sleep(30)  # seq 2: a durable timer
        seen["after_asyncio_sleep"] = asyncio.get_running_loop().time()
        await workflow.sleep(10)  # seq 3
        seen["after_sleep"] = workflow.now().timestamp()
        with run_activities_locally():
            seen["local"] = await echo("here")  # seq 4
        tasks = [asyncio.create_task(echo(x)) for x in ("b", "c")]  # seq 5, 6
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        seen["first"] = done.pop().result()
        seen["random_2"] = workflow.random().randint(0, 10**9)
        seen["replaying"] = workflow.info().is_replaying
        return await echo(seen)  # seq 7


async def run_live_until_the_last_step(engine: Engine) -> dict[str, Any]:
    engine.start(EveryApi, "wft-1")
    engine.complete(1, "a", at=1_010.0)
    assert engine.last() == {"type": "start_timer", "seq": 2, "seconds": 30.0}
    engine.fire(2, at=1_040.0)
    engine.fire(3, at=1_050.0)
    for _ in range(50):  # the local activity runs on the worker's loop
        await settle(1)
        if engine.last()["type"] == "schedule_activity":
            break
    engine.complete(6, "c", at=1_060.0)  # the second task finishes first
    engine.complete(5, "b", at=1_070.0)
    last = engine.last()
    assert (last["seq"], last["activity"]) == (7, "echo")
    seen: dict[str, Any] = last["args"][0]
    return seen


async def test_workflow_code_sees_history_time_and_durable_asyncio_timers() -> None:
    engine = Engine()
    seen = await run_live_until_the_last_step(engine)
    assert seen["loop"] == "WorkflowLoop"
    assert seen["start"] == 1_000.0
    assert seen["after_echo"] == 1_010.0
    assert seen["after_asyncio_sleep"] == 1_040.0
    assert seen["after_sleep"] == 1_050.0
    assert seen["first"] == "c"
    assert seen["local"] == "here"
    assert uuid.UUID(seen["uuid"]).version == 4
    assert [c["type"] for c in engine.commands] == [
        "schedule_activity",
        "start_timer",
        "start_timer",
        "record_local_activity",
        "schedule_activity",
        "schedule_activity",
        "schedule_activity",
    ]


async def test_a_replay_takes_the_same_path_with_the_same_values() -> None:
    engine = Engine()
    live = await run_live_until_the_last_step(engine)
    assert live["replaying"] is False
    # The worker dies; another one replays the whole history.
    instance = engine.start(EveryApi, "wft-2")
    await settle()
    # Only the step without an outcome is sent again; nothing else runs twice.
    assert [(c["type"], c["seq"]) for c in engine.commands] == [("schedule_activity", 7)]
    replayed = dict(engine.last()["args"][0])
    assert replayed.pop("replaying") is True
    live.pop("replaying")
    assert replayed == live  # times, random numbers, uuid, and the first task to finish
    engine.complete(7, "done", at=2_000.0)
    assert engine.last() == {"type": "complete_workflow", "seq": 8, "result": "done"}
    assert instance.finished


async def test_random_and_uuid4_are_seeded_by_the_run_id() -> None:
    @workflow.define(name="dice")
    class Dice:
        @workflow.entrypoint
        async def run(self) -> list[Any]:
            return [workflow.random().randint(1, 6) for _ in range(8)] + [str(workflow.uuid4())]

    def roll(run_id: str) -> Any:
        commands: list[dict[str, Any]] = []
        task = workflow_task("dice", run_id=run_id)
        WorkflowInstance(
            task, workflow.get_definition(Dice), lambda _i, c: commands.append(c)
        ).start()
        return commands[-1]["result"]

    assert roll("run-a") == roll("run-a")
    assert roll("run-a") != roll("run-b")
    with pytest.raises(workflows.TetherError, match=r"workflow.random\(\) can only be called"):
        workflow.random()
    with pytest.raises(workflows.TetherError, match=r"workflow.uuid4\(\) can only be called"):
        workflow.uuid4()


def start(cls: type[Any], input: Any = None) -> Engine:
    engine = Engine()
    engine.start(cls, "wft-1", input)
    return engine


@workflow.define(name="deadline")
class Deadline:
    @workflow.entrypoint
    async def run(self, seconds: float) -> str:
        try:
            return str(await asyncio.wait_for(echo("fast"), seconds))
        except TimeoutError:
            return f"timed out at {workflow.now().timestamp():g}"


@pytest.mark.parametrize("first", ["activity", "timer"])
async def test_wait_for_races_an_activity_against_a_durable_timer(first: str) -> None:
    engine = start(Deadline, 5.0)
    assert engine.commands == [
        {"type": "start_timer", "seq": 1, "seconds": 5.0},
        {
            "type": "schedule_activity",
            "seq": 2,
            "activity": "echo",
            "args": ["fast"],
            "kwargs": {},
            "options": echo.options.model_dump(),
            "session_id": None,
        },
    ]
    if first == "activity":
        engine.complete(2, "fast", at=1_001.0)
        engine.fire(1, at=1_005.0)  # too late: the timer was cancelled, nothing happens
        assert engine.last() == {"type": "complete_workflow", "seq": 3, "result": "fast"}
    else:
        engine.fire(1, at=1_005.0)
        assert engine.last() == {
            "type": "complete_workflow",
            "seq": 3,
            "result": "timed out at 1005",
        }
        engine.complete(2, "fast", at=1_006.0)  # the cancelled activity's outcome: ignored
    assert len(engine.commands) == 3
    # The replay of either history takes the same branch, sending nothing new.
    result = engine.last()["result"]
    engine.history = [e for e in engine.history if e.type != "RunCompleted"]
    engine.start(Deadline, "wft-2", 5.0)
    assert engine.commands == [{"type": "complete_workflow", "seq": 3, "result": result}]


async def test_asyncio_timeout_and_sleep_zero() -> None:
    @workflow.define(name="bounded")
    class Bounded:
        @workflow.entrypoint
        async def run(self) -> str:
            await asyncio.sleep(0)  # only yields: no timer
            try:
                async with asyncio.timeout(60):
                    await echo("slow")
            except TimeoutError:
                return "timed out"
            return "in time"

    engine = start(Bounded)
    assert [(c["type"], c["seq"]) for c in engine.commands] == [
        ("start_timer", 1),
        ("schedule_activity", 2),
    ]
    assert engine.commands[0]["seconds"] == 60.0
    engine.fire(1, at=1_060.0)
    assert engine.last()["result"] == "timed out"


async def test_gather_of_activities_and_background_tasks() -> None:
    @workflow.define(name="fan-out")
    class FanOut:
        @workflow.entrypoint
        async def run(self) -> list[Any]:
            forever = asyncio.create_task(asyncio.sleep(3600))
            results = await asyncio.gather(*(echo(i) for i in range(3)))
            assert not forever.done()
            return list(results)

    engine = start(FanOut)
    assert [(c["type"], c["seq"]) for c in engine.commands] == [
        ("start_timer", 1),
        ("schedule_activity", 2),
        ("schedule_activity", 3),
        ("schedule_activity", 4),
    ]
    for seq in (4, 2, 3):
        engine.complete(seq, seq - 2, at=1_001.0)
    assert engine.last() == {"type": "complete_workflow", "seq": 5, "result": [0, 1, 2]}
    instance = engine.instance
    assert instance is not None
    assert instance.finished
    # The run is over: its background timer task was cancelled with it.
    assert not asyncio.all_tasks(instance._loop)


async def test_the_clock_never_goes_back_and_ignores_missing_times() -> None:
    @workflow.define(name="ticks")
    class Ticks:
        @workflow.entrypoint
        async def run(self) -> list[float]:
            out = []
            for i in range(3):
                await echo(i)
                out.append(workflow.now().timestamp())
            return out

    engine = start(Ticks)
    assert engine.instance is not None
    engine.complete(1, 0, at=1_050.0)
    engine.complete(2, 1, at=1_020.0)  # an out-of-order stamp: the clock stays
    engine.instance.resolve(3, Outcome(True, 2))  # an outcome without a time
    assert engine.last()["result"] == [1_050.0, 1_050.0, 1_050.0]


def test_the_loop_is_driven_only_by_its_instance() -> None:
    loop = WorkflowLoop(5.0, lambda _delay, _handle: None)  # type: ignore[abstract]
    assert loop.time() == 5.0
    loop.advance_to(None)
    loop.advance_to(4.0)
    assert loop.time() == 5.0
    for call in (loop.run_forever, loop.stop, loop.close):
        with pytest.raises(RuntimeError, match="driven by its worker"):
            call()
    ran: list[int] = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0, ran.append, 2)  # due now: no durable timer needed
    assert not loop.is_running()
    loop.activate()
    assert ran == [1, 2]
