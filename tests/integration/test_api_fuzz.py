"""Nothing a client sends crashes the scheduler: random bodies at every endpoint.

Hypothesis generates JSON values, shaped-but-wrong protocol messages and raw bytes
and sends them, interleaved with well-formed traffic from a registered worker, to
each endpoint. Every answer must be < 500 with a Problem body for errors, and the
scheduler must still run a workflow end to end afterwards.

CI runs 150 examples (about 500 fuzzed requests). `make fuzz` runs the long form
(`TETHER_FUZZ_EXAMPLES=3500`, over 10,000 requests) and writes the figures, every
answer's status counted, to `TETHER_FUZZ_REPORT` (bench/results/fuzz.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether_operator.scheduler import SchedulerService, create_app
from worker_runtime.protocol import Problem

EXAMPLES = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "150"))
pytestmark = pytest.mark.timeout(max(120, EXAMPLES // 4))

ENDPOINTS = [
    ("POST", "/v1/workers"),
    ("POST", "/v1/workers/w1/poll"),
    ("POST", "/v1/workers/w1/heartbeat"),
    ("POST", "/v1/workers/w1/report"),
    ("POST", "/v1/workers/w1/lost"),
    ("POST", "/v1/tasks/r/1/1/complete"),
    ("POST", "/v1/tasks/r/1/1/heartbeat"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs/nope"),
    ("GET", "/v1/runs/nope/wait?timeout=0"),
    ("POST", "/v1/runs/nope/cancel"),
    ("GET", "/v1/workflows/workers/whoami"),
]

REGISTER = {
    "worker_id": "w1",
    "incarnation": "i1",
    "workflows": [{"name": "wf"}],
    "activities": [{"name": "act"}],
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
# Messages that look like the protocol's, with fields of the wrong type or range.
field_names = st.sampled_from(
    [
        "worker_id",
        "incarnation",
        "workflows",
        "activities",
        "slots",
        "session_capacity",
        "max_tasks",
        "wait",
        "completions",
        "heartbeats",
        "workflows",
        "task_id",
        "ok",
        "result",
        "error",
        "workflow",
        "input",
        "run_id",
        "sticky",
        "schedule_timeout",
        "commands",
        "seq",
        "type",
        "reason",
        "details",
    ]
)
near_messages = st.dictionaries(field_names, json_values, max_size=6)
bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | near_messages.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)


def _short_polls(path: str, body: bytes) -> bytes:
    """A long-poll would just wait (20 s by default): keep fuzzed polls short."""
    if not path.endswith("/poll"):
        return body
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict):
        wait = value.get("wait")
        if not isinstance(wait, int | float) or isinstance(wait, bool) or not 0 <= wait <= 0.01:
            value["wait"] = 0
        return json.dumps(value).encode()
    return body


STATUSES: Counter[tuple[str, int]] = Counter()
"""(endpoint, status) of every fuzzed answer of this session."""


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    began = time.monotonic()
    yield
    out = os.environ.get("TETHER_FUZZ_REPORT")
    if out:
        _write_report(Path(out), time.monotonic() - began)


def _write_report(path: Path, seconds: float) -> None:
    total = sum(STATUSES.values())
    by_status = Counter[int]()
    for (_, status), n in STATUSES.items():
        by_status[status] += n
    lines = [
        "# HTTP fuzz of the scheduler API",
        "",
        "`make fuzz` (tests/integration/test_api_fuzz.py, long form): Hypothesis sends "
        "random JSON, protocol-shaped messages with wrong fields and raw bytes to every "
        "endpoint, between a registered worker's well-formed calls; after each example "
        "the scheduler must still run a workflow end to end.",
        "",
        f"- examples: {EXAMPLES}",
        f"- fuzzed requests: {total} in {seconds:.0f} s",
        f"- answers of 500 or more: {sum(n for s, n in by_status.items() if s >= 500)}",
        "",
        "| status | answers |",
        "|---|---|",
        *(f"| {status} | {n} |" for status, n in sorted(by_status.items())),
        "",
        "| endpoint | status | answers |",
        "|---|---|---|",
        *(f"| `{e}` | {s} | {n} |" for (e, s), n in sorted(STATUSES.items())),
        "",
    ]
    path.write_text("\n".join(lines))


async def _send(client: httpx.AsyncClient, method: str, path: str, body: bytes) -> None:
    body = _short_polls(path, body)
    r = await client.request(
        method,
        path,
        content=body,
        headers={"content-type": "application/json", "x-tether-worker": "w1"},
    )
    STATUSES[(f"{method} {path.split('?')[0]}", r.status_code)] += 1
    assert r.status_code < 500, (method, path, body, r.status_code, r.text)
    if r.status_code >= 400:
        Problem.model_validate(r.json())


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(st.tuples(st.sampled_from(ENDPOINTS), bodies), min_size=1, max_size=6))
def test_random_requests_never_crash_the_scheduler(
    calls: list[tuple[tuple[str, str], bytes]],
) -> None:
    async def scenario() -> None:
        service = SchedulerService()
        await service.start()
        app = create_app(service, manage_lifecycle=False)
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://scheduler"
            ) as client:
                assert (await client.post("/v1/workers", json=REGISTER)).status_code == 200
                for (method, path), body in calls:
                    await _send(client, method, path, body)
                await _still_serves_a_run(client)
        finally:
            await service.stop()

    asyncio.run(scenario())


async def _still_serves_a_run(client: httpx.AsyncClient) -> None:
    await client.post("/v1/workers", json={**REGISTER, "incarnation": "fresh"})
    r = await client.post("/v1/runs", json={"workflow": "wf", "input": {"n": 1}})
    assert r.status_code == 201, r.text
    run_id = r.json()["run_id"]
    tasks: list[dict[str, Any]] = []
    for _ in range(5):
        polled = await client.post("/v1/workers/w1/poll", json={"wait": 0.2})
        tasks = [t for t in polled.json()["tasks"] if t["kind"] == "workflow"]
        if tasks:
            break
    assert tasks, "the workflow task never arrived"
    wft = tasks[0]
    done = {
        "run_id": run_id,
        "workflow_task_id": wft["task_id"],
        "commands": [{"type": "complete_workflow", "seq": 1, "result": "ok"}],
    }
    r = await client.post("/v1/workers/w1/report", json={"workflows": [done]})
    assert r.status_code == 200, r.text
    view = (await client.get(f"/v1/runs/{run_id}")).json()
    assert (view["phase"], view["result"]) == ("Succeeded", "ok")
