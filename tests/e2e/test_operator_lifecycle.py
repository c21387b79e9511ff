"""The operator and the WorkflowRun lifecycle, against the real apiserver.

`tether operator` runs as a host process watching the test's namespace; workers are
host processes (`python -m worker_runtime FILE`). Everything a user sees goes through
kubectl: columns, conditions, `kubectl wait`, Events, the managed Workflow.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.kube import Kube, eventually
from tests.e2e.operator_env import (
    REPO,
    TESTDATA,
    OperatorEnv,
    condition,
    events_of,
    eventually_phase,
    operator_env,
    run_across_an_operator_kill,
    wait_for,
    workflow_run,
)


@pytest.fixture
def env(kube: Kube, crds: list[str], tmp_path: Path) -> Iterator[OperatorEnv]:
    with operator_env(kube, tmp_path) as started:
        yield started


ML = REPO / "examples" / "ml_inference.py"
STEPS = TESTDATA / "operator_workflows.py"


def test_a_run_created_with_kubectl_succeeds_with_its_result(env: OperatorEnv) -> None:
    env.workers.start(ML, "worker-a")
    env.ns.apply(workflow_run("batch", "ml-inference", {"batch": [{"x": 1}, {"x": 2}]}))
    run = wait_for(env.ns, "batch")
    status = run["status"]
    assert status["phase"] == "Succeeded"
    assert [r["y"] for r in status["result"]] == [3, 5]
    assert status["progress"] == "3/3"
    assert status["workerPod"] == "worker-a"
    assert condition(run, "Succeeded")["observedGeneration"] == run["metadata"]["generation"]
    assert {a["name"] for a in status["activities"]} == {"load_model", "predict"}
    assert all(a["pod"] == "worker-a" and a["attempt"] == 1 for a in status["activities"])

    table = env.ns.run("get", "wfr", "batch").splitlines()
    assert table[0].split() == ["NAME", "WORKFLOW", "PHASE", "WORKER-POD", "PROGRESS", "AGE"]
    assert table[1].split()[:5] == ["batch", "ml-inference", "Succeeded", "worker-a", "3/3"]

    reasons = eventually(
        lambda: (r := events_of(env.ns, "batch")) and "RunSucceeded" in r and r,
        what="the run's Events",
    )
    assert {"RunStarted", "SessionBound", "RunSucceeded"} <= set(reasons)
    assert "RunSucceeded" in env.ns.run("describe", "wfr", "batch")


def test_a_worker_registration_creates_a_managed_workflow(env: OperatorEnv) -> None:
    env.workers.start(ML, "worker-a")

    def published() -> dict | None:
        items = env.ns.list("workflows", "app.kubernetes.io/managed-by=tether")
        ready = [
            w
            for w in items
            if condition(w, "Ready")
            and w["status"].get("pods")
            and w["status"].get("observedGeneration") == w["metadata"]["generation"]
        ]
        return ready[0] if ready else None

    wf = eventually(published, what="the managed Workflow ml-inference")
    assert wf["metadata"]["name"] == "ml-inference"
    status = wf["status"]
    assert status["activityCount"] == 2
    assert status["pods"] == ["worker-a"]
    assert condition(wf, "Ready")["status"] == "True"
    by_name = {a["name"]: a for a in status["activities"]}
    assert by_name["predict"]["options"]["stickyToWorker"] is True
    assert by_name["predict"]["options"]["retry"]["maxAttempts"] == 3
    assert "batch" in status["inputSchema"]["properties"]
    assert status["observedGeneration"] == wf["metadata"]["generation"]
    table = env.ns.run("get", "wf", "ml-inference").splitlines()
    assert table[1].split()[:2] == ["ml-inference", "2"]

    env.workers.stop_all()

    def not_ready() -> bool:
        ready = condition(env.ns.get("wf", "ml-inference"), "Ready")
        return ready is not None and ready["status"] == "False"

    eventually(not_ready, timeout=30, what="Ready=False once the worker is gone")
    assert env.ns.get("wf", "ml-inference")["status"]["pods"] == []


def test_a_run_takes_its_workflow_defaults(env: OperatorEnv) -> None:
    env.ns.apply(
        {
            "apiVersion": "tether.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "ml-inference"},
            "spec": {"sticky": "HARD", "scheduleTimeout": "10m"},
        }
    )
    env.workers.start(ML, "worker-a")
    env.ns.apply(workflow_run("defaults", "ml-inference", {"batch": [{"x": 1}]}))
    wait_for(env.ns, "defaults")
    code, view = env.operator.get(f"/v1/runs/{env.operator.namespace}.defaults")
    assert code == 200
    assert view["sticky"] == "HARD"
    wf = env.ns.get("wf", "ml-inference")
    assert "app.kubernetes.io/managed-by" not in wf["metadata"].get("labels", {})
    assert wf["spec"]["sticky"] == "HARD"


def test_a_run_waits_pending_until_a_worker_registers_its_workflow(
    env: OperatorEnv,
) -> None:
    env.ns.apply(workflow_run("early", "ml-inference", {"batch": [{"x": 3}]}))
    run = eventually_phase(env.ns, "early", "Pending")
    accepted = condition(run, "Accepted")
    assert accepted is not None
    # No Workflow yet and no worker: the run says so (a worker's registration makes one).
    assert (accepted["status"], accepted["reason"]) == ("False", "WorkflowNotFound")
    assert "ml-inference" in accepted["message"]
    assert condition(run, "Succeeded")["status"] == "Unknown"
    env.workers.start(ML, "late-worker")
    run = wait_for(env.ns, "early")
    assert run["status"]["result"][0]["y"] == 7
    assert condition(run, "Accepted")["status"] == "True"


def test_bad_input_fails_the_run_naming_the_field_and_the_operator_keeps_going(
    env: OperatorEnv,
) -> None:
    env.workers.start(ML, "worker-a")
    env.ns.apply(workflow_run("typo", "ml-inference", {"batch": "not a list"}))
    run = wait_for(env.ns, "typo", "Failed")
    failed = condition(run, "Failed")
    assert failed is not None
    assert failed["reason"] == "InvalidInput"
    assert "spec.input" in failed["message"]
    assert "batch" in failed["message"]
    assert run["status"]["phase"] == "Failed"
    assert "InvalidInput" in events_of(env.ns, "typo")
    env.ns.apply(workflow_run("fine", "ml-inference", {"batch": [{"x": 0}]}))
    assert wait_for(env.ns, "fine")["status"]["phase"] == "Succeeded"
    assert env.operator.process is not None
    assert env.operator.process.poll() is None


BAD_INPUTS = {
    "missing": ({}, "batch"),
    "unknown-parameter": ({"batch": [{"x": 1}], "bacth": []}, "bacth"),
    "wrong-type": ({"batch": {"x": 1}}, "batch"),
    "wrong-item": ({"batch": [1, 2]}, "batch"),
    "single-argument": ("one item", "batch"),
    "null-item": ({"batch": [None]}, "batch"),
}
"""Inputs the CRD's schema lets through (spec.input is any JSON) but the workflow's
parameters refuse: only the operator can see them."""


def test_inputs_only_the_operator_can_check_fail_at_once_naming_the_field(
    env: OperatorEnv,
) -> None:
    env.workers.start(ML, "worker-a")
    eventually(
        lambda: env.ns.jsonpath("wf", "ml-inference", "{.status.inputSchema}"),
        what="the Workflow's input schema",
    )
    env.ns.apply(
        *(workflow_run(name, "ml-inference", bad) for name, (bad, _) in BAD_INPUTS.items())
    )
    for name, (_, parameter) in BAD_INPUTS.items():
        run = wait_for(env.ns, name, "Failed", timeout=30)
        failed = condition(run, "Failed")
        assert failed is not None
        assert failed["reason"] == "InvalidInput", (name, failed)
        assert failed["message"].startswith("spec.input"), (name, failed["message"])
        assert parameter in failed["message"], (name, failed["message"])
        assert not run["status"].get("activities"), f"{name}: nothing may run on bad input"


def test_deleting_a_run_cancels_it_and_stops_its_tasks(env: OperatorEnv) -> None:
    env.workers.start(STEPS, "worker-a")
    env.ns.apply(workflow_run("long", "steps", {"count": 3, "seconds": 30}))
    eventually_phase(env.ns, "long", "Running")

    def running() -> bool:
        code, workers = env.operator.get("/v1/workers")
        return code == 200 and any(w["running"] for w in workers["workers"])

    eventually(running, what="the first activity running")
    env.ns.run("delete", "wfr", "long", "--wait=true")
    eventually(lambda: not running(), timeout=20, what="the activity stopped")
    code, _ = env.operator.get(f"/v1/runs/{env.operator.namespace}.long")
    assert code == 404
    assert "deleted: cancelling the run" in env.operator.log()
    eventually(
        lambda: not env.ns.list("configmaps", "tether.dev/run=long"),
        what="the run's history garbage-collected",
    )


def test_ttl_seconds_after_finished_deletes_the_finished_run(env: OperatorEnv) -> None:
    env.workers.start(ML, "worker-a")
    env.ns.apply(
        workflow_run("brief", "ml-inference", {"batch": [{"x": 1}]}, ttlSecondsAfterFinished=2),
        workflow_run("kept", "ml-inference", {"batch": [{"x": 1}]}, ttlSecondsAfterFinished=8),
    )
    wait_for(env.ns, "brief")
    wait_for(env.ns, "kept")
    # The deadline comes from status.completionTime: a restart does not lose it.
    env.operator.stop(signal.SIGKILL)
    env.operator.start()
    eventually(lambda: not env.ns.list("wfr"), timeout=40, what="both runs deleted by their TTL")


def test_the_operator_killed_mid_run_finishes_the_run_with_no_step_run_twice(
    env: OperatorEnv, tmp_path: Path
) -> None:
    count = 12
    run, executions = run_across_an_operator_kill(
        env, tmp_path / "ledger.txt", "durable", "steps", {"count": count, "seconds": 0.4}
    )
    status = run["status"]
    assert status["result"] == {"count": count, "sum": sum(i * i for i in range(count))}
    assert status["progress"] == f"{count}/{count}"
    assert [a["seq"] for a in status["activities"]] == list(range(1, count + 1))
    # A step whose completion was in flight at the kill may run again; none completed before.
    assert sorted(set(executions)) == list(range(count))
    assert len(executions) <= count + 1, executions
    assert env.operator.stop(signal.SIGTERM, timeout=20) == 0


def test_a_large_result_is_not_copied_into_the_status(env: OperatorEnv) -> None:
    env.workers.start(STEPS, "worker-a")
    env.ns.apply(workflow_run("big", "large-result", {"size": 100_000}))
    run = wait_for(env.ns, "big")
    assert "result" not in run["status"], run["status"]

    def stored() -> dict | None:
        ref = env.ns.get("wfr", "big")["status"].get("resultRef") or {}
        return ref if ref.get("configMap") else None

    try:
        ref = eventually(stored, what="status.resultRef.configMap")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\noperator log:\n{env.operator.log()[-3000:]}") from None
    assert ref["bytes"] == 100_002, ref
    config_map = env.ns.get("configmap", ref["configMap"])
    owner = config_map["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"]) == ("WorkflowRun", "big")
    whole = json.dumps(env.ns.get("wfr", "big"))
    assert len(whole) < 10_000, whole


def test_a_worker_killed_mid_run_is_told_in_the_runs_events(env: OperatorEnv) -> None:
    workers = {name: env.workers.start(STEPS, name) for name in ("worker-a", "worker-b")}
    env.ns.apply(workflow_run("lossy", "steps", {"count": 4, "seconds": 1.5}))

    def busy_worker() -> str | None:
        code, listed = env.operator.get("/v1/workers")
        busy = [w["worker_id"] for w in listed["workers"] if w["running"]] if code == 200 else []
        return busy[0] if busy else None

    victim = eventually(busy_worker, what="a worker running a step")
    workers[victim].send_signal(signal.SIGKILL)
    run = wait_for(env.ns, "lossy", timeout=120)
    assert run["status"]["result"] == {"count": 4, "sum": 0 + 1 + 4 + 9}
    retried = [a for a in run["status"]["activities"] if a["attempt"] > 1]
    assert retried
    assert "WorkerLost" in events_of(env.ns, "lossy")
    assert "WorkerLost" in env.ns.run("describe", "wfr", "lossy")
