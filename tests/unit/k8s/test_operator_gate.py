"""The operator's HTTP surface while it stands by, recovers and leads: `/healthz`,
`/readyz` (and `?standby=true`, the chart's readiness probe), and the gate that
answers 503 to every API call until the store is recovered."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tether_operator.k8s.operator import Readiness, _app
from tether_operator.scheduler import SchedulerService


class Leading:
    def __init__(self) -> None:
        self.value = False

    def __call__(self) -> bool:
        return self.value


@pytest.fixture
def leading() -> Leading:
    return Leading()


@pytest.fixture
def readiness(leading: Leading) -> Readiness:
    return Readiness(leading)


@pytest.fixture
async def http(readiness: Readiness) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=_app(SchedulerService(), readiness))
    async with httpx.AsyncClient(transport=transport, base_url="http://operator") as client:
        yield client


async def test_a_standby_is_alive_not_ready_and_serves_no_api(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"ready": False, "leader": False, "recovered": False, "watching": False}
    assert (await http.get("/readyz", params={"standby": "true"})).status_code == 200
    refused = await http.post("/v1/workers", json={})
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert "standby or still recovering" in refused.json()["error"]


async def test_a_leader_is_ready_once_recovered_and_watching(
    http: httpx.AsyncClient, readiness: Readiness, leading: Leading
) -> None:
    leading.value = True
    assert (await http.get("/readyz", params={"standby": "true"})).status_code == 503, (
        "leading but not recovered: neither a standby nor ready"
    )
    readiness.recovered = True
    assert (await http.post("/v1/workers", json={})).status_code == 422, "the API answers"
    assert (await http.get("/readyz")).status_code == 503
    readiness.watching.set()
    assert (await http.get("/readyz")).json()["ready"] is True
    leading.value = False  # deposed: about to exit
    assert (await http.get("/readyz", params={"standby": "true"})).status_code == 503


async def test_a_standby_is_ready_only_while_another_replica_leads(leading: Leading) -> None:
    """So `helm install --wait` returns once some replica leads, not before."""
    elsewhere = Leading()
    readiness = Readiness(leading, led_elsewhere=elsewhere)
    transport = httpx.ASGITransport(app=_app(SchedulerService(), readiness))
    async with httpx.AsyncClient(transport=transport, base_url="http://operator") as http:
        assert (await http.get("/readyz", params={"standby": "true"})).status_code == 503
        elsewhere.value = True
        assert (await http.get("/readyz", params={"standby": "true"})).status_code == 200
        assert (await http.get("/readyz")).status_code == 503, "the Service reaches the leader"
