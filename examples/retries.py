"""Retries: a flaky call succeeds on its third attempt; a bad input fails at once because its
error type is non-retryable.

tether dev examples/retries.py --workers 2
tether run retries --input '{"order_id": "A-1"}' --wait
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows
from worker_runtime import ActivityError, activity


class InvalidOrder(Exception):
    """A permanent problem: retrying cannot help."""


@workflows.activity(
    retry_policy_max_attempts=5,
    retry_policy_initial_interval=0.05,
    retry_policy_backoff_coefficient=2.0,
)
async def charge_card(order_id: str) -> dict[str, Any]:
    attempt = activity.info().attempt
    if attempt < 3:
        raise ConnectionError(f"payment gateway timed out (attempt {attempt})")
    return {"order_id": order_id, "charged": True, "attempts": attempt}


@workflows.activity(retry_policy_max_attempts=5, non_retryable_errors=["InvalidOrder"])
async def validate_order(order_id: str) -> str:
    if not order_id.startswith("A-"):
        raise InvalidOrder(f"order {order_id!r} must start with 'A-'")
    return order_id


@workflows.workflow.define(name="retries")
class RetriesWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, order_id: str) -> dict[str, Any]:
        try:
            await validate_order(order_id)
        except ActivityError as exc:
            return {"order_id": order_id, "rejected": exc.message, "attempts": exc.attempts}
        charged: dict[str, Any] = await charge_card(order_id)
        return charged


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[RetriesWorkflow]) as env:
        print(await env.execute(RetriesWorkflow, {"order_id": "A-1"}))
        print(await env.execute(RetriesWorkflow, {"order_id": "B-2"}))


if __name__ == "__main__":
    asyncio.run(main())
