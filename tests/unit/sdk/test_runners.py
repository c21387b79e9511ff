"""The activity and workflow runners on their own: plain callbacks, no scheduler."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import workflow
from worker_runtime.activity_runner import ActivityRunner, Completion
from worker_runtime.protocol import ActivityTask, Resolution
from worker_runtime.workflow import get_definition
from worker_runtime.workflow_runner import WorkflowRunner

from .fakes import settle, workflow_task

release: list[asyncio.Event] = []


@pytest.fixture(autouse=True)
def _fresh_release() -> None:
    release[:] = [asyncio.Event()]


@workflows.activity()
async def held() -> str:
    await release[0].wait()
    return "done"


@workflows.activity()
async def beating() -> str:
    workflows.activity.heartbeat({"at": 1})
    await release[0].wait()
    return "done"


@workflow.define(name="one-step")
class OneStep:
    @workflow.entrypoint
    async def run(self) -> Any:
        return await held()


def task(task_id: str, name: str) -> ActivityTask:
    return ActivityTask.model_validate(
        {
            "task_id": task_id,
            "run_id": "r",
            "seq": 1,
            "workflow": "one-step",
            "activity": name,
            "args": [],
            "kwargs": {},
            "attempt": 1,
            "options": {"heartbeat_timeout": 0.01},
        }
    )


class Calls:
    def __init__(self) -> None:
        self.done: list[tuple[str, Completion | None, list[str]]] = []
        self.heartbeats: list[tuple[str, Any]] = []
        self.runner: ActivityRunner | None = None

    def on_done(self, task_id: str, completion: Completion | None) -> None:
        assert self.runner is not None
        self.done.append((task_id, completion, list(self.runner.task_ids())))

    def on_heartbeat(self, task_id: str, details: Any) -> None:
        self.heartbeats.append((task_id, details))


@pytest.fixture
async def calls() -> AsyncIterator[Calls]:
    c = Calls()
    c.runner = ActivityRunner(
        {held.name: held, beating.name: beating},
        worker_id="w",
        pod="p",
        node="n",
        slots=2,
        context=contextvars.Context(),
        on_done=c.on_done,
        on_heartbeat=c.on_heartbeat,
    )
    c.runner.open(asyncio.get_running_loop())
    yield c
    c.runner.abort()
    c.runner.close()


async def test_an_attempt_is_held_from_start_and_reported_after_it_left(calls: Calls) -> None:
    runner = calls.runner
    assert runner is not None
    runner.start(task("a", "held"))
    assert list(runner.task_ids()) == ["a"]
    assert runner.free_slots == 1
    release[0].set()
    await settle()
    assert calls.done == [("a", {"task_id": "a", "ok": True, "result": "done"}, [])]


async def test_a_voided_attempt_reports_nothing_and_heartbeats_reach_the_callback(
    calls: Calls,
) -> None:
    runner = calls.runner
    assert runner is not None
    runner.start(task("b", "beating"))
    await asyncio.sleep(0.05)
    assert calls.heartbeats == [("b", {"at": 1})]
    assert runner.cancel("b")
    assert not runner.cancel("unknown")
    await settle()
    assert calls.done == [("b", None, [])]


async def test_drain_cuts_what_is_left_short_as_a_retryable_worker_stop(calls: Calls) -> None:
    runner = calls.runner
    assert runner is not None
    runner.start(task("c", "held"))
    await runner.drain(0.01)
    ((task_id, completion, _),) = calls.done
    assert task_id == "c"
    assert completion is not None
    assert completion["error"]["reason"] == "WorkerStopped"
    assert not completion["error"]["non_retryable"]


async def test_abort_reports_nothing(calls: Calls) -> None:
    runner = calls.runner
    assert runner is not None
    runner.start(task("d", "held"))
    runner.abort()
    await settle()
    assert calls.done == []
    assert list(runner.task_ids()) == []


async def test_the_workflow_runner_holds_a_live_instance_and_emits_in_order() -> None:
    commands: list[tuple[str, str, dict[str, Any]]] = []
    runner = WorkflowRunner(
        {"one-step": get_definition(OneStep)},
        worker_id="w",
        pod="p",
        node="n",
        on_command=lambda run, wft, command: commands.append((run, wft, command)),
    )
    runner.start(workflow_task("one-step", run_id="r", task_id="wft-1"))
    await settle()
    assert list(runner.task_ids()) == ["wft-1"]
    assert [(r, t, c["type"]) for r, t, c in commands] == [("r", "wft-1", "schedule_activity")]
    runner.resolve(Resolution(run_id="r", workflow_task_id="wft-1", seq=1, ok=True, result="done"))
    await settle()
    assert commands[-1] == ("r", "wft-1", {"type": "complete_workflow", "seq": 2, "result": "done"})
    assert list(runner.task_ids()) == []


async def test_an_unregistered_workflow_fails_its_run_naming_the_worker() -> None:
    commands: list[tuple[str, str, dict[str, Any]]] = []
    runner = WorkflowRunner(
        {},
        worker_id="w9",
        pod="p",
        node="n",
        on_command=lambda run, wft, command: commands.append((run, wft, command)),
    )
    runner.start(workflow_task("missing", run_id="r2", task_id="wft-2"))
    ((run_id, wft, command),) = commands
    assert (run_id, wft, command["type"]) == ("r2", "wft-2", "fail_workflow")
    assert command["error"]["reason"] == "WorkflowNotFound"
    assert command["error"]["message"] == "workflow 'missing' is not registered on worker w9"
    assert list(runner.task_ids()) == []
    assert not runner.cancel("wft-2", "gone")
