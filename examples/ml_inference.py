"""ML inference: load a model once per sticky session, then predict a whole batch on it.

Serve it with real worker processes:   tether dev examples/ml_inference.py --workers 3
Start a run:   tether run ml-inference --input '{"batch": [{"x": 1}, {"x": 2}]}' --wait
Or run it in-process:   python examples/ml_inference.py
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import worker_runtime as workflows
from worker_runtime import activity, run_sticky_worker_session

LOAD_SECONDS = float(os.environ.get("TETHER_EXAMPLE_LOAD_SECONDS", "0.5"))
PREDICT_SECONDS = float(os.environ.get("TETHER_EXAMPLE_PREDICT_SECONDS", "0.0"))


class LinearModel:
    """A stand-in for an expensive model: y = weight * x + bias."""

    def __init__(self, name: str) -> None:
        time.sleep(LOAD_SECONDS)  # the expensive part: weights from disk, GPU warm-up ...
        self.name = name
        self.weight, self.bias = 2.0, 1.0

    def predict(self, x: float) -> float:
        return self.weight * x + self.bias


# Worker-level state: lives as long as the worker process.
_loaded_model: LinearModel | None = None
_loads = 0


def _ensure_model(name: str = "linear-v1") -> LinearModel:
    global _loaded_model, _loads
    if _loaded_model is None or _loaded_model.name != name:
        _loaded_model = LinearModel(name)
        _loads += 1
    return _loaded_model


@workflows.activity(sticky_to_worker=True)
def load_model(name: str = "linear-v1") -> dict[str, Any]:
    """Load the model into this worker's memory (a sync activity: runs in a thread)."""
    _ensure_model(name)
    return {"model": name, "worker": activity.info().worker_id, "loads": _loads}


@workflows.activity(sticky_to_worker=True)
async def predict(data: dict[str, Any]) -> dict[str, Any]:
    """Predict one item with the model loaded by this session."""
    info = activity.info()
    # A rebound session lands on a worker without the model: handle the cold start.
    model = _ensure_model() if info.cold_start or _loaded_model is None else _loaded_model
    if PREDICT_SECONDS:
        await asyncio.sleep(PREDICT_SECONDS)
    return {"x": data["x"], "y": model.predict(float(data["x"])), "worker": info.worker_id}


@workflows.workflow.define(name="ml-inference")
class MLInferenceWorkflow:
    @workflows.workflow.entrypoint
    async def execute(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # All activities run on the same worker
        async with run_sticky_worker_session():
            await load_model()  # load once
            results = [await predict(item) for item in batch]
        return results


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[MLInferenceWorkflow], workers=3) as env:
        result = await env.execute(MLInferenceWorkflow, {"batch": [{"x": i} for i in range(5)]})
        for row in result:
            print(row)


if __name__ == "__main__":
    asyncio.run(main())
