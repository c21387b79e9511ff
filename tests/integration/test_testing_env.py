"""worker_runtime.testing: real SDK workers and the real engine, in-process."""

from __future__ import annotations

import asyncio
import time

import pytest

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.testing import WorkflowEnvironment

gate = asyncio.Event()


@workflows.activity()
async def double(x: int) -> int:
    return 2 * x


@workflows.activity(retry_policy_max_attempts=1)
async def explode(message: str) -> None:
    raise ValueError(message)


@workflows.activity()
async def where() -> str:
    return activity.info().worker_id


@workflows.activity()
async def wait_for_gate() -> str:
    await gate.wait()
    return activity.info().worker_id


@workflows.workflow.define(name="doubler")
class Doubler:
    @workflows.workflow.entrypoint
    async def run(self, x: int) -> int:
        return await double(await double(x))


@workflows.workflow.define(name="exploder")
class Exploder:
    @workflows.workflow.entrypoint
    async def run(self, message: str) -> None:
        await explode(message)


@workflows.workflow.define(name="sticky-pair")
class StickyPair:
    @workflows.workflow.entrypoint
    async def run(self) -> list[str]:
        async with run_sticky_worker_session(strategy=StickyStrategy.SOFT):
            first = await where()
            second = await wait_for_gate()
        return [first, second]


ALL = [Doubler, Exploder, StickyPair]


async def test_execute_runs_a_workflow_with_activities_in_milliseconds() -> None:
    async with WorkflowEnvironment(workflows=ALL) as env:
        started = time.perf_counter()
        assert await env.execute(Doubler, 3) == 12
        assert time.perf_counter() - started < 1.0
        run_id = await env.start(Doubler, 5)
        view = await env.wait(run_id)
        assert (view.phase, view.result) == ("Succeeded", 20)
        assert [a.name for a in env.describe(run_id).activities] == ["double", "double"]
        assert env.history(run_id)[-1].type == "RunCompleted"


async def test_many_runs_on_several_workers() -> None:
    async with WorkflowEnvironment(workflows=ALL, workers=3) as env:
        assert len(env.worker_ids) == 3
        results = await asyncio.gather(*(env.execute(Doubler, i) for i in range(30)))
        assert results == [4 * i for i in range(30)]


async def test_a_failed_run_raises_workflow_failed_error() -> None:
    async with WorkflowEnvironment(workflows=ALL) as env:
        with pytest.raises(workflows.WorkflowFailedError) as info:
            await env.execute(Exploder, "kaboom")
        assert "kaboom" in str(info.value)


async def test_killing_the_session_worker_rebinds_a_soft_session() -> None:
    gate.clear()
    async with WorkflowEnvironment(workflows=ALL, workers=2) as env:
        run_id = await env.start(StickyPair)
        # Wait until the second activity runs, then crash its worker.
        for _ in range(500):
            view = env.describe(run_id)
            if len(view.activities) == 2 and view.activities[1].state == "Running":
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail(f"the second activity never started: {view}")
        victim = view.activities[1].worker
        assert victim is not None
        await env.kill_worker(victim)
        assert victim not in env.worker_ids
        (session,) = env.describe(run_id).sessions
        assert session.state in ("Broken", "Open")
        gate.set()
        started = time.perf_counter()
        view = await env.wait(run_id, timeout=10)
        assert view.phase == "Succeeded", view
        # `wait` returns when the run ends (RunEnded), not at its timeout.
        assert time.perf_counter() - started < 5.0
        (survivor,) = env.worker_ids
        assert view.result == [victim, survivor] or view.result[1] == survivor
        # The killed worker can come back as a new process.
        assert await env.add_worker(victim) == victim
        assert sorted(env.worker_ids) == sorted([victim, survivor])
