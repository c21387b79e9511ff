"""Deterministic workflow code: time, timers, randomness and ids that replay the same.

A reminder picks a jittered delay with ``workflow.random()`` and an idempotency key with
``workflow.uuid4()``, waits on a durable timer (``asyncio.sleep`` in workflow code is
one), then sends the reminder under an ``asyncio.wait_for`` deadline (a durable timer
too). If its worker dies at any point, the replay on another worker computes the same
key, delay and times, and does not wait again for a timer that already fired.

tether dev examples/deterministic_workflow.py --workers 2
tether run reminder --input '{"user": "ada", "delay": 2}' --wait
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import worker_runtime as workflows
from worker_runtime import workflow


@workflows.activity(retry_policy_initial_interval=0.1)
async def send_reminder(user: str, key: str, due: str) -> dict[str, Any]:
    # Activities are ordinary code: the wall clock, I/O and randomness are fine here.
    return {"user": user, "key": key, "due": due, "sent_at": datetime.now(UTC).isoformat()}


@workflow.define(name="reminder")
class ReminderWorkflow:
    @workflow.entrypoint
    async def run(self, user: str, delay: float = 1.0) -> dict[str, Any]:
        key = str(workflow.uuid4())  # not uuid.uuid4(): the same on every replay
        wait = delay + workflow.random().uniform(0, delay / 10)  # not random.uniform()
        due = workflow.now() + timedelta(seconds=wait)  # not datetime.now()
        await asyncio.sleep(wait)  # a durable timer, not a blocked worker
        receipt: dict[str, Any] = await asyncio.wait_for(
            send_reminder(user, key, due.isoformat()), timeout=60
        )
        return {"receipt": receipt, "woke_at": workflow.now().isoformat()}


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[ReminderWorkflow]) as env:
        print(await env.execute(ReminderWorkflow, {"user": "ada", "delay": 0.05}))


if __name__ == "__main__":
    asyncio.run(main())
