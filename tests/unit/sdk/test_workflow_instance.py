"""WorkflowInstance: commands, replay from history, non-determinism, sessions, local activities."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    StickyChildError,
    StickyStrategy,
    get_sticky_worker_session,
    run_activities_locally,
    run_sticky_worker_session,
    workflow,
)
from worker_runtime.protocol import WorkflowTask
from worker_runtime.workflow_instance import Outcome, WorkflowInstance

from .fakes import event, settle, workflow_task

# --------------------------------------------------------------------------- definitions

calls: list[str] = []


@workflows.activity()
async def greet(name: str) -> str:
    calls.append(f"greet {name}")
    return f"hello {name}"


@workflows.activity(sticky_to_worker=True)
async def predict(x: int) -> int:
    return x + 1


@workflow.define(name="greeter")
class Greeter:
    @workflow.entrypoint
    async def run(self, name: str) -> str:
        return await greet(name)


@workflow.define(name="two-steps")
class TwoSteps:
    @workflow.entrypoint
    async def run(self) -> list[str]:
        return [await greet("a"), await greet("b")]


@workflow.define(name="other")
class OtherOrder:
    @workflow.entrypoint
    async def run(self) -> str:
        return await predict(1) and "x"


_started: list[WorkflowInstance] = []


@pytest.fixture(autouse=True)
async def _stop_what_a_test_left_running() -> AsyncIterator[None]:
    """A worker cancels the workflows it drops; so does each test, once it has looked."""
    yield
    for instance in _started:
        instance.cancel()
    _started.clear()
    await asyncio.sleep(0)  # the cancellations run at the loop's next turn


def start(cls: type[Any], task: WorkflowTask) -> tuple[WorkflowInstance, list[dict[str, Any]]]:
    commands: list[dict[str, Any]] = []
    instance = WorkflowInstance(
        task, workflow.get_definition(cls), lambda _i, c: commands.append(c), worker_id="w1"
    )
    instance.start()
    _started.append(instance)
    return instance, commands


def types(commands: list[dict[str, Any]]) -> list[str]:
    return [c["type"] for c in commands]


# --------------------------------------------------------------------------- fresh runs


async def test_remote_activity_command_and_completion() -> None:
    instance, commands = start(Greeter, workflow_task("greeter", "bob"))
    await settle()
    assert commands == [
        {
            "type": "schedule_activity",
            "seq": 1,
            "activity": "greet",
            "args": ["bob"],
            "kwargs": {},
            "options": greet.options.model_dump(),
            "session_id": None,
        }
    ]
    instance.resolve(1, Outcome(True, "hello bob"), "wft-1")
    await settle()
    assert commands[-1] == {"type": "complete_workflow", "seq": 2, "result": "hello bob"}
    assert instance.finished


async def test_failed_resolution_raises_activity_error_and_fails_run() -> None:
    @workflow.define(name="catcher")
    class Catcher:
        @workflow.entrypoint
        async def run(self) -> dict[str, Any]:
            try:
                await greet("x")
            except ActivityError as exc:
                return {
                    "activity": exc.activity,
                    "attempts": exc.attempts,
                    "type": exc.cause_type,
                    "message": exc.message,
                }
            return {}

    instance, commands = start(Catcher, workflow_task("catcher"))
    await settle()
    instance.resolve(
        1,
        Outcome(
            False, error=workflows.protocol.ErrorInfo(type="ValueError", message="boom"), attempts=3
        ),
    )
    await settle()
    assert commands[-1]["result"] == {
        "activity": "greet",
        "attempts": 3,
        "type": "ValueError",
        "message": "boom",
    }

    instance, commands = start(Greeter, workflow_task("greeter", "x"))
    await settle()
    instance.resolve(1, Outcome(False, error=workflows.protocol.ErrorInfo(type="KeyError")))
    await settle()
    assert commands[-1]["type"] == "fail_workflow"
    assert commands[-1]["error"]["type"] == "ActivityError"


async def test_input_mapping() -> None:
    @workflow.define(name="mapper")
    class Mapper:
        @workflow.entrypoint
        async def run(self, a: Any = None, b: int = 0) -> list[Any]:
            return [a, b]

    for value, expected in [
        (None, [None, 0]),
        ({"a": 1, "b": 2}, [1, 2]),
        ({"a": 1, "zzz": 2}, [{"a": 1, "zzz": 2}, 0]),
        ([1, 2], [[1, 2], 0]),
        ("s", ["s", 0]),
    ]:
        _, commands = start(Mapper, workflow_task("mapper", value))
        await settle()
        assert commands == [{"type": "complete_workflow", "seq": 1, "result": expected}], value


async def test_workflow_exception_fails_run() -> None:
    @workflow.define(name="boom")
    class Boom:
        @workflow.entrypoint
        async def run(self) -> None:
            raise ApplicationError("nope", type="Custom")

    _, commands = start(Boom, workflow_task("boom"))
    await settle()
    assert types(commands) == ["fail_workflow"]
    assert commands[0]["error"]["type"] == "Custom"
    assert commands[0]["error"]["message"] == "nope"


async def test_non_json_result_fails_run() -> None:
    @workflow.define(name="setter")
    class Setter:
        @workflow.entrypoint
        async def run(self) -> Any:
            return {1, 2}

    _, commands = start(Setter, workflow_task("setter"))
    await settle()
    assert commands[0]["type"] == "fail_workflow"
    assert commands[0]["error"]["type"] == "PayloadError"


# --------------------------------------------------------------------------- replay


async def test_replay_resolves_recorded_outcomes_without_commands() -> None:
    history = [
        event("RunStarted", workflow="two-steps", input=None),
        event("ActivityScheduled", seq=1, activity="greet", args=["a"], kwargs={}),
        event("ActivityCompleted", seq=1, attempt=1, result="hello a"),
        event("ActivityScheduled", seq=2, activity="greet", args=["b"], kwargs={}),
        event("ActivityFailed", seq=2, attempt=1, error={"type": "X"}, retry_at=5.0),
        event("ActivityCompleted", seq=2, attempt=2, result="hello b"),
    ]
    calls.clear()
    _, commands = start(TwoSteps, workflow_task("two-steps", history=history))
    await settle()
    assert commands == [{"type": "complete_workflow", "seq": 3, "result": ["hello a", "hello b"]}]
    assert calls == []


async def test_replay_resends_command_without_outcome() -> None:
    history = [
        event("ActivityScheduled", seq=1, activity="greet", args=["a"], kwargs={}),
        event("ActivityCompleted", seq=1, attempt=1, result="hello a"),
        event("ActivityScheduled", seq=2, activity="greet", args=["b"], kwargs={}),
    ]
    instance, commands = start(TwoSteps, workflow_task("two-steps", history=history))
    await settle()
    assert types(commands) == ["schedule_activity"]
    assert commands[0]["seq"] == 2
    assert workflows.workflow.WorkflowInfo  # exported
    instance.resolve(2, Outcome(True, "hello b"), "wft-1")
    await settle()
    assert commands[-1]["result"] == ["hello a", "hello b"]


async def test_replay_final_failure_raises() -> None:
    history = [
        event("ActivityScheduled", seq=1, activity="greet", args=["x"], kwargs={}),
        event(
            "ActivityFailed",
            seq=1,
            attempt=3,
            error={"type": "ValueError", "message": "m"},
            retry_at=None,
        ),
    ]
    _, commands = start(Greeter, workflow_task("greeter", "x", history))
    await settle()
    assert commands[-1]["type"] == "fail_workflow"
    assert "after 3 attempt(s)" in commands[-1]["error"]["message"]


async def test_non_determinism_fails_the_run() -> None:
    history = [event("ActivityScheduled", seq=1, activity="predict", args=[1], kwargs={})]
    _, commands = start(Greeter, workflow_task("greeter", "x", history))
    await settle()
    assert len(commands) == 1
    cmd = commands[0]
    assert cmd["type"] == "fail_workflow"
    assert cmd["error"]["type"] == "NonDeterminismError"
    assert cmd["error"]["reason"] == "NonDeterminism"
    assert "seq 1" in cmd["error"]["message"]
    assert "'predict'" in cmd["error"]["message"]
    assert "'greet'" in cmd["error"]["message"]


async def test_non_determinism_on_kind() -> None:
    history = [event("TimerStarted", seq=1, fire_at=1.0)]
    _, commands = start(Greeter, workflow_task("greeter", "x", history))
    await settle()
    assert types(commands) == ["fail_workflow"]
    assert "start_timer" in commands[0]["error"]["message"]


async def test_early_and_stale_resolutions() -> None:
    history = [event("ActivityScheduled", seq=1, activity="greet", args=["x"], kwargs={})]
    task = workflow_task("greeter", "x", history)
    commands: list[dict[str, Any]] = []
    instance = WorkflowInstance(
        task, workflow.get_definition(Greeter), lambda _i, c: commands.append(c)
    )
    instance.resolve(1, Outcome(True, "stale"), "wft-0")  # another workflow task: ignored
    instance.resolve(1, Outcome(True, "early"), "wft-1")  # before the code re-creates seq 1
    instance.start()
    await settle()
    assert commands == [{"type": "complete_workflow", "seq": 2, "result": "early"}]


async def test_info_and_now() -> None:
    seen: dict[str, Any] = {}

    @workflow.define(name="infos")
    class Infos:
        @workflow.entrypoint
        async def run(self) -> None:
            seen["before"] = workflow.info()
            await greet("a")
            seen["after"] = workflow.info()
            seen["now"] = workflow.now()

    history = [
        event("WorkflowTaskStarted", task_id="wft-1", attempt=1, worker="w1"),
        event("ActivityScheduled", seq=1, activity="greet", args=["a"], kwargs={}),
        event("ActivityCompleted", seq=1, attempt=1, result="hello a"),
    ]
    start(Infos, workflow_task("infos", history=history, session_id="run-1/wf"))
    await settle()
    assert seen["before"].is_replaying
    assert not seen["after"].is_replaying
    assert seen["before"].run_id == "run-1"
    assert seen["before"].workflow == "infos"
    assert seen["before"].session == "run-1/wf"
    assert seen["now"].timestamp() == 1_700_000_000.0
    with pytest.raises(workflows.TetherError, match="workflow code"):
        workflow.info()


async def test_cancel_stops_without_commands() -> None:
    instance, commands = start(Greeter, workflow_task("greeter", "x"))
    await settle()
    instance.cancel()
    instance.resolve(1, Outcome(True, "late"), "wft-1")
    await settle()
    assert types(commands) == ["schedule_activity"]


# --------------------------------------------------------------------------- sessions


async def test_sticky_session_scope() -> None:
    @workflow.define(name="ml")
    class ML:
        @workflow.entrypoint
        async def run(self, batch: list[int]) -> list[int]:
            async with run_sticky_worker_session():
                results = list(await asyncio.gather(*(predict(x) for x in batch)))
            results.append(await greet("after") and 0)
            return results

    instance, commands = start(ML, workflow_task("ml", [1, 2]))
    await settle()
    assert commands[0] == {
        "type": "open_session",
        "seq": 1,
        "session_id": "run-1/s1",
        "strategy": "SOFT",
    }
    assert [(c["seq"], c["session_id"]) for c in commands[1:]] == [(2, "run-1/s1"), (3, "run-1/s1")]
    instance.resolve(2, Outcome(True, 2), "wft-1")
    instance.resolve(3, Outcome(True, 3), "wft-1")
    await settle()
    assert commands[3] == {"type": "close_session", "seq": 4, "session_id": "run-1/s1"}
    assert commands[4]["activity"] == "greet"
    assert commands[4]["session_id"] is None
    instance.resolve(5, Outcome(True, "x"), "wft-1")
    await settle()
    assert commands[-1] == {"type": "complete_workflow", "seq": 6, "result": [2, 3, 0]}


async def test_session_reuse_and_replay_skips_recorded_open_and_close() -> None:
    @workflow.define(name="multi-batch")
    class MultiBatch:
        @workflow.entrypoint
        async def run(self, batches: list[list[int]]) -> list[list[int]]:
            session = await get_sticky_worker_session(StickyStrategy.HARD)
            out = []
            for batch in batches:
                async with run_sticky_worker_session(session):
                    out.append([await predict(i) for i in batch])
            return out

    instance, commands = start(MultiBatch, workflow_task("multi-batch", [[1], [2]]))
    await settle()
    assert commands[0]["strategy"] == "HARD"
    instance.resolve(2, Outcome(True, 2), "wft-1")
    await settle()
    instance.resolve(3, Outcome(True, 3), "wft-1")
    await settle()
    assert types(commands) == [
        "open_session",
        "schedule_activity",
        "schedule_activity",
        "complete_workflow",
    ]
    assert {c.get("session_id") for c in commands[1:3]} == {"run-1/s1"}


async def test_sticky_to_worker_uses_default_session_and_sticky_workflow_session() -> None:
    @workflow.define(name="defaults")
    class Defaults:
        @workflow.entrypoint
        async def run(self) -> None:
            await asyncio.gather(predict(1), predict(2))

    _instance, commands = start(Defaults, workflow_task("defaults"))
    await settle()
    assert commands[0] == {
        "type": "open_session",
        "seq": 1,
        "session_id": "run-1/default",
        "strategy": "SOFT",
    }
    assert [c["session_id"] for c in commands[1:]] == ["run-1/default"] * 2

    _, commands = start(Defaults, workflow_task("defaults", session_id="run-1/wf"))
    await settle()
    assert types(commands) == ["schedule_activity", "schedule_activity"]
    assert [c["session_id"] for c in commands] == ["run-1/wf"] * 2


# --------------------------------------------------------------------------- children, timers


@workflow.define(name="child")
class Child:
    @workflow.entrypoint
    async def run(self, n: int) -> int:
        return n


@workflow.define(name="sticky-child", sticky=StickyStrategy.SOFT)
class StickyChild:
    @workflow.entrypoint
    async def run(self) -> str:
        return workflow.info().worker_id


async def test_execute_child_and_sticky_errors() -> None:
    errors: list[str] = []

    @workflow.define(name="parent", sticky=StickyStrategy.SOFT)
    class Parent:
        @workflow.entrypoint
        async def run(self) -> Any:
            try:
                await workflow.execute_child(Child, 1, sticky=True)
            except StickyChildError as exc:
                errors.append(str(exc))
            first = await workflow.execute_child(StickyChild, sticky=True)
            try:
                await workflow.execute_child(Child, {"n": 2})
            except ChildWorkflowError as exc:
                return [first, exc.reason, exc.message]
            return None

    instance, commands = start(Parent, workflow_task("parent", session_id="run-1/wf"))
    await settle()
    assert commands == [
        {
            "type": "start_child",
            "seq": 1,
            "workflow": "sticky-child",
            "input": None,
            "sticky": True,
            "session_id": "run-1/wf",
        }
    ]
    instance.resolve(1, Outcome(True, "w1"), "wft-1")
    await settle()
    assert commands[-1]["workflow"] == "child"
    assert commands[-1]["input"] == {"n": 2}
    instance.resolve(
        2,
        Outcome(
            False,
            error=workflows.protocol.ErrorInfo(
                type="ChildNotRegistered", reason="ChildNotRegistered", message="not on worker"
            ),
        ),
        "wft-1",
    )
    await settle()
    assert commands[-1]["result"] == ["w1", "ChildNotRegistered", "not on worker"]
    assert len(errors) == 1
    assert "sticky=StickyStrategy.SOFT" in errors[0]


async def test_durable_sleep() -> None:
    @workflow.define(name="sleeper")
    class Sleeper:
        @workflow.entrypoint
        async def run(self) -> str:
            await workflow.sleep(30)
            return "woke"

    instance, commands = start(Sleeper, workflow_task("sleeper"))
    await settle()
    assert commands == [{"type": "start_timer", "seq": 1, "seconds": 30.0}]
    instance.resolve(1, Outcome(True), "wft-1")
    await settle()
    assert commands[-1]["result"] == "woke"
    history = [event("TimerStarted", seq=1, fire_at=2.0), event("TimerFired", seq=1)]
    _, commands = start(Sleeper, workflow_task("sleeper", history=history))
    await settle()
    assert types(commands) == ["complete_workflow"]


# --------------------------------------------------------------------------- local activities

attempts: list[int] = []


@workflows.activity(retry_policy_max_attempts=3, retry_policy_initial_interval=0.001)
async def flaky(fail_times: int) -> dict[str, int]:
    info = workflows.activity.info()
    attempts.append(info.attempt)
    if info.attempt <= fail_times:
        raise RuntimeError(f"attempt {info.attempt}")
    return {"attempt": info.attempt}


@workflows.activity(
    start_to_close_timeout=0.02, retry_policy_max_attempts=2, retry_policy_initial_interval=0
)
def slow_sync(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


@workflows.activity(non_retryable_errors=[KeyError], retry_policy_initial_interval=0)
def picky() -> None:
    raise KeyError("k")


@workflows.activity()
def tuple_maker() -> Any:
    return (1, 2)


@workflow.define(name="local")
class Local:
    @workflow.entrypoint
    async def run(self, mode: str) -> Any:
        with run_activities_locally():
            if mode == "flaky":
                return await flaky(2)
            if mode == "too-flaky":
                return await flaky(5)
            if mode == "slow":
                return await slow_sync(0.2)
            if mode == "picky":
                return await picky()
            if mode == "tuple":
                return await tuple_maker()
            if mode == "own-timeout":
                return await times_out_itself()
            if mode == "pair":
                return await asyncio.gather(naps(0.1, "a"), naps(0.1, "b"))
            if mode == "file":
                return await reads_a_file(__file__)
            if mode == "own-deadline":
                return await keeps_its_own_deadline()
            return [await greet(str(i)) for i in range(int(mode))]


@workflows.activity(start_to_close_timeout=5, retry_policy_max_attempts=1)
async def times_out_itself() -> None:
    raise TimeoutError("upstream did not answer")


naps_cancelled: list[str] = []


@workflows.activity()
async def naps(seconds: float, name: str) -> str:
    try:
        await asyncio.sleep(seconds)  # a real sleep: activity code, not a durable timer
    except asyncio.CancelledError:
        naps_cancelled.append(name)
        raise
    return name


@workflows.activity(retry_policy_max_attempts=1)
async def keeps_its_own_deadline() -> str:
    async with asyncio.timeout(0.05):  # the activity's own task, not whoever resolved it
        await asyncio.sleep(0.3)
    return "finished"


@workflows.activity()
def reads_a_file(path: str) -> int:
    with open(path) as f:  # I/O is fine in activity code, local or not
        return len(f.readline())


async def run_local(mode: str, history: list[Any] | None = None) -> list[dict[str, Any]]:
    _, commands = start(Local, workflow_task("local", mode, history))
    for _ in range(100):
        await settle()
        if commands and commands[-1]["type"] in ("complete_workflow", "fail_workflow"):
            break
        await asyncio.sleep(0.01)
    return commands


async def test_local_activity_retries_and_records() -> None:
    attempts.clear()
    commands = await run_local("flaky")
    assert attempts == [1, 2, 3]
    assert commands == [
        {
            "type": "record_local_activity",
            "seq": 1,
            "activity": "flaky",
            "attempts": 3,
            "ok": True,
            "result": {"attempt": 3},
            "error": None,
        },
        {"type": "complete_workflow", "seq": 2, "result": {"attempt": 3}},
    ]


async def test_local_activity_exhausted_and_non_retryable() -> None:
    commands = await run_local("too-flaky")
    assert commands[0]["ok"] is False
    assert commands[0]["attempts"] == 3
    assert commands[0]["error"]["type"] == "RuntimeError"
    assert commands[1]["type"] == "fail_workflow"
    assert commands[1]["error"]["type"] == "ActivityError"
    commands = await run_local("picky")
    assert commands[0]["attempts"] == 1
    assert commands[0]["error"]["type"] == "KeyError"


async def test_local_activity_timeout() -> None:
    commands = await run_local("slow")
    assert commands[0]["ok"] is False
    assert commands[0]["attempts"] == 2
    assert commands[0]["error"]["type"] == "StartToCloseTimeout"


async def test_local_activity_own_timeout_error_is_not_start_to_close() -> None:
    commands = await run_local("own-timeout")
    assert commands[0]["error"]["type"] == "TimeoutError"
    assert commands[0]["error"]["message"] == "upstream did not answer"


async def test_local_activities_that_wait_run_concurrently_on_the_workers_loop() -> None:
    began = time.monotonic()
    commands = await run_local("pair")
    assert time.monotonic() - began < 0.19  # side by side, not one after the other
    assert types(commands) == ["record_local_activity"] * 2 + ["complete_workflow"]
    assert commands[-1]["result"] == ["a", "b"]


async def test_a_local_activity_waiting_when_its_run_is_cancelled_is_cancelled() -> None:
    naps_cancelled.clear()
    instance, commands = start(Local, workflow_task("local", "pair"))
    await asyncio.sleep(0.02)
    instance.cancel()
    await asyncio.sleep(0.02)
    assert sorted(naps_cancelled) == ["a", "b"]
    assert commands == []


async def test_a_local_activity_runs_as_its_own_task() -> None:
    commands = await run_local("own-deadline")
    assert commands[0]["ok"] is False
    assert commands[0]["error"]["type"] == "TimeoutError"


async def test_local_activity_code_may_do_io() -> None:
    commands = await run_local("file")
    assert commands[0]["ok"] is True
    assert commands[-1]["result"] > 0


async def test_local_activity_result_is_json_normalised() -> None:
    commands = await run_local("tuple")
    assert commands[-1]["result"] == [1, 2]


async def test_local_activity_replay_does_not_run() -> None:
    history = [
        event(
            "LocalActivityRecorded",
            seq=1,
            activity="flaky",
            attempts=1,
            ok=True,
            result={"attempt": 9},
            error=None,
        )
    ]
    attempts.clear()
    commands = await run_local("flaky", history)
    assert attempts == []
    assert commands == [{"type": "complete_workflow", "seq": 2, "result": {"attempt": 9}}]


async def test_local_activity_overhead_is_small() -> None:
    n = 2000
    begin = time.perf_counter()
    commands = await run_local(str(n))
    elapsed = time.perf_counter() - begin
    assert len(commands) == n + 1
    assert elapsed / n < 0.001, f"{elapsed / n * 1e3:.3f} ms per local activity"


@workflow.define(name="who-am-i")
class WhoAmI:
    @workflow.entrypoint
    async def run(self) -> bool:
        return workflow.info().cold_start


@pytest.mark.parametrize(
    ("earlier_worker", "cold"),
    [(None, True), ("w2", True), ("w1", False)],
    ids=["first-task", "moved-here", "back-on-same-worker"],
)
async def test_workflow_info_cold_start(earlier_worker: str | None, cold: bool) -> None:
    history = [event("RunStarted", run_id="run-1", workflow="who-am-i")]
    if earlier_worker is not None:
        history.append(event("WorkflowTaskStarted", task_id="wft-0", worker=earlier_worker))
    history.append(event("WorkflowTaskStarted", task_id="wft-1", worker="w1"))
    _, commands = start(WhoAmI, workflow_task("who-am-i", history=history))
    await settle()
    assert commands[-1]["type"] == "complete_workflow"
    assert commands[-1]["result"] is cold
