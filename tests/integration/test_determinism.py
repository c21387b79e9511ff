"""Deterministic workflow code with real workers: a worker killed mid-run, a replay on
another worker that takes the same path with the same values, and a refused call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import activity, workflow
from worker_runtime.testing import WorkflowEnvironment

held: dict[str, asyncio.Event] = {}
"""The gate the last activity waits at (set by the test, on its own event loop)."""


@workflows.activity()
async def double(x: int) -> int:
    return 2 * x


@workflows.activity()
async def note(values: dict[str, Any]) -> None:
    """Records the values in history (as the activity's arguments) before the kill."""


@workflows.activity()
async def hold() -> str:
    await held["gate"].wait()
    return activity.info().worker_id


@workflow.define(name="deterministic-apis")
class DeterministicApis:
    @workflow.entrypoint
    async def run(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            "started": workflow.now().timestamp(),
            "random": workflow.random().random(),
            "uuid": str(workflow.uuid4()),
        }
        await workflow.sleep(0.05)
        values["after_sleep"] = workflow.now().timestamp()
        await asyncio.sleep(0.05)
        values["after_asyncio_sleep"] = workflow.now().timestamp()
        values["doubled"] = await asyncio.wait_for(double(21), timeout=30)
        values["dice"] = [workflow.random().randint(1, 6) for _ in range(5)]
        await note(values)
        held_on = await hold()
        return {
            "values": values,
            "held_on": held_on,
            "finished_on": workflow.info().worker_id,
            "finished_at": workflow.now().timestamp(),
        }


@workflow.define(name="naps")
class Naps:
    @workflow.entrypoint
    async def run(self) -> None:
        time.sleep(0.01)  # noqa: ASYNC251 - refused in workflow code


async def test_a_replay_after_a_kill_takes_the_same_path_with_the_same_values() -> None:
    held["gate"] = asyncio.Event()
    async with WorkflowEnvironment(workflows=[DeterministicApis], workers=2) as env:
        run_id = await env.start(DeterministicApis)
        for _ in range(500):
            view = env.describe(run_id)
            if any(a.name == "hold" and a.state == "Running" for a in view.activities):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"the run never reached its last step: {view}")
        (first,) = [e for e in env.history(run_id) if e.type == "WorkflowTaskStarted"]
        victim = first.data["worker"]
        await env.kill_worker(victim)
        held["gate"].set()
        view = await env.wait(run_id, timeout=10)
        assert view.phase == "Succeeded", view
        (survivor,) = env.worker_ids
        result = view.result
        assert result["finished_on"] == survivor != victim

        history = env.history(run_id)
        tasks = [e.data["worker"] for e in history if e.type == "WorkflowTaskStarted"]
        assert tasks == [victim, survivor]
        # What the first worker computed (recorded as the note's arguments before the
        # kill) is exactly what the replay computed again on the survivor.
        (noted,) = [
            e for e in history if e.type == "ActivityScheduled" and e.data["activity"] == "note"
        ]
        assert result["values"] == noted.data["args"][0]
        # No step ran twice: one record per timer and per activity.
        timers = [e.data["seq"] for e in history if e.type == "TimerStarted"]
        assert len(timers) == len(set(timers)) == 3
        scheduled = [e.data["activity"] for e in history if e.type == "ActivityScheduled"]
        assert scheduled == ["double", "note", "hold"]

        values = result["values"]
        assert values["doubled"] == 42
        assert values["after_sleep"] >= values["started"] + 0.05
        assert values["after_asyncio_sleep"] >= values["after_sleep"] + 0.05
        assert result["finished_at"] >= values["after_asyncio_sleep"]
        # The workflow clock is history's: each value is the time of a recorded event
        # (to the microsecond a datetime keeps).
        seen = [values["started"], values["after_sleep"], values["after_asyncio_sleep"]]
        for value in [*seen, result["finished_at"]]:
            assert min(abs(value - e.time) for e in history) < 1e-6, value


async def test_a_refused_call_fails_the_run_with_a_clear_reason() -> None:
    async with WorkflowEnvironment(workflows=[Naps]) as env:
        with pytest.raises(workflows.WorkflowFailedError) as info:
            await env.execute(Naps)
    assert info.value.reason == "NonDeterministicCall"
    assert info.value.cause_type == "NonDeterministicCallError"
    assert "time.sleep() in workflow code blocks the worker" in info.value.message
    assert "await workflow.sleep(seconds)" in info.value.message
