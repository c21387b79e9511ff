"""The workflow of the e2e tests of runs, served from a ConfigMap: numbered steps, each
printing one line when it starts and one when it completes, so that a test counts the
executions of each step in the worker pods' logs (not in the run's status).

`TETHER_E2E_WORKFLOW` names the workflow, so several pools can serve their own copy.
"""

import asyncio
import os
from typing import Any

import worker_runtime as workflows

WORKFLOW = os.environ.get("TETHER_E2E_WORKFLOW", "steps")


@workflows.activity(retry_policy_initial_interval=0.1)
async def step(tag: str, index: int, seconds: float) -> int:
    print(f"tether-e2e started tag={tag} step={index}", flush=True)
    await asyncio.sleep(seconds)
    print(f"tether-e2e executed tag={tag} step={index}", flush=True)
    return index


@workflows.workflow.define(name=WORKFLOW)
class Steps:
    @workflows.workflow.entrypoint
    async def execute(self, tag: str, count: int, seconds: float = 0.0) -> dict[str, Any]:
        total = 0
        for index in range(count):
            total += await step(tag, index, seconds)
        return {"steps": count, "total": total}
