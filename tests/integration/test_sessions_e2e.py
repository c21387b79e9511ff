"""Sticky sessions end to end: real SDK workers, the real scheduler and engine, in-process.

Workflows run on a worker that registers no activities ("wf"), so killing an activity
worker never loses the workflow task and each test sees only session behaviour. Each
test keys the module-level counters and gates by its own name.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

import worker_runtime as workflows
from tether_operator.engine import EngineConfig
from worker_runtime import (
    ActivityDefinition,
    ChildWorkflowError,
    StickyStrategy,
    activity,
    run_sticky_worker_session,
)
from worker_runtime.protocol import SessionView
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

from .waiting import until

COUNTS: Counter[str] = Counter()
"""How often each `key/step` really ran, and on which worker (`key/step@worker`)."""
GATES: dict[str, asyncio.Event] = {}
"""Per-test gates that `hold_where` waits on (created inside the test, on its loop)."""


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    """Counters start at zero for every test, even when a test is re-run in one process."""
    COUNTS.clear()
    GATES.clear()


def gate(key: str) -> asyncio.Event:
    GATES[key] = asyncio.Event()
    return GATES[key]


# ---------------------------------------------------------------------- activities


def where_i_am(key: str, step: str) -> dict[str, Any]:
    info = activity.info()
    COUNTS[f"{key}/{step}"] += 1
    COUNTS[f"{key}/{step}@{info.worker_id}"] += 1
    return {"worker": info.worker_id, "cold_start": info.cold_start, "attempt": info.attempt}


@activity()
async def where(key: str, step: str) -> dict[str, Any]:
    return where_i_am(key, step)


@activity()
async def hold_where(key: str, step: str) -> dict[str, Any]:
    found = where_i_am(key, step)
    await GATES[key].wait()
    return found


# ---------------------------------------------------------------------- workflows


async def three_steps(key: str, strategy: StickyStrategy) -> list[dict[str, Any]]:
    async with run_sticky_worker_session(strategy=strategy):
        first = await where(key, "first")
        held = await hold_where(key, "held")
        last = await where(key, "last")
    return [first, held, last]


@workflows.workflow.define(name="soft-session")
class SoftSession:
    @entrypoint
    async def run(self, key: str) -> list[dict[str, Any]]:
        return await three_steps(key, StickyStrategy.SOFT)


@workflows.workflow.define(name="hard-session")
class HardSession:
    @entrypoint
    async def run(self, key: str) -> list[dict[str, Any]]:
        return await three_steps(key, StickyStrategy.HARD)


@workflows.workflow.define(name="sticky-child-e2e", sticky=StickyStrategy.SOFT)
class StickyChild:
    @entrypoint
    async def run(self) -> str:
        return workflows.workflow.info().worker_id


@workflows.workflow.define(name="sticky-parent-e2e", sticky=StickyStrategy.SOFT)
class StickyParent:
    @entrypoint
    async def run(self) -> dict[str, Any]:
        try:
            await workflows.workflow.execute_child(StickyChild, sticky=True)
        except ChildWorkflowError as exc:
            return {"reason": exc.reason, "message": exc.message}
        return {}


WORKFLOWS = [SoftSession, HardSession, StickyChild, StickyParent]
ACTIVITIES: list[ActivityDefinition[..., Any]] = [where, hold_where]


async def session_env(env: WorkflowEnvironment, first: str, node: str = "node-0") -> None:
    """A workflow-only worker and one activity worker, `first`, that every session binds to."""
    await env.add_worker("wf", node="node-0", workflows=WORKFLOWS, activities=[])
    await env.add_worker(first, node=node, workflows=[], activities=ACTIVITIES)


def session_of(env: WorkflowEnvironment, run_id: str) -> SessionView:
    (session,) = env.describe(run_id).sessions
    return session


# ---------------------------------------------------------------------- tests


async def test_a_soft_session_rebinds_to_a_worker_on_the_same_node() -> None:
    key = "soft"
    release = gate(key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await session_env(env, "w-first", node="node-1")
        run_id = await env.start(SoftSession, key)
        await until(lambda: COUNTS[f"{key}/held"] == 1, what="the held step to start")
        # Candidates for the rebinding: another node first, the same node last.
        await env.add_worker("w-other-node", node="node-2", workflows=[], activities=ACTIVITIES)
        await env.add_worker("w-same-node", node="node-1", workflows=[], activities=ACTIVITIES)

        await env.kill_worker("w-first")
        broken = [e.data for e in env.history(run_id) if e.type == "SessionBroken"]
        assert [b["reason"] for b in broken] == ["ProcessExited"]
        release.set()
        view = await env.wait(run_id)

        assert view.phase == "Succeeded", view.error
        first, held, last = view.result
        assert first == {"worker": "w-first", "cold_start": True, "attempt": 1}
        # The interrupted step is retried on the new worker, which starts cold.
        assert held == {"worker": "w-same-node", "cold_start": True, "attempt": 2}
        assert last == {"worker": "w-same-node", "cold_start": False, "attempt": 1}
        (session,) = view.sessions
        assert session.workers == ["w-first", "w-same-node"]
        assert COUNTS[f"{key}/first"] == COUNTS[f"{key}/last"] == 1
        assert COUNTS[f"{key}/held@w-other-node"] == 0


async def test_a_hard_session_waits_for_its_worker_to_restart() -> None:
    key = "hard-restart"
    release = gate(key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await session_env(env, "w-hard")
        run_id = await env.start(HardSession, key)
        await until(lambda: COUNTS[f"{key}/held"] == 1, what="the held step to start")
        await env.add_worker("w-idle", workflows=[], activities=ACTIVITIES)

        await env.kill_worker("w-hard")
        release.set()  # the step could finish at once, if it ran anywhere
        await asyncio.sleep(0.3)
        assert env.describe(run_id).phase == "Running"
        session = session_of(env, run_id)
        assert (session.state, session.reason) == ("Broken", "ProcessExited")
        assert COUNTS[f"{key}/held"] == 1
        assert COUNTS[f"{key}/held@w-idle"] == 0

        await env.add_worker("w-hard")  # the same pod, a new process
        view = await env.wait(run_id)

        assert view.phase == "Succeeded", view.error
        first, held, last = view.result
        assert first == {"worker": "w-hard", "cold_start": True, "attempt": 1}
        assert held == {"worker": "w-hard", "cold_start": True, "attempt": 2}
        assert last == {"worker": "w-hard", "cold_start": False, "attempt": 1}
        assert set(view.sessions[0].workers) == {"w-hard"}
        assert COUNTS[f"{key}/held@w-idle"] == COUNTS[f"{key}/last@w-idle"] == 0


async def test_a_hard_session_fails_the_run_after_its_schedule_timeout() -> None:
    key = "hard-timeout"
    gate(key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await session_env(env, "w-hard")
        await env.add_worker("w-idle", workflows=[], activities=ACTIVITIES)
        run_id = await env.start(HardSession, key, schedule_timeout=0.5)
        await until(lambda: COUNTS[f"{key}/held"] == 1, what="the held step to start")
        worker = session_of(env, run_id).worker
        assert worker == "w-hard"

        killed_at = time.monotonic()
        await env.kill_worker(worker)
        view = await env.wait(run_id, timeout=5)
        waited = time.monotonic() - killed_at

        assert view.phase == "Failed"
        assert view.error is not None
        assert view.error.reason == "SessionBroken"
        assert 0.4 <= waited < 2.0
        assert COUNTS[f"{key}/held"] == 1  # never moved to the other worker


async def test_a_silent_worker_breaks_its_sessions_at_the_heartbeat_timeout() -> None:
    key = "heartbeat"
    gate(key)
    config = EngineConfig(worker_heartbeat_timeout=0.3)
    async with WorkflowEnvironment(
        WORKFLOWS, ACTIVITIES, workers=0, engine_config=config, heartbeat_interval=0.05
    ) as env:
        await session_env(env, "w-silent")
        run_id = await env.start(HardSession, key)
        await until(lambda: COUNTS[f"{key}/held"] == 1, what="the held step to start")

        silenced_at = time.monotonic()
        env.worker("w-silent").kill()  # stops sending anything; nobody reports it lost
        await until(lambda: session_of(env, run_id).state == "Broken", within=3, what="Broken")
        waited = time.monotonic() - silenced_at

        assert session_of(env, run_id).reason == "HeartbeatTimeout"
        assert 0.2 <= waited < 1.0
        views = {w.worker_id: w for w in env.worker_views()}
        assert not views["w-silent"].alive
        assert views["w-silent"].lost_reason == "HeartbeatTimeout"
        assert views["wf"].alive  # live workers keep heartbeating


async def test_session_capacity_is_never_exceeded() -> None:
    key = "capacity"
    first_key, second_key = f"{key}-1", f"{key}-2"
    release_first, release_second = gate(first_key), gate(second_key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await env.add_worker("wf", workflows=WORKFLOWS, activities=[])
        await env.add_worker("w-one", workflows=[], activities=ACTIVITIES, session_capacity=1)
        runs = [await env.start(SoftSession, k) for k in (first_key, second_key)]

        async def watch() -> None:
            while True:
                (worker,) = [w for w in env.worker_views() if w.worker_id == "w-one"]
                assert len(worker.sessions) <= 1, worker.sessions
                bound = [s for r in runs for s in env.describe(r).sessions if s.state == "Open"]
                assert len([s for s in bound if s.worker is not None]) <= 1, bound
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        try:
            await until(lambda: COUNTS[f"{first_key}/held"] + COUNTS[f"{second_key}/held"] == 1)
            holder = first_key if COUNTS[f"{first_key}/held"] else second_key
            await asyncio.sleep(0.2)  # the other run's session waits for the slot
            assert COUNTS[f"{first_key}/first"] + COUNTS[f"{second_key}/first"] == 1
            (release_first if holder == first_key else release_second).set()
            await until(lambda: COUNTS[f"{first_key}/held"] + COUNTS[f"{second_key}/held"] == 2)
            (release_second if holder == first_key else release_first).set()
            views = [await env.wait(r) for r in runs]
            if watcher.done():
                watcher.result()  # re-raises the watcher's assertion
        finally:
            watcher.cancel()
        assert [v.phase for v in views] == ["Succeeded", "Succeeded"]
        # The second session was bound only once the first one had closed.
        first_run, second_run = runs if holder == first_key else runs[::-1]
        closed = [e.time for e in env.history(first_run) if e.type == "SessionClosed"]
        bound = [e.time for e in env.history(second_run) if e.type == "SessionBound"]
        assert len(closed) == len(bound) == 1
        assert bound[0] >= closed[0]


async def test_a_sticky_child_not_registered_on_the_parents_worker_fails() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await env.add_worker("w-parent", workflows=[StickyParent], activities=[])
        await env.add_worker("w-child", workflows=[StickyChild], activities=[])
        result = await env.execute(StickyParent)
    assert result["reason"] == "ChildNotRegistered"
    assert "'w-parent'" in result["message"]
