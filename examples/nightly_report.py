"""Nightly report: a workflow that runs on a schedule. In code, `schedule=` has `tether
dev` start it every night at 02:00 UTC; on Kubernetes a WorkflowSchedule does
(examples/k8s/nightly-report.yaml), with its own time zone, input and overlap policy.

tether dev examples/nightly_report.py
tether get schedules
tether schedule trigger nightly-report      # one run now, without waiting for 02:00
tether run nightly-report --input '{"region": "us"}' --wait
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows

SALES = {"eu": [120.0, 80.5, 42.25], "us": [310.0, 99.99]}


@workflows.activity()
async def collect_sales(region: str) -> list[float]:
    return SALES.get(region, [])


@workflows.activity()
async def render_report(region: str, amounts: list[float]) -> str:
    return f"{region}: {len(amounts)} orders, {sum(amounts):.2f} total"


@workflows.workflow.define(name="nightly-report", schedule="0 2 * * *")
class NightlyReport:
    @workflows.workflow.entrypoint
    async def execute(self, region: str = "eu", settle_seconds: float = 0.0) -> dict[str, Any]:
        if settle_seconds:
            await asyncio.sleep(settle_seconds)  # a durable timer: late orders settle
        amounts: list[float] = await collect_sales(region)
        report: str = await render_report(region, amounts)
        return {"region": region, "orders": len(amounts), "report": report}


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[NightlyReport]) as env:
        print(await env.execute(NightlyReport, {"region": "eu"}))


if __name__ == "__main__":
    asyncio.run(main())
