"""Numbered steps, optionally in a SOFT sticky session, for the leader-failover e2e
test: each step prints one line when it starts and one when it completes, so the test
counts executions (and reads their times with `kubectl logs --timestamps`).

`TETHER_E2E_WORKFLOW` names the workflow.
"""

import asyncio
import contextlib
import os
from typing import Any

import worker_runtime as workflows
from worker_runtime import run_sticky_worker_session

WORKFLOW = os.environ.get("TETHER_E2E_WORKFLOW", "sticky-steps")


@workflows.activity(retry_policy_initial_interval=0.1)
async def step(tag: str, index: int, seconds: float) -> int:
    print(f"tether-e2e started tag={tag} step={index}", flush=True)
    await asyncio.sleep(seconds)
    print(f"tether-e2e executed tag={tag} step={index}", flush=True)
    return index


@workflows.workflow.define(name=WORKFLOW)
class StickySteps:
    @workflows.workflow.entrypoint
    async def execute(
        self, tag: str, count: int, seconds: float = 0.0, sticky: bool = False
    ) -> dict[str, Any]:
        total = 0
        scope = run_sticky_worker_session() if sticky else contextlib.nullcontext()
        async with scope:
            for index in range(count):
                total += await step(tag, index, seconds)
        return {"steps": count, "total": total}
