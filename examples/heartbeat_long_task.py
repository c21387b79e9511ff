"""A long task that heartbeats: a stuck attempt is detected by heartbeat_timeout, and the
next attempt resumes from the progress recorded in the last heartbeat.

tether dev examples/heartbeat_long_task.py --workers 2
tether run long-task --input '{"items": ["a", "b", "c", "d"]}' --wait
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import worker_runtime as workflows
from worker_runtime import activity


async def process_item(item: str) -> str:
    await asyncio.sleep(0.01)
    return item.upper()


@workflows.activity(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(seconds=30),
)
async def long_running_task(items: list[str]) -> dict[str, Any]:
    info = activity.info()
    # Resume after the last item a previous attempt reported.
    start = (info.heartbeat_details or {}).get("processed", 0)
    results = []
    for i, item in enumerate(items[start:], start=start):
        result = await process_item(item)
        results.append(result)
        # Report progress to prevent timeout
        activity.heartbeat({"processed": i + 1, "total": len(items)})
    return {"results": results, "resumed_from": start, "attempt": info.attempt}


@workflows.workflow.define(name="long-task")
class LongTaskWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, items: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = await long_running_task(items)
        return result


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[LongTaskWorkflow]) as env:
        print(await env.execute(LongTaskWorkflow, {"items": ["a", "b", "c"]}))


if __name__ == "__main__":
    asyncio.run(main())
