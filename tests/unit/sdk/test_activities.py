"""The @activity decorator, direct and nested calls, contexts and payload checks."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

import worker_runtime as workflows
from worker_runtime import (
    ActivityDefinition,
    PayloadError,
    PayloadTooLargeError,
    TetherError,
    activity,
)
from worker_runtime.context import ActivityContext, ActivityInfo, current_activity
from worker_runtime.payloads import check_input, check_value
from worker_runtime.protocol import MAX_PAYLOAD_BYTES, RetryDefaults
from worker_runtime.workflow_instance import local_retry_policy


@workflows.activity()
async def my_activity(input_data: str, count: int = 1) -> dict[str, Any]:
    """Activity implementation."""
    return {"result": input_data, "processed_count": count}


@activity
def sync_double(x: int) -> int:
    return 2 * x


def test_same_object_and_helpers() -> None:
    assert workflows.activity is activity
    assert callable(activity.heartbeat)
    assert callable(activity.info)


def test_default_options() -> None:
    assert isinstance(my_activity, ActivityDefinition)
    assert my_activity.name == "my_activity"
    assert my_activity.__doc__ == "Activity implementation."
    opts = my_activity.options
    assert opts.start_to_close_timeout is None
    assert opts.retry.max_attempts == 3
    assert opts.retry.backoff_coefficient == 2.0
    assert opts.retry.initial_interval == 1.0
    assert opts.retry.max_interval == 100.0
    assert not opts.sticky_to_worker
    assert sync_double.name == "sync_double"
    assert not sync_double.is_async


def test_explicit_options() -> None:
    @workflows.activity(
        name="custom_activity_name",
        start_to_close_timeout=timedelta(minutes=10),
        heartbeat_timeout=30,
        retry_policy_max_attempts=5,
        retry_policy_backoff_coefficient=3.0,
        retry_policy_initial_interval=timedelta(milliseconds=500),
        retry_policy_max_interval=10,
        non_retryable_errors=[ValueError, "KeyError"],
        sticky_to_worker=True,
    )
    async def act() -> None:
        """Does nothing: only its options matter here."""

    assert act.name == "custom_activity_name"
    assert act.options.start_to_close_timeout == 600.0
    assert act.options.heartbeat_timeout == 30.0
    assert act.options.retry.max_attempts == 5
    assert act.options.retry.backoff_coefficient == 3.0
    assert act.options.retry.initial_interval == 0.5
    assert act.options.retry.max_interval == 10.0
    assert act.options.retry.non_retryable_errors == ["ValueError", "KeyError"]
    assert act.options.sticky_to_worker
    assert act.spec().name == "custom_activity_name"


def test_bad_options_are_rejected() -> None:
    with pytest.raises(TypeError):
        workflows.activity(nonsense=1)
    with pytest.raises(ValueError, match="must not be negative"):
        workflows.activity(start_to_close_timeout=-1)


async def test_direct_calls_outside_workflows() -> None:
    assert await my_activity("x", count=2) == {"result": "x", "processed_count": 2}
    assert await sync_double(21) == 42


@workflows.activity()
async def nested_activity(input_data: str) -> dict[str, str]:
    return {"result_data": f"processed {input_data}", "activity": activity.info().activity}


@workflows.activity()
async def parent_activity(input_data: str) -> dict[str, str]:
    nested = await nested_activity(input_data)
    return {"result_data": nested["result_data"], "seen": nested["activity"]}


async def test_nested_activity_runs_inline_in_parent_context() -> None:
    info = ActivityInfo(
        run_id="r",
        workflow="w",
        activity="parent_activity",
        task_id="t",
        attempt=2,
        worker_id="w1",
        pod="p",
        node="n",
        session=None,
        cold_start=True,
    )
    token = current_activity.set(ActivityContext(info))
    try:
        result = await parent_activity("data")
    finally:
        current_activity.reset(token)
    # The nested call sees the parent's attempt: the parent is the unit of retry.
    assert result == {"result_data": "processed data", "seen": "parent_activity"}


def test_info_outside_activity_raises_and_heartbeat_is_noop() -> None:
    with pytest.raises(TetherError, match="inside an activity"):
        activity.info()
    activity.heartbeat({"progress": 1})  # no activity: silently ignored


def test_payload_checks() -> None:
    check_input("a", ("x", 1), {"k": [1, 2]})
    with pytest.raises(PayloadError, match="argument 'when' of 'a'") as err:
        check_input("a", (), {"when": object()})
    assert isinstance(err.value, TypeError)
    with pytest.raises(PayloadError, match="positional argument 1"):
        check_input("a", (1, {1, 2}), {})
    big = "x" * MAX_PAYLOAD_BYTES
    with pytest.raises(PayloadTooLargeError) as too_large:
        check_input("a", (big,), {})
    assert too_large.value.direction == "input"
    assert too_large.value.limit == MAX_PAYLOAD_BYTES
    assert too_large.value.size > MAX_PAYLOAD_BYTES
    assert "'a'" in str(too_large.value)
    with pytest.raises(PayloadTooLargeError, match="output of 'b'"):
        check_value("b", "output", big)
    # multi-byte characters count as bytes
    with pytest.raises(PayloadTooLargeError):
        check_value("b", "output", "é" * (MAX_PAYLOAD_BYTES // 2 + 1))
    with pytest.raises(PayloadError):
        check_value("b", "output", float("nan"))


async def test_heartbeat_throttling_and_cancel() -> None:
    sent: list[tuple[str, Any]] = []
    info = ActivityInfo(
        run_id="r",
        workflow="w",
        activity="a",
        task_id="t1",
        attempt=1,
        worker_id="w1",
        pod="p",
        node="n",
        session=None,
        cold_start=False,
    )
    ctx = ActivityContext(
        info,
        heartbeat_timeout=0.1,
        sink=lambda t, d: sent.append((t, d)),
        loop=asyncio.get_running_loop(),
    )
    ctx.heartbeat(1)  # first: immediately
    ctx.heartbeat(2)  # throttled; the latest is sent after the interval
    ctx.heartbeat(3)
    assert sent == [("t1", 1)]
    await asyncio.sleep(0.08)
    assert sent == [("t1", 1), ("t1", 3)]
    # from a thread
    await asyncio.get_running_loop().run_in_executor(None, ctx.heartbeat, 4)
    await asyncio.sleep(0.08)
    assert sent[-1] == ("t1", 4)
    ctx.cancel()
    with pytest.raises(workflows.ActivityCancelledError):
        ctx.heartbeat(5)


def test_options_say_which_retry_fields_the_code_set() -> None:
    @activity
    def bare() -> None: ...

    @activity(start_to_close_timeout=5)
    def timed() -> None: ...

    @activity(retry_policy_max_attempts=2, non_retryable_errors=[KeyError])
    def tuned() -> None: ...

    assert bare.options.retry_set == []
    assert timed.options.retry_set == []
    assert tuned.options.retry_set == ["max_attempts", "non_retryable_errors"]


def test_a_local_activity_takes_the_workflows_defaults_where_its_code_sets_none() -> None:
    @activity(retry_policy_max_attempts=7)
    def tuned() -> None: ...

    defaults = RetryDefaults(max_attempts=2, initial_interval=0.25)
    policy = local_retry_policy(tuned.options, defaults)
    assert (policy.max_attempts, policy.initial_interval) == (7, 0.25)
    assert local_retry_policy(tuned.options, None) == tuned.options.retry
    unknown = tuned.options.model_copy(update={"retry_set": None})
    assert local_retry_policy(unknown, defaults) == tuned.options.retry
