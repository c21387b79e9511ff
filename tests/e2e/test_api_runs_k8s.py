"""`POST /v1/runs` on the operator: the run becomes a WorkflowRun, so its history is
kept like any other's (tests/unit/k8s/test_api_runs.py covers the mapping)."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kube import Kube, eventually
from tests.e2e.operator_env import TESTDATA, OperatorEnv, operator_env, wait_for

STEPS = TESTDATA / "operator_workflows.py"


@pytest.fixture
def env(kube: Kube, crds: list[str], tmp_path: Path) -> Iterator[OperatorEnv]:
    with operator_env(kube, tmp_path) as started:
        yield started


def post(env: OperatorEnv, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"{env.operator.url}{path}",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_run_started_over_http_is_a_workflow_run_and_survives_a_restart(
    env: OperatorEnv,
) -> None:
    env.workers.start(STEPS, "worker-a")
    eventually(
        lambda: any(
            "steps" in w["workflows"] for w in env.operator.get("/v1/workers")[1]["workers"]
        ),
        what="the worker's registration",
    )
    ns = env.operator.namespace
    start = {"workflow": "steps", "run_id": f"{ns}.api-1", "input": {"count": 4, "seconds": 0.5}}
    status, view = post(env, "/v1/runs", start)
    assert status == 201, view
    assert view["run_id"] == f"{ns}.api-1"
    assert view["phase"] in ("Pending", "Running")
    obj = env.ns.get("wfr", "api-1")
    assert obj["spec"] == {
        "workflowRef": {"name": "steps"},
        "input": {"count": 4, "seconds": 0.5},
    }
    history = env.ns.list("configmaps", "tether.dev/part=history,tether.dev/run=api-1")
    assert history, "acknowledged only once its first history is stored"
    assert history[0]["metadata"]["ownerReferences"][0]["uid"] == obj["metadata"]["uid"]

    assert env.operator.stop(signal.SIGKILL) == -signal.SIGKILL
    env.operator.start()
    run = wait_for(env.ns, "api-1", timeout=120)
    assert run["status"]["result"] == {"count": 4, "sum": 0 + 1 + 4 + 9}
    assert env.operator.get(f"/v1/runs/{ns}.api-1")[1]["phase"] == "Succeeded"

    again = post(env, "/v1/runs", start)
    assert again[0] == 409, again
    assert "api-1" in again[1]["message"]
    unknown = post(env, "/v1/runs", {"workflow": "nope", "run_id": f"{ns}.api-2"})
    assert unknown[0] == 404, unknown
    assert "nope" in unknown[1]["message"]
    elsewhere = post(env, "/v1/runs", {"workflow": "steps", "run_id": "kube-system.api-3"})
    assert elsewhere[0] == 422, elsewhere
    assert "not watched" in elsewhere[1]["message"]
    assert [w["metadata"]["name"] for w in env.ns.list("wfr")] == ["api-1"]
