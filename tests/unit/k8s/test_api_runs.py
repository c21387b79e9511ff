"""The WorkflowRun a `POST /v1/runs` body becomes (`k8s/runs/api_starter.py`); the operator
e2e test tests/e2e/test_api_runs_k8s.py starts such runs on a real apiserver."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tether_operator.engine import InvalidCommand, RunNotFound
from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.runs.api_starter import ApiRunStarter, workflow_run_for
from tether_operator.k8s.runs.status import view_of_object
from tether_operator.scheduler import SchedulerService
from worker_runtime.protocol import RunView, StartRunRequest


def body(**fields: Any) -> dict[str, Any]:
    return workflow_run_for(StartRunRequest.model_validate(fields), "tether-system")


def test_a_dotted_run_id_names_the_namespace_and_the_workflow_run() -> None:
    obj = body(workflow="steps", run_id="team.nightly", input={"count": 2})
    assert obj["metadata"] == {"namespace": "team", "name": "nightly"}
    assert obj["spec"] == {"workflowRef": {"name": "steps"}, "input": {"count": 2}}


def test_a_plain_run_id_or_none_goes_to_the_operator_namespace() -> None:
    assert body(workflow="steps", run_id="nightly")["metadata"] == {
        "namespace": "tether-system",
        "name": "nightly",
    }
    assert body(workflow="ML_Inference v2")["metadata"] == {
        "namespace": "tether-system",
        "generateName": "ml-inference-v2-",
    }


def test_overrides_become_spec_fields_and_defaults_stay_the_workflows() -> None:
    spec = body(
        workflow="steps",
        run_id="team.r",
        sticky="HARD",
        schedule_timeout=90,
        worker_pool="team.gpu",
    )["spec"]
    assert spec == {
        "workflowRef": {"name": "steps"},
        "sticky": "HARD",
        "scheduleTimeout": "90s",
        "workerPool": "gpu",
    }
    assert "scheduleTimeout" not in body(workflow="steps", run_id="team.r")["spec"]
    assert body(workflow="steps", run_id="team.r", worker_pool="gpu")["spec"]["workerPool"] == "gpu"


def test_a_pool_of_another_namespace_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidCommand, match="WorkerPool of its own namespace") as info:
        body(workflow="steps", run_id="team.r", worker_pool="other.gpu")
    assert info.value.field == "worker_pool"


def test_the_namespace_field_places_a_run_and_must_agree_with_the_run_id() -> None:
    assert body(workflow="steps", namespace="team")["metadata"] == {
        "namespace": "team",
        "generateName": "steps-",
    }
    assert body(workflow="steps", namespace="team", run_id="nightly")["metadata"] == {
        "namespace": "team",
        "name": "nightly",
    }
    assert body(workflow="s", namespace="team", run_id="team.r")["metadata"]["namespace"] == "team"
    with pytest.raises(
        InvalidCommand, match="names namespace other, but namespace is team"
    ) as info:
        body(workflow="steps", namespace="team", run_id="other.r")
    assert info.value.field == "namespace"


WAITING = {
    "apiVersion": "tether.dev/v1alpha1",
    "kind": "WorkflowRun",
    "metadata": {"name": "early", "namespace": "team", "creationTimestamp": "2026-01-01T00:00:00Z"},
    "spec": {"workflowRef": {"name": "steps"}, "input": {"count": 2}},
    "status": {"phase": "Pending", "conditions": [], "progress": "0/0"},
}
REFUSED = {
    **WAITING,
    "metadata": {**WAITING["metadata"], "name": "typo"},
    "status": {
        "phase": "Failed",
        "completionTime": "2026-01-01T00:00:01Z",
        "error": {
            "type": "InvalidInput",
            "message": "spec.input: no parameter 'cnt'",
            "reason": "InvalidInput",
        },
    },
}


def test_runs_the_engine_does_not_hold_are_seen_as_their_objects_say() -> None:
    waiting = RunView.model_validate(view_of_object(WAITING))
    assert (waiting.run_id, waiting.workflow, waiting.phase) == ("team.early", "steps", "Pending")
    assert waiting.input == {"count": 2}
    refused = RunView.model_validate(view_of_object(REFUSED))
    assert refused.phase == "Failed"
    assert refused.error is not None
    assert (refused.error.reason, refused.error.message) == (
        "InvalidInput",
        "spec.input: no parameter 'cnt'",
    )
    assert refused.finished_at == refused.created_at + 1


async def test_the_operator_api_finds_waiting_and_refused_runs() -> None:
    def api(request: httpx.Request) -> httpx.Response:
        objects = {"early": WAITING, "typo": REFUSED}
        if request.url.path.endswith("/workflowruns"):
            return httpx.Response(200, json={"items": list(objects.values()), "metadata": {}})
        name = request.url.path.rsplit("/", 1)[1]
        if name in objects:
            return httpx.Response(200, json=objects[name])
        return httpx.Response(404, json={"kind": "Status", "reason": "NotFound"})

    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api))
    service = SchedulerService(namespace="tether-system")
    service.use_run_starter(ApiRunStarter(client, None, "tether-system", ["team"]))  # type: ignore[arg-type]
    try:
        assert (await service.find_run("team.typo"))["phase"] == "Failed"
        assert (await service.wait_run("team.typo", 5))["error"]["reason"] == "InvalidInput"
        pending = await service.wait_run("team.early", 0.6)
        assert pending["phase"] == "Pending", "waited, then answered with what it is"
        assert {v["run_id"] for v in await service.find_runs()} == {"team.early", "team.typo"}
        with pytest.raises(RunNotFound):
            await service.find_run("team.nope")
        with pytest.raises(RunNotFound):
            await service.find_run("elsewhere.r")  # a namespace the operator does not serve
    finally:
        await client.aclose()
