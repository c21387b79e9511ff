"""Hatchet-style sticky assignment: every step of the workflow runs on the worker that runs
the workflow. SOFT moves to another worker if that one is lost; HARD waits for it to come
back (until scheduleTimeout) and otherwise fails with SessionBroken.

tether dev examples/sticky_dag.py --workers 3
tether run sticky-dag-soft --wait          # or sticky-dag-hard
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity


@workflows.activity()
async def step1a() -> dict[str, str]:
    return {"worker": activity.info().worker_id}


@workflows.activity()
async def step1b() -> dict[str, str]:
    return {"worker": activity.info().worker_id}


@workflows.activity()
async def step2(parents: list[dict[str, str]]) -> dict[str, Any]:
    return {"worker": activity.info().worker_id, "parents": [p["worker"] for p in parents]}


async def _dag() -> dict[str, Any]:
    a, b = await asyncio.gather(step1a(), step1b())  # two parallel roots
    final = await step2([a, b])  # parents: step1a, step1b
    return {
        "step1a": a["worker"],
        "step1b": b["worker"],
        "step2": final["worker"],
        "workflow_worker": workflows.workflow.info().worker_id,
    }


@workflows.workflow.define(name="sticky-dag-soft", sticky=StickyStrategy.SOFT)
class StickySoftDag:
    @workflows.workflow.entrypoint
    async def execute(self) -> dict[str, Any]:
        return await _dag()


@workflows.workflow.define(name="sticky-dag-hard", sticky=StickyStrategy.HARD)
class StickyHardDag:
    @workflows.workflow.entrypoint
    async def execute(self) -> dict[str, Any]:
        return await _dag()


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[StickySoftDag, StickyHardDag], workers=3) as env:
        print(await env.execute(StickySoftDag, None))
        print(await env.execute(StickyHardDag, None))


if __name__ == "__main__":
    asyncio.run(main())
