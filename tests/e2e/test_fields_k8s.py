"""Fields a user sets act as their descriptions say, on a Helm install driven with
kubectl: a Workflow's spec.retry is the retry policy of its activities where their code
sets none, a field the code sets wins, and editing the Workflow applies to later runs; a
WorkerPool's slots and sessionCapacity limit what its one pod holds at a time."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import API_VERSION, Kube, eventually
from tests.e2e.scenario import Run, run, serve, workflow

pytestmark = pytest.mark.timeout(600)

POOL = "flaky"


def attempts(ns: Kube, own: bool = False) -> int:
    """Start a run of `flaky`, wait for it to fail, and count its activity's attempts."""
    failing = run(ns, "flaky", input={"tag": f"t{uuid.uuid4().hex[:8]}", "own": own})
    assert failing.wait(timeout=120).phase == "Failed"
    (activity,) = failing.activities
    assert activity["state"] == "Failed", activity
    return int(activity["attempt"])


@pytest.fixture(scope="module")
def flaky(tether: Install) -> Kube:
    """The flaky pool, ready, and its Workflow, whose spec.retry is 2 attempts."""
    ns = tether.workloads["runs"]
    retry = {"maxAttempts": 2, "initialInterval": "100ms"}
    serve(ns, POOL, "flaky.py", workflow("flaky", POOL, retry=retry)).ready(1)
    return ns


def test_workflow_retry_is_the_default_policy_of_its_activities(flaky: Kube) -> None:
    assert attempts(flaky) == 2, "spec.retry.maxAttempts, where the code sets none"
    assert attempts(flaky, own=True) == 4, "the code's own retry_policy_max_attempts wins"


def test_editing_workflow_retry_applies_to_later_runs(flaky: Kube) -> None:
    flaky.run(
        "patch", "workflow", "flaky", "--type=merge", "-p", '{"spec":{"retry":{"maxAttempts":1}}}'
    )
    eventually(lambda: attempts(flaky) == 1, timeout=60, what="maxAttempts 1 to apply")
    removal = '[{"op": "remove", "path": "/spec/retry"}]'
    flaky.run("patch", "workflow", "flaky", "--type=json", "-p", removal)
    eventually(lambda: attempts(flaky) == 3, timeout=60, what="the built-in 3 attempts")


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans open at one moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    open_, most = 0, 0
    for _, step in edges:
        open_ += step
        most = max(most, open_)
    return most


def test_slots_and_session_capacity_limit_one_pod(tether: Install) -> None:
    """A one-pod pool with slots 2 and sessionCapacity 1: five plain runs hold at most two
    activities at a time, and three sticky runs hold their sessions one after another."""
    ns = tether.workloads["runs"]
    limits = serve(
        ns,
        "limits",
        "limits.py",
        workflow("limits-plain", "limits"),
        workflow("limits-sticky", "limits"),
        slots=2,
        sessionCapacity=1,
    ).ready(1, timeout=180)
    tag = uuid.uuid4().hex[:6]
    runs = {f"lp-{tag}-{i}": ("limits-plain", 1.5) for i in range(5)} | {
        f"ls-{tag}-{i}": ("limits-sticky", 1.0) for i in range(3)
    }
    # In one request, not a `run` each: all eight contend for the pod at once.
    ns.apply(
        *(
            {
                "apiVersion": API_VERSION,
                "kind": "WorkflowRun",
                "metadata": {"name": name},
                "spec": {"workflowRef": {"name": wf}, "input": {"seconds": seconds}},
            }
            for name, (wf, seconds) in runs.items()
        )
    )
    results = {}
    for name in runs:
        limited = Run(ns, name)
        assert limited.wait(timeout=180).phase == "Succeeded"
        results[name] = limited.status
    assert len({s["workerPod"] for s in results.values()}) == 1, "one pod ran everything"
    spans = [tuple(span) for s in results.values() for span in s["result"]]
    assert most_at_once(spans) == 2, "slots: 2 activities at a time on the pod, never 3"
    sessions = [
        (s["result"][0][0], s["result"][-1][1])
        for name, s in results.items()
        if name.startswith("ls-")
    ]
    assert most_at_once(sessions) == 1, "sessionCapacity: one open session at a time"
    ns.delete("wp", limits.name)
