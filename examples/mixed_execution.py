"""Mixed execution: a fast lookup runs locally, the slow call is a regular activity.

tether dev examples/mixed_execution.py --workers 2
tether run mixed-workflow --input '{"email": "grace@example.org"}' --wait
"""

from __future__ import annotations

import asyncio

import worker_runtime as workflows
from worker_runtime import activity, run_activities_locally


@workflows.activity()
async def quick_lookup(email: str) -> str:
    return email.rsplit("@", 1)[-1]


@workflows.activity()
async def external_api_call(email: str) -> dict[str, object]:
    await asyncio.sleep(0.05)  # a remote verification service
    return {"verified": email.endswith((".org", ".com")), "worker": activity.info().worker_id}


@workflows.workflow.define(name="mixed-workflow")
class MixedWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, email: str) -> dict[str, object]:
        # Fast lookup runs locally
        with run_activities_locally():
            domain = await quick_lookup(email)

        # Slow operation runs as regular activity
        verified = await external_api_call(email)

        return {"domain": domain, "verified": verified}


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[MixedWorkflow], workers=2) as env:
        print(await env.execute(MixedWorkflow, {"email": "grace@example.org"}))


if __name__ == "__main__":
    asyncio.run(main())
