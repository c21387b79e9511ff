"""The HTTP API's own metrics: latency by route template (fast path included) and
refusals by kind, counted whether the auth middleware or a route refuses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.tokens import Tokens
from tether_operator.scheduler import SchedulerService, create_app
from tether_operator.scheduler.auth import Gate


def count(svc: SchedulerService, name: str, **labels: str) -> float:
    got = svc.metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.fixture
async def service() -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(namespace="tests")
    await svc.start()
    yield svc
    await svc.stop()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "fastapi-routes"])
async def test_requests_are_timed_by_route_template(
    service: SchedulerService, fast_path: bool
) -> None:
    app = create_app(service, manage_lifecycle=False, fast_path=fast_path)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as client:
        await client.post(
            "/v1/workers",
            json={"worker_id": "w1", "incarnation": "i", "workflows": [{"name": "wf"}]},
        )
        await client.post("/v1/workers/w1/heartbeat", json={})
        await client.get("/v1/runs/nope")
        await client.get("/v1/runs/other")
        await client.get("/no/such/path")
    hist = "tether_http_request_seconds_count"
    assert count(service, hist, method="POST", route="/v1/workers") == 1
    assert count(service, hist, method="POST", route="/v1/workers/{worker_id}/heartbeat") == 1
    assert count(service, hist, method="GET", route="/v1/runs/{run_id}") == 2
    assert count(service, hist, method="GET", route="unmatched") == 1


async def test_refusals_are_counted_by_kind(service: SchedulerService) -> None:
    app = create_app(
        service, manage_lifecycle=False, gate=Gate(Tokens({"known": set()}), run_namespace=str)
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://s"
    ) as client:
        assert (await client.get("/v1/runs/r")).status_code == 401
        assert (
            await client.get("/v1/runs/r", headers={"Authorization": "Bearer x"})
        ).status_code == 401
        known = {"Authorization": "Bearer known"}
        assert (await client.get("/v1/runs/r", headers=known)).status_code == 403
        assert (await client.get("/ui/")).status_code == 200
    assert count(service, "tether_auth_refusals_total", kind="Unauthenticated") == 2
    assert count(service, "tether_auth_refusals_total", kind="Forbidden") == 1
