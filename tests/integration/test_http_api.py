"""The scheduler's HTTP API, in-process through httpx.ASGITransport and over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tether_operator.scheduler import SchedulerService, create_app, serve
from tether_operator.scheduler.openapi import openapi_json
from tether_operator.store import StoreUnavailable
from tether_operator.store.memory import MemoryStore
from worker_runtime.protocol import (
    MAX_BODY_BYTES,
    MAX_PAYLOAD_BYTES,
    PollResponse,
    Problem,
    RegisterWorkerResponse,
    ReportResponse,
    RunView,
    WhoAmI,
    WorkerList,
)
from worker_runtime.transport import FastTransport

REGISTER = {
    "worker_id": "w1",
    "incarnation": "i1",
    "workflows": [{"name": "wf"}],
    "activities": [{"name": "act"}],
}


@pytest.fixture
async def service() -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(namespace="tests", scheduler_url="https://scheduler.tether:7233")
    await svc.start()
    yield svc
    await svc.stop()


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-routes"])
async def client(
    service: SchedulerService, request: pytest.FixtureRequest
) -> AsyncIterator[httpx.AsyncClient]:
    """Both ways worker requests are served must behave the same."""
    app = create_app(service, manage_lifecycle=False, fast_path=request.param)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as c:
        yield c


def problem(response: httpx.Response) -> Problem:
    return Problem.model_validate(response.json())


async def test_a_run_end_to_end(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/workers", json=REGISTER)
    assert r.status_code == 200
    assert RegisterWorkerResponse.model_validate(r.json()).namespace == "tests"

    r = await client.post("/v1/runs", json={"workflow": "wf", "input": [1, 2], "run_id": "run-1"})
    assert r.status_code == 201
    assert RunView.model_validate(r.json()).run_id == "run-1"

    r = await client.post("/v1/workers/w1/poll", json={"max_tasks": 4, "wait": 5})
    (wf_task,) = PollResponse.model_validate(r.json()).tasks
    assert wf_task.kind == "workflow"

    report = {
        "workflows": [
            {
                "run_id": "run-1",
                "workflow_task_id": wf_task.task_id,
                "commands": [{"type": "schedule_activity", "seq": 1, "activity": "act"}],
            }
        ],
        "max_tasks": 4,
    }
    r = await client.post("/v1/workers/w1/report", json=report)
    (activity,) = ReportResponse.model_validate(r.json()).tasks
    assert activity.kind == "activity"

    r = await client.post(
        f"/v1/tasks/{activity.task_id}/complete",
        json={"task_id": activity.task_id, "ok": True, "result": 3},
        headers={"X-Tether-Worker": "w1"},
    )
    assert ReportResponse.model_validate(r.json()) == ReportResponse()  # single-shot: no tasks
    r = await client.post("/v1/workers/w1/poll", json={"max_tasks": 4, "wait": 5})
    (resolution,) = PollResponse.model_validate(r.json()).tasks
    assert resolution.kind == "resolution"

    done = {
        "workflows": [
            {
                "run_id": "run-1",
                "workflow_task_id": wf_task.task_id,
                "commands": [{"type": "complete_workflow", "seq": 2, "result": 3}],
            }
        ]
    }
    assert (await client.post("/v1/workers/w1/report", json=done)).status_code == 200
    r = await client.get("/v1/runs/run-1/wait", params={"timeout": 5})
    view = RunView.model_validate(r.json())
    assert (view.phase, view.result) == ("Succeeded", 3)

    r = await client.get("/v1/runs/run-1/history")
    assert r.json()["events"][-1]["type"] == "RunCompleted"
    assert [v["run_id"] for v in (await client.get("/v1/runs")).json()["runs"]] == ["run-1"]
    workers = WorkerList.model_validate((await client.get("/v1/workers")).json())
    assert [w.worker_id for w in workers.workers] == ["w1"]
    assert (await client.post("/v1/workers/w1/heartbeat", json={})).json() == {}
    assert (await client.get("/healthz")).json() == {"ok": True}


async def test_concurrent_long_polls_through_asgi_transport(client: httpx.AsyncClient) -> None:
    for wid in ("w1", "w2"):
        await client.post("/v1/workers", json={**REGISTER, "worker_id": wid})
    polls = [
        asyncio.ensure_future(client.post(f"/v1/workers/{wid}/poll", json={"wait": 10}))
        for wid in ("w1", "w2")
    ]
    await asyncio.sleep(0.05)
    assert not any(p.done() for p in polls)
    for n in range(2):
        await client.post("/v1/runs", json={"workflow": "wf", "run_id": f"r{n}"})
    responses = await asyncio.wait_for(asyncio.gather(*polls), 2.0)
    got = sorted(t["run_id"] for r in responses for t in r.json()["tasks"])
    assert got == ["r0", "r1"]


async def test_validation_error_names_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/runs", json={"workflow": "wf", "run_id": "Not_Valid"})
    assert r.status_code == 422
    p = problem(r)
    assert (p.error, p.field) == ("ValidationError", "run_id")
    assert "run_id" in p.message

    r = await client.post("/v1/workers", json={**REGISTER, "slots": 0})
    assert (r.status_code, problem(r).field) == (422, "slots")

    bad_cmd = {"workflows": [{"run_id": "r", "workflow_task_id": "t", "commands": [{"seq": 1}]}]}
    r = await client.post("/v1/workers/w1/report", json=bad_cmd)
    assert r.status_code == 422
    assert problem(r).field == "workflows.0.commands.0"


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b"[1, 2]", b"\xff\xfe", b'{"workflow": "wf", "input": NaN'],
)
async def test_malformed_bodies_are_4xx_not_500(client: httpx.AsyncClient, body: bytes) -> None:
    r = await client.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500
    problem(r)


async def test_unknown_run_is_404_naming_it(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/v1/runs/nope"),
        ("GET", "/v1/runs/nope/wait"),
        ("GET", "/v1/runs/nope/history"),
        ("POST", "/v1/runs/nope/cancel"),
    ]:
        r = await client.request(method, path)
        assert r.status_code == 404, path
        p = problem(r)
        assert (p.error, p.field) == ("RunNotFound", "run_id")
        assert "nope" in p.message


async def test_unknown_worker_is_404_so_it_registers_again(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/workers/ghost/poll", json={"wait": 0})
    assert (r.status_code, problem(r).error) == (404, "UnknownWorker")


async def test_unregistered_workflow_is_404_naming_the_field(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workers", json=REGISTER)
    r = await client.post("/v1/runs", json={"workflow": "wf-typo"})
    assert (r.status_code, problem(r).error, problem(r).field) == (
        404,
        "WorkflowNotFound",
        "workflow",
    )
    assert "'wf-typo'" in problem(r).message


async def test_duplicate_run_id_is_409(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workers", json=REGISTER)
    assert (
        await client.post("/v1/runs", json={"workflow": "wf", "run_id": "x"})
    ).status_code == 201
    r = await client.post("/v1/runs", json={"workflow": "wf", "run_id": "x"})
    assert (r.status_code, problem(r).error) == (409, "RunAlreadyExists")


async def test_oversized_body_is_413_before_parsing(client: httpx.AsyncClient) -> None:
    body = b"[" + b"0," * (MAX_BODY_BYTES // 2) + b"0]"
    r = await client.post("/v1/runs", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, problem(r).error) == (413, "BodyTooLarge")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(40):
            yield b" " * (1024 * 1024)

    r = await client.post(
        "/v1/runs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 413


async def test_oversized_payload_is_413_naming_the_field(client: httpx.AsyncClient) -> None:
    big = "x" * (MAX_PAYLOAD_BYTES + 1)
    r = await client.post("/v1/runs", json={"workflow": "wf", "input": big})
    assert r.status_code == 413
    p = problem(r)
    assert (p.error, p.field) == ("PayloadTooLarge", "input")

    await client.post("/v1/workers", json=REGISTER)
    report = {"completions": [{"task_id": "t", "ok": True, "result": big}]}
    r = await client.post("/v1/workers/w1/report", json=report)
    assert (r.status_code, problem(r).field) == (413, "completions.0.result")

    cmd = {"type": "schedule_activity", "seq": 1, "activity": "act", "args": [big]}
    report = {"workflows": [{"run_id": "r", "workflow_task_id": "t", "commands": [cmd]}]}
    r = await client.post("/v1/workers/w1/report", json=report)
    assert (r.status_code, problem(r).field) == (413, "workflows.0.commands.0.args")

    # Just under the limit is fine.
    ok = "x" * (MAX_PAYLOAD_BYTES - 10)
    assert (await client.post("/v1/runs", json={"workflow": "wf", "input": ok})).status_code == 201


async def test_single_task_endpoints_check_path_and_header(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workers", json=REGISTER)
    r = await client.post("/v1/tasks/t1/complete", json={"task_id": "t1", "ok": True})
    assert (r.status_code, problem(r).field) == (422, "X-Tether-Worker")
    r = await client.post(
        "/v1/tasks/t1/heartbeat", json={"task_id": "t2"}, headers={"X-Tether-Worker": "w1"}
    )
    assert (r.status_code, problem(r).field) == (422, "task_id")
    r = await client.post(
        "/v1/tasks/t1/heartbeat", json={"task_id": "t1"}, headers={"X-Tether-Worker": "w1"}
    )
    assert r.json() == {"cancelled": ["t1"], "tasks": []}


async def test_worker_lost(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workers", json=REGISTER)
    r = await client.post("/v1/workers/w1/lost", json={"reason": "PodDeleted", "message": "gone"})
    assert r.status_code == 200
    (worker,) = (await client.get("/v1/workers")).json()["workers"]
    assert (worker["alive"], worker["lost_reason"]) == (False, "PodDeleted")
    assert (await client.post("/v1/workers/w1/lost")).status_code == 200


async def test_whoami(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/workflows/workers/whoami", headers={"X-Tether-Worker": "w9"})
    assert WhoAmI.model_validate(r.json()) == WhoAmI(
        scheduler_url="https://scheduler.tether:7233", namespace="tests", tls=True, worker_id="w9"
    )


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/nothing")
    assert (r.status_code, problem(r).error) == (404, "NotFound")
    r = await client.get("/v1/workers/w1/poll")
    assert (r.status_code, problem(r).error) == (405, "MethodNotAllowed")


async def test_an_unexpected_error_is_a_logged_500_and_the_scheduler_lives_on(
    client: httpx.AsyncClient, service: SchedulerService, caplog: pytest.LogCaptureFixture
) -> None:
    def explode() -> list[dict[str, Any]]:
        raise RuntimeError("engine bug")

    service.list_runs = explode  # type: ignore[method-assign]
    r = await client.get("/v1/runs")
    assert (r.status_code, problem(r).error) == (500, "InternalError")
    assert "engine bug" in caplog.text
    assert (await client.get("/healthz")).status_code == 200


async def test_openapi_documents_every_message(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    for name in [
        "RegisterWorkerRequest",
        "RegisterWorkerResponse",
        "PollRequest",
        "PollResponse",
        "ReportRequest",
        "ReportResponse",
        "ActivityTask",
        "WorkflowTask",
        "Resolution",
        "CancelTask",
        "StartRunRequest",
        "RunView",
        "RunList",
        "History",
        "WorkerList",
        "WorkerLostRequest",
        "WhoAmI",
        "Problem",
    ]:
        assert name in schemas, name
    assert "/v1/workers/{worker_id}/report" in doc["paths"]


def test_committed_openapi_document_is_up_to_date() -> None:
    from pathlib import Path

    committed = Path(__file__).parents[2] / "docs" / "openapi.json"
    assert committed.read_text() == openapi_json(), (
        "docs/openapi.json is stale: run "
        "`python -m tether_operator.scheduler.openapi > docs/openapi.json`"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_over_a_real_socket() -> None:
    service = SchedulerService()
    ready = asyncio.Event()
    server = asyncio.create_task(serve("127.0.0.1", _free_port(), service, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        production = FastTransport()  # what workers use: the real socket path under test
        async with httpx.AsyncClient(base_url=service.scheduler_url, transport=production) as c:
            assert (await c.post("/v1/workers", json=REGISTER)).status_code == 200
            poll = asyncio.ensure_future(c.post("/v1/workers/w1/poll", json={"wait": 10}))
            await asyncio.sleep(0.05)
            r = await c.post("/v1/runs", json={"workflow": "wf"})
            assert r.status_code == 201
            (task,) = (await asyncio.wait_for(poll, 5)).json()["tasks"]
            assert task["run_id"] == r.json()["run_id"]
            r = await c.post("/v1/runs", json={"workflow": 5})
            assert (r.status_code, r.json()["field"]) == (422, "workflow")
            r = await c.post("/v1/runs", content=b"{", headers={"content-type": "application/json"})
            assert r.status_code == 400
            assert await _status_of_a_huge_declared_body(service.scheduler_url) == 413
            # A long-poll in flight does not hold up shutdown.
            await c.post("/v1/workers/w1/poll", json={"wait": 0})
            pending = asyncio.ensure_future(c.post("/v1/workers/w1/poll", json={"wait": 30}))
            await asyncio.sleep(0.05)
            server.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(server, 5)
            assert json.loads((await asyncio.wait_for(pending, 5)).text) == {"tasks": []}
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


async def _status_of_a_huge_declared_body(url: str) -> int:
    """httpx will not send a lying Content-Length; a raw socket will."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/runs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000\r\n\r\n{"
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 5)
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_task_taken_for_a_poll_whose_client_left_stays_queued() -> None:
    """The worker closed its long poll's connection (its transport gave up on it): the
    task the poll wakes for goes to the worker's next poll, not into a dead answer."""
    service = SchedulerService()
    ready = asyncio.Event()
    server = asyncio.create_task(serve("127.0.0.1", _free_port(), service, ready))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with httpx.AsyncClient(base_url=service.scheduler_url) as c:
            assert (await c.post("/v1/workers", json=REGISTER)).status_code == 200
            host, port = service.scheduler_url.removeprefix("http://").split(":")
            _, writer = await asyncio.open_connection(host, int(port))
            body = b'{"wait": 10}'
            writer.write(
                b"POST /v1/workers/w1/poll HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )
            await writer.drain()
            await asyncio.sleep(0.1)
            writer.close()  # gone while the poll waits
            await asyncio.sleep(0.1)
            r = await c.post("/v1/runs", json={"workflow": "wf"})
            assert r.status_code == 201
            await asyncio.sleep(0.1)
            poll = await c.post("/v1/workers/w1/poll", json={"wait": 1})
            (task,) = poll.json()["tasks"]
            assert task["run_id"] == r.json()["run_id"]
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


class DownStore(MemoryStore):
    """A store whose reads fail while `down` (the database is unreachable)."""

    down = False

    async def load(self, run_id: str) -> list[dict[str, Any]]:
        if self.down:
            raise StoreUnavailable(run_id, "postgres at db:5432 is unavailable: connection refused")
        return await super().load(run_id)


async def test_stored_history_with_the_store_down_is_a_503_saying_so() -> None:
    store = DownStore()
    svc = SchedulerService(store=store, namespace="tests")
    await svc.start()
    app = create_app(svc, manage_lifecycle=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://scheduler"
        ) as client:
            await client.post("/v1/workers", json=REGISTER)
            await client.post("/v1/runs", json={"workflow": "wf", "run_id": "run-1"})
            r = await client.post("/v1/workers/w1/poll", json={"max_tasks": 4, "wait": 5})
            (wf_task,) = PollResponse.model_validate(r.json()).tasks
            done = {"type": "complete_workflow", "seq": 1, "result": 3}
            batch = {"run_id": "run-1", "workflow_task_id": wf_task.task_id, "commands": [done]}
            await client.post("/v1/workers/w1/report", json={"workflows": [batch]})
            await svc.flush()
            svc.forget_run("run-1")  # left memory: its history is read from the store
            store.down = True
            r = await client.get("/v1/runs/run-1/history")
    finally:
        await svc.stop()
    assert r.status_code == 503
    said = problem(r)
    assert said.error == "StoreUnavailable"
    assert "connection refused; retry once the history store is back" in said.message
