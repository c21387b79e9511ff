"""The workflow of the e2e tests of sessions on pods, served from a ConfigMap: an ML-style
sticky session that loads a "model" once per worker process and run, then predicts
`count` items on it, each taking `seconds`.

Each activity reports where it ran and how many times this process loaded the model
for the run, so the result says how many loads the run cost and on which pods and
nodes it ran. `predict` declares `start_to_close_timeout=120`: pods created after a
worker registered it get a 125 s grace. `TETHER_E2E_WORKFLOW` names the workflow, so
several pools can serve their own copy.
"""

import asyncio
import os
from typing import Any

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session

WORKFLOW = os.environ.get("TETHER_E2E_WORKFLOW", "sessions")

_loads: dict[str, int] = {}
"""Per run id: how many times this process loaded the run's model."""


def _where(extra: dict[str, Any]) -> dict[str, Any]:
    info = activity.info()
    return {
        **extra,
        "pod": info.pod,
        "node": info.node,
        "cold_start": info.cold_start,
        "loads": _loads.get(info.run_id, 0),
    }


def _ensure_model(run_id: str) -> None:
    if run_id not in _loads or activity.info().cold_start:
        _loads[run_id] = _loads.get(run_id, 0) + 1


@workflows.activity(retry_policy_initial_interval=0.1)
async def load_model() -> dict[str, Any]:
    _ensure_model(activity.info().run_id)
    return _where({"step": "load"})


@workflows.activity(retry_policy_initial_interval=0.1, start_to_close_timeout=120)
async def predict(x: int, seconds: float) -> dict[str, Any]:
    _ensure_model(activity.info().run_id)  # a rebound session starts cold: load it there
    await asyncio.sleep(seconds)
    return _where({"step": "predict", "x": x, "y": 2 * x + 1})


@workflows.workflow.define(name=WORKFLOW)
class Sessions:
    @workflows.workflow.entrypoint
    async def execute(
        self, count: int, seconds: float = 0.0, strategy: str = "SOFT"
    ) -> dict[str, Any]:
        rows = []
        async with run_sticky_worker_session(strategy=StickyStrategy(strategy)):
            rows.append(await load_model())
            for x in range(count):
                rows.append(await predict(x, seconds))
        loads: dict[str, int] = {}
        for row in rows:
            loads[row["pod"]] = max(loads.get(row["pod"], 0), row["loads"])
        return {
            "loads": sum(loads.values()),
            "pods": sorted(loads),
            "nodes": sorted({row["node"] for row in rows}),
            "predictions": sum(1 for row in rows if row["step"] == "predict"),
            "cold_starts": sum(1 for row in rows if row["cold_start"]),
            "rows": [[row["pod"], row["node"]] for row in rows],
        }
