"""CLI test fixtures: protocol views, a fake scheduler (MockTransport), captured output."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.cli import run_command
from tether_operator.cli.output import Output, make_console
from worker_runtime.protocol import (
    ActivityView,
    ErrorInfo,
    RunView,
    SessionView,
    WorkerView,
)


def make_run(phase: str = "Succeeded", **overrides: Any) -> RunView:
    """An ml-inference run: a model load and two predictions, one session rebound once."""
    finished = phase in {"Succeeded", "Failed", "Cancelled"}
    now = time.time()  # ages in the tables are relative to the real clock
    fields: dict[str, Any] = {
        "run_id": "run-1",
        "workflow": "ml-inference",
        "phase": phase,
        "input": {"batch": [{"x": 1}, {"x": 2}]},
        "result": [{"y": 2}, {"y": 4}] if phase == "Succeeded" else None,
        "sticky": "SOFT",
        "worker": "dev-worker-1",
        "created_at": now - 30,
        "finished_at": now - 27.5 if finished else None,
        "activities": [
            ActivityView(
                seq=2,
                name="load_model",
                state="Completed",
                attempt=1,
                worker="dev-worker-2",
                node="dev-node-b",
                session="run-1/s1",
                scheduled_at=now - 30,
                started_at=now - 29.9,
                finished_at=now - 29.0,
            ),
            ActivityView(
                seq=3,
                name="predict",
                state="Completed",
                attempt=1,
                worker="dev-worker-4",
                node="dev-node-b",
                session="run-1/s1",
                cold_start=True,
                scheduled_at=now - 29,
                started_at=now - 28.9,
                finished_at=now - 28.0,
            ),
            ActivityView(
                seq=4,
                name="predict",
                state="Running" if not finished else "Completed",
                attempt=2,
                worker="dev-worker-4",
                node="dev-node-b",
                session="run-1/s1",
                scheduled_at=now - 28,
                started_at=now - 27.9,
                finished_at=now - 27.6 if finished else None,
            ),
        ],
        "sessions": [
            SessionView(
                id="run-1/s1",
                strategy="SOFT",
                state="Open" if not finished else "Closed",
                worker="dev-worker-4",
                node="dev-node-b",
                reason="ProcessExited",
                message="dev-worker-2 (pid 42) killed by SIGKILL",
                workers=["dev-worker-2", "dev-worker-4"],
            )
        ],
        "history_length": 17,
    }
    if phase == "Failed":
        fields["error"] = ErrorInfo(
            type="SessionBroken", message="session worker lost", reason="SessionBroken"
        )
    fields.update(overrides)
    return RunView.model_validate(fields)


def make_worker(index: int = 1, alive: bool = True) -> WorkerView:
    """A dev worker as `GET /v1/workers` lists it."""
    return WorkerView(
        worker_id=f"dev-worker-{index}",
        pod=f"dev-worker-{index}",
        node="dev-node-a" if index % 2 else "dev-node-b",
        alive=alive,
        slots=8,
        running=1,
        session_capacity=4,
        sessions=["run-1/s1"] if alive else [],
        workflows=["ml-inference"],
        activities=["load_model", "predict"],
        lost_reason=None if alive else "ProcessExited",
    )


Handler = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeScheduler:
    """Routes `(METHOD, path)` to canned responses and records every request."""

    routes: dict[tuple[str, str], Handler | list[httpx.Response] | httpx.Response] = field(
        default_factory=dict
    )
    requests: list[httpx.Request] = field(default_factory=list)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is None:
            return problem(404, "NotFound", f"no route {request.method} {request.url.path}")
        if isinstance(route, httpx.Response):
            return route
        if isinstance(route, list):
            return route.pop(0) if len(route) > 1 else route[0]
        return route(request)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


def ok(model: Any, status: int = 200) -> httpx.Response:
    """A JSON response carrying a protocol model."""
    return httpx.Response(
        status, content=model.model_dump_json(), headers={"content-type": "application/json"}
    )


def problem(status: int, error: str, message: str, field_name: str | None = None) -> httpx.Response:
    """A `Problem` error response."""
    return httpx.Response(status, json={"error": error, "message": message, "field": field_name})


@dataclass
class Result:
    """What one CLI invocation did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def fake() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def cli(fake: FakeScheduler, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run `tether ARGS...` against the fake scheduler; capture stdout and stderr."""
    monkeypatch.delenv("TETHER_SERVER", raising=False)
    monkeypatch.delenv("TETHER_TOKEN", raising=False)
    monkeypatch.delenv("TETHER_NAMESPACE", raising=False)
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")  # no namespace by default

    def invoke(*argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        output = Output(out=make_console(out), err=make_console(err))
        code = run_command(list(argv), output=output, transport=fake.transport)
        return Result(code, out.getvalue(), err.getvalue())

    return invoke
