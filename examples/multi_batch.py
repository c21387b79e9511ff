"""Session reuse: capture one worker and use it across several session scopes.

tether dev examples/multi_batch.py --workers 3
tether run multi-batch --input '{"batches": [[{"id": 1}], [{"id": 2}, {"id": 3}]]}' --wait
"""

from __future__ import annotations

import asyncio
from typing import Any

import worker_runtime as workflows
from worker_runtime import activity, get_sticky_worker_session, run_sticky_worker_session

_cache: dict[int, int] = {}  # worker-level cache, warm for the whole session


@workflows.activity(sticky_to_worker=True)
async def process_item(item: dict[str, Any]) -> dict[str, Any]:
    """Process one item, remembering what this worker has seen."""
    _cache[item["id"]] = _cache.get(item["id"], 0) + 1
    return {"id": item["id"], "worker": activity.info().worker_id, "cached": len(_cache)}


@workflows.workflow.define(name="multi-batch")
class MultiBatchWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, batches: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
        # Capture worker once
        session = await get_sticky_worker_session()

        all_results = []
        for batch in batches:
            async with run_sticky_worker_session(session):
                results = [await process_item(item) for item in batch]
                all_results.append(results)
        return all_results


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[MultiBatchWorkflow], workers=3) as env:
        batches = [[{"id": 1}, {"id": 2}], [{"id": 3}], [{"id": 4}, {"id": 5}]]
        print(await env.execute(MultiBatchWorkflow, {"batches": batches}))


if __name__ == "__main__":
    asyncio.run(main())
