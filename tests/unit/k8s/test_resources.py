"""The resource models: good objects validate, bad ones fail naming what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tether_operator.k8s.resources.specs import (
    API_VERSION,
    RetryPolicy,
    WorkerPool,
    WorkerPoolSpec,
    Workflow,
    WorkflowRun,
    WorkflowRunSpec,
    WorkflowSpec,
    format_duration,
    parse_duration,
)
from tether_types import wire

TEMPLATE = {"spec": {"containers": [{"name": "worker", "image": "tether:dev"}]}}


def pool_spec(**fields: Any) -> dict[str, Any]:
    return {"template": TEMPLATE, **fields}


def test_a_full_workflow_run_round_trips_in_camel_case() -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": "r", "namespace": "ns", "generation": 2, "uid": "u-1"},
        "spec": {
            "workflowRef": {"name": "ml-inference"},
            "input": {"batch": [{"x": 1}]},
            "sticky": "HARD",
            "scheduleTimeout": "90s",
            "workerPool": "gpu",
            "ttlSecondsAfterFinished": 600,
        },
        "status": {
            "observedGeneration": 2,
            "phase": "Succeeded",
            "workerPod": "gpu-abc12",
            "progress": "3/3",
            "conditions": [
                {
                    "type": "Succeeded",
                    "status": "True",
                    "reason": "RunCompleted",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                    "observedGeneration": 2,
                }
            ],
            "sessions": [
                {"id": "s1", "strategy": "HARD", "state": "Closed", "pod": "gpu-abc12", "node": "n"}
            ],
            "activities": [{"seq": 1, "name": "predict", "state": "Completed", "attempt": 1}],
            "result": [1, 2],
        },
    }
    run = WorkflowRun.model_validate(body)
    assert run.spec.schedule_timeout == "90s"
    assert run.metadata.model_extra == {"uid": "u-1"}
    dumped = run.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["spec"]["workflowRef"] == {"name": "ml-inference"}
    assert dumped["status"]["conditions"][0]["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    assert WorkflowRun.model_validate(dumped) == run


def test_a_worker_pool_keeps_any_pod_template_field() -> None:
    pool = WorkerPool.model_validate(
        {
            "kind": "WorkerPool",
            "metadata": {"name": "gpu"},
            "spec": {
                "replicas": 2,
                "minReplicas": 1,
                "maxReplicas": 4,
                "autoscale": True,
                "template": {
                    "metadata": {"labels": {"app": "w"}},
                    "spec": {
                        "nodeSelector": {"gpu": "true"},
                        "containers": [{"name": "w", "image": "i", "resources": {}}],
                    },
                },
            },
        }
    )
    assert pool.spec.template.spec.model_extra == {"nodeSelector": {"gpu": "true"}}
    assert (pool.spec.slots, pool.spec.session_capacity, pool.spec.idle_timeout) == (8, 4, "5m")


def test_defaults_come_from_the_wire_vocabulary() -> None:
    retry = RetryPolicy()
    assert retry.max_attempts == wire.DEFAULT_MAX_ATTEMPTS
    assert parse_duration(retry.initial_interval) == wire.DEFAULT_INITIAL_INTERVAL
    assert parse_duration(retry.max_interval) == wire.DEFAULT_MAX_INTERVAL
    assert retry.backoff_coefficient == wire.DEFAULT_BACKOFF_COEFFICIENT
    timeout = format_duration(wire.DEFAULT_SCHEDULE_TIMEOUT)
    for model in (WorkflowSpec, WorkflowRunSpec):
        description = model.model_fields["schedule_timeout"].description or ""
        assert description.endswith(f"else {timeout}.") or description.endswith(
            f"absent: {timeout}."
        )


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        (
            WorkerPoolSpec,
            pool_spec(minReplicas=3, maxReplicas=2, replicas=2),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            WorkerPoolSpec,
            pool_spec(replicas=5, maxReplicas=4),
            "replicas must not exceed maxReplicas",
        ),
        (
            WorkerPoolSpec,
            pool_spec(replicas=1, minReplicas=2),
            "replicas must not be below minReplicas",
        ),
        (WorkerPoolSpec, pool_spec(autoscale=True), "autoscale needs maxReplicas"),
        (WorkerPoolSpec, pool_spec(replicas=-1), "replicas"),
        (WorkerPoolSpec, pool_spec(slots=0), "slots"),
        (WorkerPoolSpec, pool_spec(idleTimeout="5 minutes"), "idleTimeout"),
        (WorkerPoolSpec, {"template": {"spec": {"containers": []}}}, "containers"),
        (WorkerPoolSpec, {}, "template"),
        (WorkflowRunSpec, {}, "workflowRef"),
        (WorkflowRunSpec, {"workflowRef": {"name": "Not_A_Name"}}, "workflowRef.name"),
        (WorkflowRunSpec, {"workflowRef": {"name": "w"}, "sticky": "MEDIUM"}, "sticky"),
        (
            WorkflowRunSpec,
            {"workflowRef": {"name": "w"}, "sticky": "SOFT", "scheduleTimeout": "1m"},
            "scheduleTimeout applies only to HARD sessions",
        ),
        (
            WorkflowRunSpec,
            {"workflowRef": {"name": "w"}, "scheduleTimeout": "5x"},
            "scheduleTimeout",
        ),
        (
            WorkflowRunSpec,
            {"workflowRef": {"name": "w"}, "scheduleTimeout": "0s"},
            "must be longer than 0s",
        ),
        (WorkflowRunSpec, {"workflowRef": {"name": "w"}, "colour": "red"}, "colour"),
        (
            WorkflowSpec,
            {"sticky": "SOFT", "scheduleTimeout": "1m"},
            "scheduleTimeout applies only to HARD sessions",
        ),
        (
            RetryPolicy,
            {"initialInterval": "2m", "maxInterval": "1m"},
            "initialInterval must not exceed maxInterval",
        ),
        (RetryPolicy, {"maxAttempts": 0}, "maxAttempts"),
    ],
)
def test_bad_objects_are_refused_naming_the_field(
    model: type[WorkerPoolSpec | WorkflowRunSpec | WorkflowSpec | RetryPolicy],
    body: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        {"workflowRef": {"name": "w"}},
        {"workflowRef": {"name": "w"}, "sticky": "HARD", "scheduleTimeout": "1h30m"},
        # Without sticky the timeout serves the Workflow's (or the code's) HARD sessions.
        {"workflowRef": {"name": "w"}, "scheduleTimeout": "250ms"},
        {"workflowRef": {"name": "w"}, "input": None},
        {"workflowRef": {"name": "w"}, "input": "text"},
    ],
)
def test_good_run_specs_validate(body: dict[str, Any]) -> None:
    WorkflowRunSpec.model_validate(body)


def test_good_workflows_validate() -> None:
    Workflow.model_validate({"kind": "Workflow", "metadata": {"name": "w"}})
    Workflow.model_validate(
        {
            "kind": "Workflow",
            "spec": {
                "workerPool": "gpu",
                "sticky": "HARD",
                "scheduleTimeout": "10m",
                "retry": {"maxAttempts": 5, "initialInterval": "500ms", "maxInterval": "1m"},
            },
        }
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("0s", 0)],
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m", "-1s", "1d", "1.s", "PT5M"])
def test_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration: write a number and a unit"):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [0.25, 1, 59, 60, 100, 300, 3600, 5400])
def test_formatted_durations_parse_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(300) == "5m"
