"""Workflows the operator e2e tests run on host worker processes.

`steps` runs `count` activities one after another, each sleeping `seconds` (`family`
runs it as a child run); every execution of an activity appends a line to
`$TETHER_TEST_LEDGER` (when set), so a test counts executions in the activity itself,
not in any status.
"""

from __future__ import annotations

import asyncio
import os

import worker_runtime as workflows


@workflows.activity()
async def step(index: int, seconds: float) -> int:
    await asyncio.sleep(seconds)
    _record(index)
    return index * index


def _record(index: int) -> None:
    ledger = os.environ.get("TETHER_TEST_LEDGER")
    if ledger:
        with open(ledger, "a") as out:
            out.write(f"{index}\n")


@workflows.workflow.define(name="steps")
class Steps:
    @workflows.workflow.entrypoint
    async def execute(self, count: int, seconds: float = 0.0) -> dict[str, int]:
        total = 0
        for index in range(count):
            total += await step(index, seconds)
        return {"count": count, "sum": total}


@workflows.activity()
def text(size: int) -> str:
    return "x" * size


@workflows.workflow.define(name="large-result")
class LargeResult:
    @workflows.workflow.entrypoint
    async def execute(self, size: int) -> str:
        result: str = await text(size)
        return result


@workflows.workflow.define(name="family")
class Family:
    """Runs `steps` as a child run, then one step of its own (index 1000)."""

    @workflows.workflow.entrypoint
    async def execute(self, count: int, seconds: float = 0.0) -> dict[str, int]:
        child: dict[str, int] = await workflows.workflow.execute_child(
            "steps", {"count": count, "seconds": seconds}
        )
        return {**child, "own": await step(1000, 0.0)}
