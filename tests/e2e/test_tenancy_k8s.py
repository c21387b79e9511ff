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

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Install
from tests.e2e.kube import API_VERSION, Kube, Obj, eventually, running_and_ready
from tests.e2e.test_auth_k8s import assert_forbidden, call, calls_from
from tests.e2e.testdata_pools import script_pool

pytestmark = pytest.mark.timeout(600)

POOL = "xns"
RUNS_EACH = 8


WORKFLOW: Obj = {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": {"name": "xns"}}
"""`xns` with no pool of its own: any worker of the namespace that registered it."""


def start(ns: Kube, seconds: float = 0.0) -> str:
    tag = f"t{uuid.uuid4().hex[:8]}"
    run = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"generateName": "xns-"},
        "spec": {"workflowRef": {"name": "xns"}, "input": {"tag": tag, "seconds": seconds}},
    }
    return ns.create(yaml.safe_dump(run))


def result(ns: Kube, run: str) -> dict[str, Any]:
    value = json.loads(ns.jsonpath("wfr", run, "{.status.result}"))
    assert isinstance(value, dict), value
    return value


def ready_pod(ns: Kube) -> str:
    def ready() -> list[str]:
        pods = ns.pods(f"tether.dev/pool={POOL}")
        return [str(p["metadata"]["name"]) for p in pods if running_and_ready(p)]

    (pod,) = eventually(ready, timeout=120, what=f"the {POOL} pod in {ns.namespace} to be ready")
    return str(pod)


@dataclass
class Tenants:
    a: Kube
    b: Kube
    pod_a: str


@pytest.fixture(scope="module")
def tenants(tether: Install) -> Tenants:
    a, b = tether.workloads["tenant-a"], tether.workloads["tenant-b"]
    a.apply(*script_pool(POOL, "tenant.py"), WORKFLOW)
    b.apply(WORKFLOW)
    return Tenants(a=a, b=b, pod_a=ready_pod(a))


def test_a_run_waits_for_its_own_namespaces_worker_and_never_crosses(tenants: Tenants) -> None:
    a, b = tenants.a, tenants.b
    waiting = start(b)

    def pending_with_reason() -> Obj | None:
        status = b.get("wfr", waiting).get("status", {})
        said = [c.get("message", "") for c in status.get("conditions", [])]
        return status if status.get("phase") == "Pending" and any(said) else None

    status = eventually(pending_with_reason, timeout=60, what=f"{waiting} Pending with a reason")
    # Long enough for a crossing run to have finished on tenant-a's ready pod (~1 s).
    a.wait("wfr", start(a), "Succeeded", timeout=60)
    assert b.jsonpath("wfr", waiting, "{.status.phase}") == "Pending", status
    assert not b.jsonpath("wfr", waiting, "{.status.result}")

    b.apply(*script_pool(POOL, "tenant.py"))
    b.wait("wfr", waiting, "Succeeded", timeout=180)
    got = result(b, waiting)
    assert got["workflow"].startswith(f"{b.namespace}/"), got
    assert got["activity"].startswith(f"{b.namespace}/"), got


def test_many_runs_of_one_workflow_name_each_run_in_their_own_namespace(
    tenants: Tenants,
) -> None:
    ready_pod(tenants.b)
    runs = [(ns, start(ns)) for _ in range(RUNS_EACH) for ns in (tenants.a, tenants.b)]
    for ns, run in runs:
        ns.wait("wfr", run, "Succeeded", timeout=180)
    for ns, run in runs:
        got = result(ns, run)
        for part in ("workflow", "activity"):
            assert got[part].startswith(f"{ns.namespace}/"), f"{ns.namespace}/{run}: {got}"


def test_a_pod_cannot_register_poll_or_report_for_another_namespace(tenants: Tenants) -> None:
    a, b, pod_a = tenants.a, tenants.b, tenants.pod_a
    pod_b = ready_pod(b)
    claim_b = {
        "worker_id": pod_a,
        "pod": pod_a,
        "pool": f"{a.namespace}.{POOL}",
        "incarnation": "claims-b",
        "namespace": b.namespace,
    }
    b_pool = {**claim_b, "namespace": "", "pool": f"{b.namespace}.{POOL}"}
    run = start(b, seconds=12)

    def running() -> dict[str, Any] | None:
        acts = b.get("wfr", run).get("status", {}).get("activities") or []
        return next((x for x in acts if x["state"] == "Running" and x.get("pod")), None)

    activity = eventually(running, timeout=90, what=f"{run}'s activity running on tenant-b's pod")
    assert activity["pod"] == pod_b
    task_id = f"{b.namespace}.{run}/{activity['seq']}/{activity['attempt']}"
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
    b.wait("wfr", run, "Succeeded", timeout=120)
    assert result(b, run)["activity"] == f"{b.namespace}/{pod_b}"
    attempts = [x["attempt"] for x in b.get("wfr", run)["status"]["activities"]]
    assert attempts == [1], "nothing was retried"
