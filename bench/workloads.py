"""Workflows and activities the benchmarks run (served by bench/worker_main.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import worker_runtime as workflows
from worker_runtime import run_activities_locally, run_sticky_worker_session
from worker_runtime.activities import ActivityDefinition

# ----------------------------------------------------------------- round trip and throughput


@workflows.activity(retry_policy_max_attempts=1)
async def noop(i: int) -> int:
    return i


@workflows.workflow.define(name="bench-roundtrip")
class RoundTrip:
    """Awaits `n` activities one after another and times each from the workflow's side."""

    @workflows.workflow.entrypoint
    async def execute(self, n: int) -> list[float]:
        latencies = []
        for i in range(n):
            t0 = time.perf_counter()
            await noop(i)
            latencies.append(time.perf_counter() - t0)
        return latencies


@workflows.workflow.define(name="bench-local")
class LocalOverhead:
    """Runs `n` local activities and returns the seconds they took in total."""

    @workflows.workflow.entrypoint
    async def execute(self, n: int) -> dict[str, float]:
        t0 = time.perf_counter()
        with run_activities_locally():
            for i in range(n):
                await noop(i)
        local = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(n):
            await noop.fn(i)
        direct = time.perf_counter() - t0
        return {"local": local, "direct": direct}


@workflows.workflow.define(name="bench-fanout")
class FanOut:
    """Schedules `n` activities at once, in waves of `wave`."""

    @workflows.workflow.entrypoint
    async def execute(self, n: int, wave: int = 500) -> int:
        done = 0
        for start in range(0, n, wave):
            results = await asyncio.gather(*(noop(i) for i in range(start, min(n, start + wave))))
            done += len(results)
        return done


@workflows.workflow.define(name="bench-timer")
class Timer:
    """Waits `seconds` on a durable timer: an open run that does nothing meanwhile."""

    @workflows.workflow.entrypoint
    async def execute(self, seconds: float = 3600.0) -> None:
        await workflows.workflow.sleep(seconds)


# ----------------------------------------------------------------- sticky vs non-sticky

LOAD_SECONDS = 1.0
PREDICT_SECONDS = 0.05
_models: dict[str, float] = {}


async def _model(key: str) -> tuple[float, bool]:
    """This run's model on this worker, and whether it had to be loaded just now."""
    if key in _models:
        return _models[key], False
    await asyncio.sleep(LOAD_SECONDS)  # weights from disk / a model hub
    _models[key] = float(len(key))
    return _models[key], True


@workflows.activity()
async def load_model(key: str) -> bool:
    return (await _model(key))[1]


@workflows.activity()
async def predict(key: str, x: float) -> dict[str, Any]:
    weight, loaded = await _model(key)  # a worker without this run's model loads it first
    await asyncio.sleep(PREDICT_SECONDS)
    return {"y": weight * x, "loaded": loaded}


async def _inference(key: str, n: int) -> int:
    """Returns how many times this run had to load its model."""
    loads = int(await load_model(key))
    for i in range(n):
        loads += int((await predict(key, float(i)))["loaded"])
    return loads


@workflows.workflow.define(name="bench-inference-sticky")
class StickyInference:
    @workflows.workflow.entrypoint
    async def execute(self, key: str, n: int = 20) -> int:
        async with run_sticky_worker_session():
            return await _inference(key, n)


@workflows.workflow.define(name="bench-inference-plain")
class PlainInference:
    @workflows.workflow.entrypoint
    async def execute(self, key: str, n: int = 20) -> int:
        return await _inference(key, n)


ALL_WORKFLOWS: list[type[Any]] = [
    RoundTrip,
    LocalOverhead,
    FanOut,
    Timer,
    StickyInference,
    PlainInference,
]
ALL_ACTIVITIES: list[ActivityDefinition[..., Any]] = [noop, load_model, predict]
