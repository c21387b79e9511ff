"""Tether's CRDs (crds/*.yaml) against a real apiserver.

What kubectl users rely on: valid objects of every kind are accepted and invalid
ones refused with a message naming the field; `kubectl explain` documents fields;
printer columns, `kubectl scale` and `kubectl wait` work; `kubectl get tether`
lists every kind. No operator runs here: statuses are patched in by hand through
the status subresource, as the operator will.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.e2e.kube import API_VERSION, Kube, KubectlError, Obj, eventually

TEMPLATE = {"spec": {"containers": [{"name": "worker", "image": "tether:dev"}]}}


def workflow(name: str = "ml-inference", **spec: Any) -> Obj:
    return {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": {"name": name}, "spec": spec}


def run(name: str = "r", **spec: Any) -> Obj:
    spec = {"workflowRef": {"name": "ml-inference"}, **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool(name: str = "gpu", **spec: Any) -> Obj:
    spec = {"template": TEMPLATE, **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkerPool",
        "metadata": {"name": name},
        "spec": spec,
    }


def schedule(name: str = "nightly", **spec: Any) -> Obj:
    spec = {"schedules": ["0 2 * * *"], "workflowRef": {"name": "ml-inference"}, **spec}
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowSchedule",
        "metadata": {"name": name},
        "spec": spec,
    }


def ended(outcome: str, generation: int) -> Obj:
    """A True `outcome` condition (Succeeded or Failed) computed from `generation`."""
    return {
        "type": outcome,
        "status": "True",
        "reason": "RunCompleted" if outcome == "Succeeded" else "RunFailed",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


def patch_status(kube: Kube, kind: str, name: str, status: Obj) -> None:
    """Write ``status`` the way the operator will: through the status subresource."""
    body = json.dumps({"status": status})
    kube.run("patch", kind, name, "--subresource=status", "--type=merge", "-p", body)


def table(kube: Kube, *args: str) -> list[list[str]]:
    """`kubectl get ARGS` as rows of cells (the header first)."""
    return [line.split() for line in kube.run("get", *args).splitlines()]


def test_every_kind_accepts_a_valid_object_and_is_in_the_tether_category(
    crds: list[str], namespace: Kube
) -> None:
    namespace.apply(
        workflow(workerPool="gpu", sticky="HARD", scheduleTimeout="2m", retry={"maxAttempts": 5}),
        run(input={"batch": [{"x": 1}]}, sticky="HARD", scheduleTimeout="90s", workerPool="gpu"),
        pool(replicas=2, minReplicas=1, maxReplicas=4, autoscale=True, idleTimeout="1m30s"),
        schedule(
            schedules=["*/15 9-17 * * MON-FRI", "@daily", "*/10 * * * * *"],
            timeZone="America/New_York",
            concurrencyPolicy="Replace",
            startingDeadlineSeconds=60,
            catchUpPolicy="All",
            maxCatchUp=5,
        ),
    )
    names = set(namespace.run("get", "tether", "-o", "name").split())
    assert names == {
        "workflow.tether.dev/ml-inference",
        "workflowrun.tether.dev/r",
        "workerpool.tether.dev/gpu",
        "workflowschedule.tether.dev/nightly",
    }
    defaults = namespace.get("wfs", "nightly")["spec"]
    assert (defaults["suspend"], defaults["successfulRunsHistoryLimit"]) == (False, 3)
    assert defaults["failedRunsHistoryLimit"] == 1
    stored = namespace.get("wp", "gpu")["spec"]
    assert (stored["slots"], stored["sessionCapacity"]) == (8, 4), "defaults are applied"
    assert namespace.get("wf", "ml-inference")["spec"]["retry"]["initialInterval"] == "1s"


@pytest.mark.parametrize(
    ("obj", "error"),
    [
        (
            pool(replicas=2, minReplicas=3, maxReplicas=2),
            r"spec\.minReplicas: Invalid value: .*minReplicas must not exceed maxReplicas",
        ),
        (
            pool(replicas=5, maxReplicas=4),
            r"spec\.replicas: .*replicas must not exceed maxReplicas",
        ),
        (pool(autoscale=True), r"spec\.maxReplicas: .*autoscale needs maxReplicas"),
        (
            {**pool(), "spec": {"template": {"spec": {"containers": []}}}},
            r"spec\.template\.spec\.containers: Invalid value: 0",
        ),
        (
            run(sticky="SOFT", scheduleTimeout="1m"),
            r"spec\.scheduleTimeout: .*scheduleTimeout applies only to HARD sessions",
        ),
        (
            workflow(sticky="SOFT", scheduleTimeout="1m"),
            r"spec\.scheduleTimeout: .*scheduleTimeout applies only to HARD sessions",
        ),
        (
            run(sticky="HARD", scheduleTimeout="5 minutes"),
            r'spec\.scheduleTimeout: Invalid value: "5 minutes": .*should match',
        ),
        (
            run(sticky="HARD", scheduleTimeout="0s"),
            r"spec\.scheduleTimeout: .*must be longer than 0s",
        ),
        (
            run(sticky="MEDIUM"),
            r'spec\.sticky: Unsupported value: "MEDIUM": supported values: "SOFT", "HARD"',
        ),
        (
            {**run(), "spec": {"input": {"x": 1}}},
            r"spec\.workflowRef: Required value",
        ),
        (
            workflow(retry={"initialInterval": "2m", "maxInterval": "1m"}),
            r"spec\.retry\.initialInterval: .*initialInterval must not exceed maxInterval",
        ),
        (run(colour="red"), r'unknown field "spec\.colour"'),
        (
            schedule(schedules=["@daily", "61 * * * *"]),
            r"spec\.schedules\[1\]: Invalid value: .*not a cron expression: give five fields",
        ),
        (
            schedule(schedules=["every day"]),
            r"spec\.schedules\[0\]: .*not a cron expression",
        ),
        (schedule(schedules=[]), r"spec\.schedules: Invalid value: 0"),
        (
            schedule(timeZone="Mars/Olympus"),
            r"spec\.timeZone: .*unknown time zone Mars/Olympus.*not an IANA time zone",
        ),
        (schedule(timeZone="Local"), r"spec\.timeZone: .*not an IANA time zone"),
        (
            schedule(concurrencyPolicy="Queue"),
            r'spec\.concurrencyPolicy: Unsupported value: "Queue": supported values: "Allow"',
        ),
        (schedule(startingDeadlineSeconds=-1), r"spec\.startingDeadlineSeconds: Invalid value"),
        (
            schedule(name="n" * 53),
            r"metadata\.name: a WorkflowSchedule's name starts its runs' names",
        ),
    ],
    ids=[
        "min-above-max",
        "replicas-above-max",
        "autoscale-without-max",
        "no-containers",
        "run-timeout-with-soft",
        "workflow-timeout-with-soft",
        "bad-duration",
        "zero-timeout",
        "bad-sticky",
        "no-workflow-ref",
        "retry-intervals",
        "unknown-field",
        "bad-cron-field",
        "not-cron",
        "no-schedules",
        "bad-zone",
        "local-zone",
        "bad-concurrency-policy",
        "negative-deadline",
        "schedule-name-too-long",
    ],
)
def test_invalid_objects_are_refused_naming_the_field(
    crds: list[str], namespace: Kube, obj: Obj, error: str
) -> None:
    with pytest.raises(KubectlError, match=error):
        namespace.apply(obj)


def test_explain_documents_the_fields(crds: list[str], kube: Kube) -> None:
    text = eventually(
        lambda: kube.run("explain", "workflowrun.spec.input"),
        what="kubectl explain workflowrun.spec.input",
    )
    assert "any JSON value" in " ".join(text.split())
    pool_text = " ".join(kube.run("explain", "wp.spec.replicas").split())
    assert "Desired number of worker pods" in pool_text


def test_printer_columns_show_spec_and_status(crds: list[str], namespace: Kube) -> None:
    namespace.apply(workflow(workerPool="gpu"), run(sticky="HARD"), pool(replicas=3))
    patch_status(
        namespace, "wfr", "r", {"phase": "Running", "workerPod": "gpu-7x2kq", "progress": "3/20"}
    )
    patch_status(namespace, "wp", "gpu", {"replicas": 3, "readyReplicas": 2, "openSessions": 5})
    patch_status(namespace, "wf", "ml-inference", {"activityCount": 2, "servingPools": "gpu"})

    header, row = table(namespace, "wfr", "r")
    assert header == ["NAME", "WORKFLOW", "PHASE", "WORKER-POD", "PROGRESS", "AGE"]
    assert row[:5] == ["r", "ml-inference", "Running", "gpu-7x2kq", "3/20"]
    header, row = table(namespace, "wfr", "r", "-o", "wide")
    assert header[-2:] == ["STICKY", "AGE"]
    assert row[-2] == "HARD"

    header, row = table(namespace, "wp", "gpu")
    assert header == ["NAME", "DESIRED", "READY", "SESSIONS", "AGE"]
    assert row[:4] == ["gpu", "3", "2", "5"]

    header, row = table(namespace, "wf", "ml-inference")
    assert header == ["NAME", "ACTIVITIES", "POOLS", "AGE"]
    assert row[:3] == ["ml-inference", "2", "gpu"]

    namespace.apply(schedule(schedules=["@hourly"], suspend=True))
    patch_status(
        namespace,
        "wfs",
        "nightly",
        {
            "activeCount": 1,
            "lastScheduleTime": "2026-01-01T01:00:00Z",
            "nextScheduleTime": "2026-01-01T02:00:00Z",
            "lastRunPhase": "Running",
        },
    )
    header, row = table(namespace, "wfs", "nightly")
    assert header == [
        "NAME",
        "SCHEDULE",
        "WORKFLOW",
        "SUSPEND",
        "ACTIVE",
        "LAST",
        "NEXT",
        "LAST-PHASE",
        "AGE",
    ]
    assert row[:5] == ["nightly", "@hourly", "ml-inference", "true", "1"]
    assert row[6:8] == ["2026-01-01T02:00:00Z", "Running"]


def test_status_writes_do_not_bump_the_generation(crds: list[str], namespace: Kube) -> None:
    namespace.apply(run())
    patch_status(namespace, "wfr", "r", {"phase": "Running"})
    obj = namespace.get("wfr", "r")
    assert obj["metadata"]["generation"] == 1
    namespace.apply(run(input={"x": 2}))
    obj = namespace.get("wfr", "r")
    assert obj["metadata"]["generation"] == 2
    assert obj["status"]["phase"] == "Running", "a spec write leaves the status alone"


def test_kubectl_scale_sets_spec_replicas_within_the_bounds(
    crds: list[str], namespace: Kube
) -> None:
    namespace.apply(pool(replicas=1, maxReplicas=5))
    patch_status(namespace, "wp", "gpu", {"replicas": 1, "selector": "tether.dev/pool=gpu"})

    namespace.run("scale", "wp/gpu", "--replicas=3")
    assert namespace.get("wp", "gpu")["spec"]["replicas"] == 3
    scale = json.loads(namespace.run("get", "wp", "gpu", "--subresource=scale", "-o", "json"))
    assert scale["spec"]["replicas"] == 3
    assert scale["status"] == {"replicas": 1, "selector": "tether.dev/pool=gpu"}

    with pytest.raises(KubectlError, match="replicas must not exceed maxReplicas"):
        namespace.run("scale", "wp/gpu", "--replicas=9")
    assert namespace.get("wp", "gpu")["spec"]["replicas"] == 3


def _wait(kube: Kube, condition_type: str, timeout: str) -> subprocess.Popen[str]:
    command = [kube.kubectl, "--kubeconfig", kube.kubeconfig, "--namespace", str(kube.namespace)]
    command += ["wait", f"--for=condition={condition_type}", "wfr/r", f"--timeout={timeout}"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("outcome", ["Succeeded", "Failed"])
def test_kubectl_wait_returns_once_the_condition_is_current(
    crds: list[str], namespace: Kube, outcome: str
) -> None:
    namespace.apply(run())
    waiting = _wait(namespace, outcome, "60s")
    patch_status(namespace, "wfr", "r", {"conditions": [ended(outcome, 0)]})
    with pytest.raises(KubectlError, match="timed out"):
        namespace.run("wait", f"--for=condition={outcome}", "wfr/r", "--timeout=2s")
    assert waiting.poll() is None, "a condition of an older generation must not end the wait"

    patch_status(namespace, "wfr", "r", {"conditions": [ended(outcome, 1)]})
    out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert "condition met" in out
