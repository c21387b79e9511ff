"""What the run timeline page stands on, without a browser: its files at `/ui/`, served
without a token (they hold no data) while the API behind them still needs one; the runs
list's filters and summary view; a run's `ETag`, so a live page polls cheaply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

import worker_runtime as workflows
from tests.tokens import Tokens
from tether_operator.scheduler import create_app
from tether_operator.scheduler.auth import Gate
from worker_runtime import activity
from worker_runtime.protocol import RunSummaryList
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

from .waiting import until


@activity()
async def double(x: int) -> int:
    return 2 * x


GATE: dict[str, asyncio.Event] = {}


@activity()
async def wait_gate(key: str) -> str:
    await GATE[key].wait()
    return key


@workflows.workflow.define(name="ui-api-held")
class Held:
    @entrypoint
    async def run(self, key: str) -> str:
        return await wait_gate(key)


@workflows.workflow.define(name="ui-api-a")
class A:
    @entrypoint
    async def run(self, x: int) -> int:
        return await double(x)


@workflows.workflow.define(name="ui-api-b")
class B:
    @entrypoint
    async def run(self, x: int) -> int:
        if x < 0:
            raise ValueError("negative")
        return x


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment([A, B, Held], [double, wait_gate]) as env:
        yield env


@pytest.fixture
async def client(env: WorkflowEnvironment) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=env.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as c:
        yield c


async def test_the_page_and_its_files_are_served_with_a_strict_policy(
    client: httpx.AsyncClient,
) -> None:
    index = await client.get("/ui/")
    assert index.status_code == 200
    assert index.headers["content-type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in index.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in index.headers["content-security-policy"]
    assert index.headers["x-content-type-options"] == "nosniff"
    assert '<script src="app.js">' in index.text
    script = await client.get("/ui/app.js")
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    style = await client.get("/ui/style.css")
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    again = await client.get("/ui/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    redirect = await client.get("/ui")
    assert (redirect.status_code, redirect.headers["location"]) == (307, "/ui/")


@pytest.mark.parametrize("path", ["/ui/nope.js", "/ui/..%2Fui%2F__init__.py", "/ui/__init__.py"])
async def test_only_the_pages_own_files_are_served(client: httpx.AsyncClient, path: str) -> None:
    answer = await client.get(path)
    assert answer.status_code == 404
    assert "from __future__" not in answer.text  # no source of the package


async def test_the_runs_list_filters_and_summarises(
    env: WorkflowEnvironment, client: httpx.AsyncClient
) -> None:
    a = await env.start(A, {"x": 2})
    b = await env.start(B, {"x": -1})
    await env.client.wait_run(a, 10)
    await env.client.wait_run(b, 10)
    full = (await client.get("/v1/runs")).json()["runs"]
    assert {r["run_id"] for r in full} == {a, b}
    assert all("activities" in r for r in full)
    answer = await client.get("/v1/runs", params={"view": "summary"})
    summaries = RunSummaryList.model_validate(answer.json()).runs
    by_id = {s.run_id: s for s in summaries}
    assert by_id[a].progress == "1/1"
    assert by_id[a].namespace == env.service.namespace
    assert by_id[a].phase == "Succeeded"
    assert by_id[b].error is not None
    assert "activities" not in answer.json()["runs"][0]
    assert "input" not in answer.json()["runs"][0]

    async def ids(**params: str) -> list[str]:
        got = await client.get("/v1/runs", params={"view": "summary", **params})
        assert got.status_code == 200, got.text
        return [r["run_id"] for r in got.json()["runs"]]

    assert await ids(workflow="ui-api-a") == [a]
    assert await ids(phase="Failed") == [b]
    assert await ids(phase="Failed", workflow="ui-api-a") == []
    assert await ids(namespace=env.service.namespace) == [a, b]
    assert await ids(namespace="elsewhere") == []
    bad = await client.get("/v1/runs", params={"phase": "Done"})
    assert bad.status_code == 422
    assert bad.json()["field"] == "phase"


async def test_a_runs_etag_answers_304(env: WorkflowEnvironment, client: httpx.AsyncClient) -> None:
    run_id = await env.start(A, {"x": 1})
    await env.client.wait_run(run_id, 10)
    first = await client.get(f"/v1/runs/{run_id}")
    assert first.status_code == 200
    etag = first.headers["etag"]
    same = await client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": etag})
    assert (same.status_code, same.content, same.headers["etag"]) == (304, b"", etag)


async def test_a_live_runs_etag_holds_while_it_waits_and_moves_when_it_moves(
    env: WorkflowEnvironment, client: httpx.AsyncClient
) -> None:
    GATE["live"] = asyncio.Event()
    run_id = await env.start(Held, {"key": "live"})
    await until(
        lambda: [a.state for a in env.describe(run_id).activities] == ["Running"],
        what="the held activity running",
    )
    waiting = await client.get(f"/v1/runs/{run_id}")
    etag = waiting.headers["etag"]
    for _ in range(3):
        same = await client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": etag})
        assert same.status_code == 304
    GATE["live"].set()
    await env.client.wait_run(run_id, 10)
    moved = await client.get(f"/v1/runs/{run_id}", headers={"If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.headers["etag"] != etag
    assert moved.json()["phase"] == "Succeeded"


async def test_with_a_gate_the_files_are_open_and_the_data_is_not(env: WorkflowEnvironment) -> None:
    gate = Gate(Tokens({"good": set()}), run_namespace=lambda _: "dev")
    app = create_app(env.service, manage_lifecycle=False, gate=gate)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as c:
        assert (await c.get("/ui/")).status_code == 200
        assert (await c.get("/ui/app.js")).status_code == 200
        assert (await c.get("/v1/runs")).status_code == 401
        assert (await c.get("/v1/workers")).status_code == 401
        assert (await c.get("/uix")).status_code == 401  # only /ui and /ui/...
        run_id = await env.start(A, {"x": 1})
        refused = await c.get(f"/v1/runs/{run_id}", headers={"Authorization": "Bearer good"})
        assert refused.status_code == 403
        assert "may not get workflowruns in namespace 'dev'" in refused.json()["message"]
        listed = await c.get("/v1/runs", headers={"Authorization": "Bearer good"})
        assert listed.json() == {"runs": []}
