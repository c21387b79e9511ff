"""The WorkflowRun a `POST /v1/runs` body becomes (`k8s/api_runs.py`); the operator
e2e test tests/e2e/test_api_runs_k8s.py starts such runs on a real apiserver."""

from __future__ import annotations

from typing import Any

import pytest

from tether_operator.engine import InvalidCommand
from tether_operator.k8s.api_runs import workflow_run_for
from worker_runtime.protocol import StartRunRequest


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
