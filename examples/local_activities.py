"""Local activities: fast checks run in the workflow's own process, no task queue.

tether dev examples/local_activities.py --workers 1
tether run user-workflow --input '{"email": "ada@example.com"}' --wait
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import worker_runtime as workflows
from worker_runtime import run_activities_locally


@workflows.activity()
async def validate_email(email: str) -> bool:
    return "@" in email


@workflows.activity(start_to_close_timeout=timedelta(seconds=5), retry_policy_max_attempts=3)
async def timed_local_activity(data: str) -> str:
    # Timeouts and retry policies apply even when running locally
    return data.upper()


@workflows.workflow.define(name="user-workflow")
class UserWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, email: str) -> dict[str, object]:
        with run_activities_locally():
            valid = await validate_email(email)
            shout = await timed_local_activity(email)
        return {"valid": valid, "upper": shout}


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[UserWorkflow]) as env:
        print(await env.execute(UserWorkflow, {"email": "ada@example.com"}))


if __name__ == "__main__":
    asyncio.run(main())
