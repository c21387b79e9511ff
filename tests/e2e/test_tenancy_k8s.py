"""A namespace is a trust boundary, on a Helm install serving two tenants' namespaces.

Both namespaces define workflow `xns` (testdata/tenant.py, whose result names the
namespace and pod that ran its workflow code and its activity):

- a run in tenant-b, while only tenant-a has a pool serving `xns`, stays Pending and
  says no worker of its namespace registered the workflow; it never runs on tenant-a's
  pod (before the fix it Succeeded there, with tenant-a's code);
- once tenant-b has its own pool, it runs there; then many runs in both namespaces each
  run wholly on their own namespace's pods;
- tenant-a's pod, with its own token, cannot register for tenant-b, act as tenant-b's
  worker, nor complete tenant-b's task.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, Obj, eventually
from tests.e2e.scenario import Pool, Run, run, serve, workflow
from tests.e2e.test_auth_k8s import assert_forbidden, call, calls_from

pytestmark = pytest.mark.timeout(600)

POOL = "xns"
RUNS_EACH = 8


WORKFLOW: Obj = workflow("xns")
"""`xns` with no pool of its own: any worker of the namespace that registered it."""


def start(ns: Kube, seconds: float = 0.0) -> Run:
    return run(ns, "xns", input={"tag": f"t{uuid.uuid4().hex[:8]}", "seconds": seconds})


def where(run: Run) -> dict[str, Any]:
    """Where the run's workflow code and its activity ran (`namespace/pod`), by its result."""
    value = run.result
    assert isinstance(value, dict), value
    return value


@dataclass
class Tenants:
    a: Kube
    b: Kube
    pod_a: str


@pytest.fixture(scope="module")
def tenants(tether: Install) -> Tenants:
    a, b = tether.workloads["tenant-a"], tether.workloads["tenant-b"]
    pool_a = serve(a, POOL, "tenant.py", WORKFLOW)
    b.apply(WORKFLOW)
    return Tenants(a=a, b=b, pod_a=pool_a.ready_pod())


def test_a_run_waits_for_its_own_namespaces_worker_and_never_crosses(tenants: Tenants) -> None:
    a, b = tenants.a, tenants.b
    waiting = start(b)

    def pending_with_reason() -> Obj | None:
        status = waiting.status
        said = [c.get("message", "") for c in status.get("conditions", [])]
        return status if status.get("phase") == "Pending" and any(said) else None

    status = eventually(
        pending_with_reason, timeout=60, what=f"{waiting.name} Pending with a reason"
    )
    # Long enough for a crossing run to have finished on tenant-a's ready pod (~1 s).
    assert start(a).wait(timeout=60).phase == "Succeeded"
    assert waiting.phase == "Pending", status
    assert not b.jsonpath("wfr", waiting.name, "{.status.result}")

    serve(b, POOL, "tenant.py", WORKFLOW)
    assert waiting.wait(timeout=180).phase == "Succeeded"
    got = where(waiting)
    assert got["workflow"].startswith(f"{b.namespace}/"), got
    assert got["activity"].startswith(f"{b.namespace}/"), got


def test_many_runs_of_one_workflow_name_each_run_in_their_own_namespace(
    tenants: Tenants,
) -> None:
    Pool(tenants.b, POOL).ready_pod()
    runs = [start(ns) for _ in range(RUNS_EACH) for ns in (tenants.a, tenants.b)]
    for each in runs:
        assert each.wait(timeout=180).phase == "Succeeded"
    for each in runs:
        got = where(each)
        for part in ("workflow", "activity"):
            assert got[part].startswith(f"{each.ns.namespace}/"), (
                f"{each.ns.namespace}/{each.name}: {got}"
            )


def test_a_pod_cannot_register_poll_or_report_for_another_namespace(tenants: Tenants) -> None:
    a, b, pod_a = tenants.a, tenants.b, tenants.pod_a
    pod_b = Pool(b, POOL).ready_pod()
    claim_b = {
        "worker_id": pod_a,
        "pod": pod_a,
        "pool": f"{a.namespace}.{POOL}",
        "incarnation": "claims-b",
        "namespace": b.namespace,
    }
    b_pool = {**claim_b, "namespace": "", "pool": f"{b.namespace}.{POOL}"}
    held = start(b, seconds=12)

    def running() -> dict[str, Any] | None:
        return next((x for x in held.activities if x["state"] == "Running" and x.get("pod")), None)

    activity = eventually(
        running, timeout=90, what=f"{held.name}'s activity running on tenant-b's pod"
    )
    assert activity["pod"] == pod_b
    task_id = f"{b.namespace}.{held.name}/{activity['seq']}/{activity['attempt']}"
    forged = {"task_id": task_id, "ok": True, "result": "forged"}
    answers = calls_from(
        a,
        pod_a,
        call("POST", "/v1/workers", body=claim_b),
        call("POST", "/v1/workers", body=b_pool),
        call("POST", f"/v1/workers/{pod_b}/poll", body={"max_tasks": 1, "wait": 0}),
        call("POST", f"/v1/tasks/{task_id}/complete", body=forged, worker=pod_b),
        call("POST", f"/v1/tasks/{task_id}/complete", body=forged, worker=pod_a),
        call("POST", f"/v1/workers/{pod_a}/report", body={"completions": [forged]}),
    )
    assert_forbidden(answers)
    assert answers[0][1]["field"] == "namespace"
    assert f"may not register for namespace {b.namespace!r}" in answers[0][1]["message"]
    # tenant-b's run is untouched: its real attempt's result, nothing retried.
    assert held.wait(timeout=120).phase == "Succeeded"
    assert where(held)["activity"] == f"{b.namespace}/{pod_b}"
    attempts = [x["attempt"] for x in held.activities]
    assert attempts == [1], "nothing was retried"
