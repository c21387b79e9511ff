"""Sticky child workflows: the child runs on the parent's worker. Starting one fails clearly
if the child has no sticky strategy.

tether dev examples/sticky_child.py --workers 3
tether run sticky-parent --input '{"n": 3}' --wait
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows
from worker_runtime import StickyChildError, StickyStrategy, activity


@workflows.activity()
async def child_step(n: int) -> dict[str, Any]:
    return {"n": n * n, "worker": activity.info().worker_id}


@workflows.workflow.define(name="sticky-child", sticky=StickyStrategy.SOFT)
class StickyChildWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, n: int) -> dict[str, Any]:
        result: dict[str, Any] = await child_step(n)
        result["child_worker"] = workflows.workflow.info().worker_id
        return result


@workflows.workflow.define(name="plain-child")
class PlainChildWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, n: int) -> int:
        return n


@workflows.workflow.define(name="sticky-parent", sticky=StickyStrategy.SOFT)
class StickyParentWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, n: int) -> dict[str, Any]:
        # specify a child workflow to run on the same worker
        child = await workflows.workflow.execute_child(StickyChildWorkflow, {"n": n}, sticky=True)
        try:
            await workflows.workflow.execute_child(PlainChildWorkflow, {"n": n}, sticky=True)
            refused = ""
        except StickyChildError as exc:
            refused = str(exc)
        return {
            "parent_worker": workflows.workflow.info().worker_id,
            "child": child,
            "plain_child_refused": refused,
        }


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    workflows_ = [StickyParentWorkflow, StickyChildWorkflow, PlainChildWorkflow]
    async with WorkflowEnvironment(workflows=workflows_, workers=3) as env:
        print(await env.execute(StickyParentWorkflow, {"n": 3}))


if __name__ == "__main__":
    asyncio.run(main())
