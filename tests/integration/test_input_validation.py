"""Run inputs are checked against the registered schemas before a run starts.

Over HTTP through the app (httpx.ASGITransport), with registrations built by the SDK
from real workflow classes; through the in-process test environment (the SDK applies
the same input rule to call the entrypoint); and through the `tether` CLI over a
real socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

import worker_runtime as workflows
from tether_operator.cli import run_command
from tether_operator.cli.output import Output, make_console
from tether_operator.scheduler import SchedulerService, create_app, serve
from worker_runtime.protocol import Problem, RegisterWorkerRequest, RunView, WorkflowList
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import get_definition


class Item(BaseModel):
    x: int


@workflows.activity(name="double")
async def double(x: int) -> int:
    return 2 * x


@workflows.workflow.define(name="ml", sticky=workflows.StickyStrategy.SOFT)
class Ml:
    @workflows.workflow.entrypoint
    async def run(self, batch: list[Item], model: str = "small") -> dict[str, Any]:
        return {"n": len(batch), "model": model}


@workflows.workflow.define(name="one")
class One:
    @workflows.workflow.entrypoint
    async def run(self, x: int) -> int:
        return int(await double(x))


@workflows.workflow.define(name="nothing")
class Nothing:
    @workflows.workflow.entrypoint
    async def run(self) -> str:
        return "done"


@workflows.workflow.define(name="anything")
class Anything:
    @workflows.workflow.entrypoint
    async def run(self, value, extra=None):  # type: ignore[no-untyped-def]
        return [value, extra]


@workflows.workflow.define(name="settings")
class Settings:
    @workflows.workflow.entrypoint
    async def run(self, config: dict[str, int]) -> int:
        return sum(config.values())


ALL = [Ml, One, Nothing, Anything, Settings]


def registration(worker_id: str = "w1") -> dict[str, Any]:
    request = RegisterWorkerRequest(
        worker_id=worker_id,
        incarnation=f"{worker_id}-1",
        workflows=[get_definition(cls).spec() for cls in ALL],
        activities=[double.spec()],
    )
    return request.model_dump(mode="json")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    service = SchedulerService()
    await service.start()
    app = create_app(service, manage_lifecycle=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://scheduler") as c:
        assert (await c.post("/v1/workers", json=registration())).status_code == 200
        yield c
    await service.stop()


async def start(client: httpx.AsyncClient, workflow: str, value: Any) -> httpx.Response:
    return await client.post("/v1/runs", json={"workflow": workflow, "input": value})


async def refused(client: httpx.AsyncClient, workflow: str, value: Any) -> Problem:
    r = await start(client, workflow, value)
    assert r.status_code == 422, r.text
    body = Problem.model_validate(r.json())
    assert body.error == "InvalidInput"
    assert f"workflow {workflow!r}" in body.message
    return body


# --------------------------------------------------------------------------- POST /v1/runs


async def test_wrong_key_is_422_naming_it(client: httpx.AsyncClient) -> None:
    body = await refused(client, "one", {"wrong": 1})
    assert body.field == "input.wrong"
    assert "no parameter 'wrong'" in body.message


async def test_missing_argument_is_422_naming_it(client: httpx.AsyncClient) -> None:
    body = await refused(client, "ml", {"model": "big"})
    assert body.field == "input.batch"


async def test_wrong_type_is_422_naming_the_nested_field(client: httpx.AsyncClient) -> None:
    body = await refused(client, "ml", {"batch": [{"x": 1}, {"x": "two"}]})
    assert body.field == "input.batch.1.x"
    assert "integer" in body.message


async def test_empty_object_for_a_one_argument_workflow_is_refused(
    client: httpx.AsyncClient,
) -> None:
    assert (await refused(client, "one", {})).field == "input.x"
    assert (await refused(client, "settings", {})).field == "input.config"


async def test_nothing_is_started_when_the_input_is_refused(client: httpx.AsyncClient) -> None:
    await refused(client, "one", "five")
    assert (await client.get("/v1/runs")).json() == {"runs": []}


@pytest.mark.parametrize(
    ("workflow", "value"),
    [
        ("nothing", None),
        ("one", 3),
        ("one", {"x": 3}),
        ("ml", [{"x": 1}]),
        ("ml", {"batch": [{"x": 1}], "model": "big"}),
        ("anything", {"deep": [1, {"k": None}]}),
        ("anything", {"value": "v", "extra": [1]}),
        ("anything", 7.5),
        ("settings", {"a": 1, "b": 2}),
        ("settings", {"config": {"a": 1}}),
    ],
)
async def test_valid_inputs_start_runs(
    client: httpx.AsyncClient, workflow: str, value: Any
) -> None:
    r = await start(client, workflow, value)
    assert r.status_code == 201, r.text
    assert RunView.model_validate(r.json()).input == value


async def test_unknown_workflow_is_still_404(client: httpx.AsyncClient) -> None:
    r = await start(client, "nope", {"wrong": 1})
    assert (r.status_code, r.json()["error"]) == (404, "WorkflowNotFound")


async def test_an_unusable_schema_is_refused_at_registration(client: httpx.AsyncClient) -> None:
    bad = registration("w2")
    bad["workflows"][0]["input_schema"] = {"type": "no-such-type"}
    r = await client.post("/v1/workers", json=bad)
    assert r.status_code == 422
    assert (r.json()["error"], r.json()["field"]) == ("InvalidSchema", "workflows.0.input_schema")


# --------------------------------------------------------------------------- GET /v1/workflows


async def test_registered_workflows_show_their_schemas(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/workflows")
    assert r.status_code == 200
    listed = WorkflowList.model_validate(r.json())
    by_name = {w.name: w for w in listed.workflows}
    assert list(by_name) == ["anything", "ml", "nothing", "one", "settings"]
    assert by_name["ml"].sticky == "SOFT"
    assert by_name["ml"].workers == ["w1"]
    assert by_name["ml"].input_schema == get_definition(Ml).input_schema()
    assert by_name["one"].input_schema is not None
    assert by_name["one"].input_schema["properties"] == {"x": {"type": "integer"}}
    assert by_name["anything"].input_schema is not None
    assert by_name["anything"].input_schema["properties"]["value"] == {}
    (act,) = listed.activities
    assert (act.name, act.workers) == ("double", ["w1"])
    assert act.input_schema is not None
    assert act.input_schema["required"] == ["x"]


async def test_workers_are_listed_while_alive(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/workers/w1/lost", json={})).status_code == 200
    listed = WorkflowList.model_validate((await client.get("/v1/workflows")).json())
    assert all(w.workers == [] for w in listed.workflows)
    # A run of a workflow whose workers are gone is still checked, and waits.
    await refused(client, "one", {})
    assert (await start(client, "one", 1)).status_code == 201


# --------------------------------------------------------------------------- SDK end to end


async def test_the_entrypoint_receives_what_the_rule_says() -> None:
    async with WorkflowEnvironment(workflows=ALL, activities=[double]) as env:
        assert await env.execute(One, 4) == 8
        assert await env.execute(One, {"x": 5}) == 10
        assert await env.execute(Nothing, None) == "done"
        assert await env.execute(Ml, {"batch": [{"x": 1}]}) == {"n": 1, "model": "small"}
        assert await env.execute(Settings, {"a": 1, "b": 2}) == 3
        assert await env.execute(Settings, {"config": {"a": 4}}) == 4
        assert await env.execute(Anything, {"free": "form"}) == [{"free": "form"}, None]
        assert await env.execute(Anything, {"value": 1, "extra": 2}) == [1, 2]


# --------------------------------------------------------------------------- the CLI


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_command(list(argv), output=Output(out=make_console(out), err=make_console(err)))
    return code, out.getvalue(), err.getvalue()


async def test_the_cli_lists_workflows_and_reports_a_refused_input() -> None:
    service = SchedulerService()
    ready = asyncio.Event()
    port = _free_port()
    server = asyncio.create_task(serve("127.0.0.1", port, service, ready))
    url = f"http://127.0.0.1:{port}"
    try:
        await asyncio.wait_for(ready.wait(), 10)
        async with httpx.AsyncClient(base_url=url) as c:
            assert (await c.post("/v1/workers", json=registration())).status_code == 200

        code, out, err = await asyncio.to_thread(_cli, "--server", url, "get", "workflows")
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "STICKY", "WORKERS", "PARAMETERS"]
        assert lines[2].split() == ["ml", "SOFT", "w1", "batch,model"]
        assert lines[3].split() == ["nothing", "<none>", "w1", "-"]

        code, out, _ = await asyncio.to_thread(
            _cli, "--server", url, "get", "workflows", "-o", "json"
        )
        assert code == 0
        listed = WorkflowList.model_validate_json(out)
        assert {w.name: w.input_schema for w in listed.workflows}["one"] == (
            get_definition(One).input_schema()
        )

        code, out, _ = await asyncio.to_thread(
            _cli, "--server", url, "get", "workflow", "one", "-o", "json"
        )
        assert (code, json.loads(out)["name"]) == (0, "one")

        code, out, err = await asyncio.to_thread(
            _cli, "--server", url, "run", "one", "--input", '{"wrong": 1}'
        )
        assert code == 1
        assert out == ""
        assert err.startswith("error: workflow 'one' has no parameter 'wrong'")
        assert err.endswith("(field: input.wrong)\n")
    finally:
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server


@workflows.workflow.define(name="parent")
class Parent:
    @workflows.workflow.entrypoint
    async def run(self, child_input: Any) -> str:
        try:
            await workflows.workflow.execute_child(One, child_input)
        except workflows.ChildWorkflowError as exc:
            return f"{exc.reason}: {exc.message}"
        return "started"


async def test_a_child_whose_input_does_not_fit_fails_with_invalid_input() -> None:
    async with WorkflowEnvironment(workflows=[Parent, One], activities=[double]) as env:
        outcome = await env.execute(Parent, {"child_input": {}})
        assert outcome.startswith("InvalidInput: ")
        assert "workflow 'one' is missing required parameter 'x'" in outcome
        assert await env.execute(Parent, {"child_input": 2}) == "started"
