"""A worker's own metrics: attempt times by outcome, session hits and misses, slots,
and its /metrics port."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

import worker_runtime as workflows
from worker_runtime import activity, run_sticky_worker_session
from worker_runtime.metrics import serve_metrics
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.worker_metrics import WorkerMetrics
from worker_runtime.workflow import entrypoint


@activity()
async def step(i: int) -> int:
    if i < 0:
        raise ValueError("negative")
    return i


@workflows.workflow.define(name="metered")
class Metered:
    @entrypoint
    async def execute(self, n: int) -> list[int]:
        async with run_sticky_worker_session():
            return [await step(i) for i in range(n)]


async def test_attempts_and_session_hits_and_misses_are_counted() -> None:
    async with WorkflowEnvironment([Metered], [step], workers=1) as env:
        assert await env.execute(Metered, 3) == [0, 1, 2]
        (worker_id,) = env.worker_ids
        sample = env.worker(worker_id).metrics.registry.get_sample_value
        labels = {"activity": "step", "outcome": "completed"}
        assert sample("tether_worker_activity_seconds_count", labels) == 3
        # The session came to this worker with its first step (a miss), then stayed warm.
        assert sample("tether_worker_session_activities_total", {"cold_start": "true"}) == 1
        assert sample("tether_worker_session_activities_total", {"cold_start": "false"}) == 2
        assert sample("tether_worker_slots", {"state": "busy"}) == 0
        assert sample("tether_worker_reports_retried_total", {}) in (None, 0)


async def test_the_port_serves_the_worker_families() -> None:
    metrics = WorkerMetrics(lambda: 1, 4)
    server = await serve_metrics(metrics.registry, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        server.close()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert {s.labels["state"]: s.value for s in families["tether_worker_slots"].samples} == {
        "busy": 1.0,
        "free": 3.0,
    }
    assert "tether_worker_activity_seconds" in families
