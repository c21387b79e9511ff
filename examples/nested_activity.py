"""Nested activities: an activity called inside another runs inline; only the parent is
retried, so a failure in the nested call retries the whole parent.

tether dev examples/nested_activity.py --workers 1
tether run nested --input '{"input_data": "hello"}' --wait
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows
from worker_runtime import activity

_nested_calls = 0


@workflows.activity(retry_policy_max_attempts=3, retry_policy_initial_interval=0.05)
async def parent_activity(input_data: str) -> dict[str, Any]:
    """Parent activity that encapsulates a nested activity."""
    nested_result = await nested_activity(input_data)
    return {"result_data": nested_result["result_data"], "parent_attempt": activity.info().attempt}


@workflows.activity()
async def nested_activity(input_data: str) -> dict[str, Any]:
    """Nested activity: fails the first time, which retries the parent."""
    global _nested_calls
    _nested_calls += 1
    if _nested_calls == 1:
        raise RuntimeError("transient failure inside the nested activity")
    return {"result_data": input_data[::-1]}


@workflows.workflow.define(name="nested")
class NestedWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, input_data: str) -> dict[str, Any]:
        result: dict[str, Any] = await parent_activity(input_data)
        return result


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[NestedWorkflow]) as env:
        print(await env.execute(NestedWorkflow, {"input_data": "hello"}))


if __name__ == "__main__":
    asyncio.run(main())
