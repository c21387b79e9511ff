"""Durable execution end to end: real SDK workers, the real scheduler and engine, in-process.

Each test uses its own key (the test's name) in module-level counters and gates, so
what an activity really did is observable and tests cannot see each other's state.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import pytest

import worker_runtime as workflows
from tether_operator.engine import EngineConfig
from worker_runtime import ActivityDefinition, ActivityError, PayloadTooLargeError, activity
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

from .waiting import until

COUNTS: Counter[str] = Counter()
"""How often each `key/step` really ran on a worker."""
GATES: dict[str, asyncio.Event] = {}
"""Per-test gates that `hold` waits on (created inside the test, on its event loop)."""
CHANGED_CODE: set[str] = set()
"""Keys whose workflow takes its "new code" path (the non-determinism test flips it)."""
TIMES: dict[str, float] = {}
"""Monotonic timestamps recorded by activities, keyed `key/what`."""


@pytest.fixture(autouse=True)
def _fresh_state() -> None:
    """Counters start at zero for every test, even when a test is re-run in one process."""
    COUNTS.clear()
    GATES.clear()
    CHANGED_CODE.clear()
    TIMES.clear()


def gate(key: str) -> asyncio.Event:
    GATES[key] = asyncio.Event()
    return GATES[key]


# ---------------------------------------------------------------------- activities


@activity()
async def record(key: str, step: str) -> str:
    COUNTS[f"{key}/{step}"] += 1
    return step


@activity()
async def renamed_record(key: str, step: str) -> str:
    COUNTS[f"{key}/renamed-{step}"] += 1
    return step


@activity()
async def hold(key: str) -> str:
    COUNTS[f"{key}/hold"] += 1
    try:
        await GATES[key].wait()
    except asyncio.CancelledError:
        COUNTS[f"{key}/hold-cancelled"] += 1
        raise
    return "held"


@activity(heartbeat_timeout=0.3, retry_policy_max_attempts=2, retry_policy_initial_interval=0.05)
async def resumable(key: str) -> dict[str, Any]:
    info = activity.info()
    COUNTS[f"{key}/resumable"] += 1
    if info.attempt == 1:
        activity.heartbeat({"done": 3})
        try:
            await asyncio.sleep(30)  # hangs without heartbeating
        except asyncio.CancelledError:
            COUNTS[f"{key}/resumable-cancelled"] += 1
            raise
    return {"attempt": info.attempt, "heartbeat_details": info.heartbeat_details}


@activity(
    start_to_close_timeout=0.15, retry_policy_max_attempts=2, retry_policy_initial_interval=0.05
)
async def too_slow(key: str) -> None:
    COUNTS[f"{key}/too_slow"] += 1
    await asyncio.sleep(30)


@activity()
def blocking_sleep(key: str) -> None:
    TIMES[f"{key}/blocking-start"] = time.monotonic()
    time.sleep(0.5)
    TIMES[f"{key}/blocking-end"] = time.monotonic()


@activity()
async def quick(key: str) -> None:
    await asyncio.sleep(0.05)
    TIMES[f"{key}/quick-end"] = time.monotonic()


@activity()
async def echo(text: str) -> str:
    COUNTS["echo"] += 1
    return text


# ---------------------------------------------------------------------- workflows


@workflows.workflow.define(name="durable-steps")
class DurableSteps:
    @entrypoint
    async def run(self, key: str) -> list[str]:
        first = await record(key, "first")
        held = await hold(key)
        last = await record(key, "last")
        return [first, held, last]


@workflows.workflow.define(name="branchy")
class Branchy:
    @entrypoint
    async def run(self, key: str) -> str:
        if key in CHANGED_CODE:
            await renamed_record(key, "first")
        else:
            await record(key, "first")
        return await hold(key)


@workflows.workflow.define(name="resumes")
class Resumes:
    @entrypoint
    async def run(self, key: str) -> dict[str, Any]:
        result: dict[str, Any] = await resumable(key)
        return result


@workflows.workflow.define(name="times-out")
class TimesOut:
    @entrypoint
    async def run(self, key: str) -> dict[str, Any]:
        try:
            await too_slow(key)
        except ActivityError as exc:
            return {"cause_type": exc.cause_type, "attempts": exc.attempts, "reason": exc.reason}
        return {}


@workflows.workflow.define(name="sync-and-async")
class SyncAndAsync:
    @entrypoint
    async def run(self, key: str) -> None:
        await asyncio.gather(blocking_sleep(key), quick(key))


@workflows.workflow.define(name="too-large")
class TooLarge:
    @entrypoint
    async def run(self) -> str:
        try:
            await echo("x" * (3 * 1024 * 1024))
        except PayloadTooLargeError as exc:
            return str(exc)
        return "no error"


@workflows.workflow.define(name="sleeper")
class Sleeper:
    @entrypoint
    async def run(self, key: str) -> str:
        await workflows.workflow.sleep(0.2)
        return await record(key, "after-sleep")


@workflows.workflow.define(name="cancellable")
class Cancellable:
    @entrypoint
    async def run(self, key: str) -> str:
        return await hold(key)


WORKFLOWS = [DurableSteps, Branchy, Resumes, TimesOut, SyncAndAsync, TooLarge, Sleeper, Cancellable]
ACTIVITIES: list[ActivityDefinition[..., Any]] = [
    record,
    renamed_record,
    hold,
    resumable,
    too_slow,
    blocking_sleep,
    quick,
    echo,
]


async def workflow_and_activity_workers(env: WorkflowEnvironment) -> None:
    """Two workers that run only workflows, one that runs only activities: killing a
    workflow worker loses no activity."""
    await env.add_worker("wf-a", workflows=WORKFLOWS, activities=[])
    await env.add_worker("wf-b", workflows=WORKFLOWS, activities=[])
    await env.add_worker("acts", workflows=[], activities=ACTIVITIES)


# ---------------------------------------------------------------------- tests


async def test_a_lost_workflow_worker_is_replayed_elsewhere_without_rerunning_activities() -> None:
    key = "replay"
    release = gate(key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await workflow_and_activity_workers(env)
        run_id = await env.start(DurableSteps, key)
        await until(lambda: COUNTS[f"{key}/hold"] == 1, what="hold to start")
        victim = env.describe(run_id).worker
        assert victim in ("wf-a", "wf-b")
        survivor = "wf-b" if victim == "wf-a" else "wf-a"

        await env.kill_worker(victim)
        release.set()
        view = await env.wait(run_id)

        assert view.phase == "Succeeded", view.error
        assert view.result == ["first", "held", "last"]
        assert COUNTS[f"{key}/first"] == COUNTS[f"{key}/hold"] == COUNTS[f"{key}/last"] == 1
        history = env.history(run_id)
        types = [e.type for e in history]
        assert "WorkflowTaskLost" in types
        tasks = [e.data for e in history if e.type == "WorkflowTaskStarted"]
        assert [(t["attempt"], t["worker"]) for t in tasks] == [(1, victim), (2, survivor)]
        # The in-flight `hold` was not scheduled a second time by the replay.
        assert [e.data["activity"] for e in history if e.type == "ActivityScheduled"] == [
            "record",
            "hold",
            "record",
        ]


async def test_a_workflow_taking_another_path_on_replay_fails_with_non_determinism() -> None:
    key = "nondeterminism"
    gate(key)  # never released: the replay fails first
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES, workers=0) as env:
        await workflow_and_activity_workers(env)
        run_id = await env.start(Branchy, key)
        await until(lambda: COUNTS[f"{key}/hold"] == 1, what="hold to start")
        victim = env.describe(run_id).worker
        assert victim is not None

        await env.kill_worker(victim)
        CHANGED_CODE.add(key)  # "deploy" different code before the replay
        view = await env.wait(run_id)

        assert view.phase == "Failed"
        assert view.error is not None
        assert view.error.reason == "NonDeterminism"
        assert "seq 1" in view.error.message
        assert "'record'" in view.error.message  # what the history has
        assert "'renamed_record'" in view.error.message  # what the code did
        assert COUNTS[f"{key}/renamed-first"] == 0  # the new path never ran an activity
        # Ending the run cancelled the activity still in flight.
        await until(lambda: COUNTS[f"{key}/hold-cancelled"] == 1, what="hold to be cancelled")


async def test_a_heartbeat_timeout_retries_with_the_last_heartbeat_details() -> None:
    key = "heartbeat-timeout"
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES) as env:
        run_id = await env.start(Resumes, key)
        view = await env.wait(run_id)

        assert view.phase == "Succeeded", view.error
        assert view.result == {"attempt": 2, "heartbeat_details": {"done": 3}}
        failed = [e.data for e in env.history(run_id) if e.type == "ActivityFailed"]
        assert [f["error"]["type"] for f in failed] == ["HeartbeatTimeout"]
        assert failed[0]["retry_at"] is not None
        # The worker was told to cancel the silent attempt.
        await until(lambda: COUNTS[f"{key}/resumable-cancelled"] == 1, what="the cancel")


async def test_start_to_close_timeout_is_retried_then_raises_activity_error() -> None:
    key = "start-to-close"
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES) as env:
        result = await env.execute(TimesOut, key)
    assert result["cause_type"] == "StartToCloseTimeout"
    assert result["attempts"] == 2
    assert COUNTS[f"{key}/too_slow"] == 2


async def test_a_blocking_sync_activity_does_not_block_the_worker() -> None:
    key = "sync-activity"
    config = EngineConfig(worker_heartbeat_timeout=0.35)
    async with WorkflowEnvironment(
        WORKFLOWS, ACTIVITIES, engine_config=config, heartbeat_interval=0.05
    ) as env:
        run_id = await env.start(SyncAndAsync, key)
        view = await env.wait(run_id)

        assert view.phase == "Succeeded", view.error
        # The async activity started and finished while the sync one slept in its thread.
        start, end = TIMES[f"{key}/blocking-start"], TIMES[f"{key}/blocking-end"]
        assert start < TIMES[f"{key}/quick-end"] < end
        # Heartbeats kept flowing for longer than the heartbeat timeout.
        (worker,) = env.worker_views()
        assert worker.alive
        assert worker.lost_reason is None
        assert "WorkflowTaskLost" not in [e.type for e in env.history(run_id)]


async def test_a_too_large_activity_input_fails_at_the_call_site() -> None:
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES) as env:
        message = await env.execute(TooLarge)
    assert "'echo'" in message
    assert "over the limit" in message
    assert COUNTS["echo"] == 0


async def test_a_durable_timer_is_recorded_in_history() -> None:
    key = "timer"
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES) as env:
        started = time.monotonic()
        run_id = await env.start(Sleeper, key)
        view = await env.wait(run_id)
        elapsed = time.monotonic() - started
        history = env.history(run_id)
    assert (view.phase, view.result) == ("Succeeded", "after-sleep")
    assert elapsed >= 0.2
    types = [e.type for e in history]
    assert types.index("TimerStarted") < types.index("TimerFired")
    assert types.index("TimerFired") < types.index("ActivityScheduled")


async def test_cancelling_a_run_cancels_its_running_activity() -> None:
    key = "cancel"
    gate(key)
    async with WorkflowEnvironment(WORKFLOWS, ACTIVITIES) as env:
        run_id = await env.start(Cancellable, key)
        await until(lambda: COUNTS[f"{key}/hold"] == 1, what="hold to start")

        await env.cancel(run_id)
        view = await env.wait(run_id)

        assert view.phase == "Cancelled"
        assert env.history(run_id)[-1].type == "RunCancelled"
        await until(lambda: COUNTS[f"{key}/hold-cancelled"] == 1, what="the cancel")
