"""WorkflowRuns on a Helm-installed operator, driven with kubectl: a run applied before
its pool waits and then runs, `kubectl delete wfr` cancels a run, `kubectl scale wp`
and demand scale a pool, and a run survives its operator pod being deleted twice
without any completed activity running again.

The workflow (testdata/steps.py) is mounted from a ConfigMap into the stock image and
prints a line per step it starts and completes; executions are counted in the worker
pods' logs, not in the run's status.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, Obj, eventually, running_and_ready
from tests.e2e.scenario import Pool, serve, steps

pytestmark = pytest.mark.timeout(600)


def serve_steps(ns: Kube, name: str, **spec: Any) -> Pool:
    """A pool `name` serving testdata/steps.py as workflow `name` (the file's ConfigMap
    is shared by these pools)."""
    return serve(ns, name, "steps.py", configmap="steps-workflow", **spec)


@pytest.fixture(scope="module")
def runs(tether: Install) -> Kube:
    """The namespace of these tests, with the `steps` pool (one pod) ready."""
    ns = tether.workloads["runs"]
    serve_steps(ns, "steps", replicas=1).ready(1)
    return ns


def test_run_applied_before_its_pool_waits_then_runs(runs: Kube) -> None:
    run = steps(runs, "late", count=2)

    def pending_with_reason() -> Obj | None:
        status = runs.get("wfr", run.name).get("status", {})
        said = [c for c in status.get("conditions", []) if c.get("message")]
        return status if status.get("phase") == "Pending" and said else None

    status = eventually(pending_with_reason, what=f"{run.name} to be Pending with a condition")
    time.sleep(3)
    assert run.phase == "Pending", status

    late = serve_steps(runs, "late", replicas=1)
    assert run.wait(timeout=120).phase == "Succeeded"
    assert run.result == {"steps": 2, "total": 1}
    late.remove()


def test_kubectl_delete_wfr_cancels_the_run(runs: Kube) -> None:
    pool = Pool(runs, "steps")
    run = steps(runs, "steps", count=40, seconds=0.5)
    uid = runs.jsonpath("wfr", run.name, "{.metadata.uid}")
    eventually(lambda: run.done >= 2, what=f"{run.name} to complete two steps")

    runs.run("delete", "wfr", run.name, "--timeout=60s")
    assert not runs.exists("wfr", run.name)
    time.sleep(2)  # the step running at deletion may end
    started = sum(pool.executions(run, "started").values())
    time.sleep(4)
    assert sum(pool.executions(run, "started").values()) == started, (
        "no step starts after the run is deleted"
    )
    assert started < 40

    def owned() -> list[str]:
        return [
            cm["metadata"]["name"]
            for cm in runs.list("configmaps")
            if any(o.get("uid") == uid for o in cm["metadata"].get("ownerReferences", []))
        ]

    eventually(lambda: not owned(), what=f"the objects {run.name} owned to be garbage-collected")


def test_run_survives_its_operator_pod_deleted_twice(tether: Install, runs: Kube) -> None:
    pool = Pool(runs, "steps")
    run = steps(runs, "steps", count=30, seconds=0.4)
    threshold = 0
    for kill in (1, 2):
        threshold += 5
        try:
            eventually(
                lambda t=threshold: run.done >= t,
                timeout=120,
                what=f"{run.name} to complete {threshold} steps",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{runs.run_post_mortem(run.name)}") from None
        assert run.phase == "Running", f"the run is {run.phase} before deletion {kill}"
        (operator,) = eventually(tether.leader_pods, what="the leading operator pod")
        old = operator["metadata"]["name"]
        tether.system.run("delete", "pod", old)
        eventually(
            lambda o=old: [
                p
                for p in tether.leader_pods()
                if p["metadata"]["name"] != o and running_and_ready(p)
            ],
            timeout=120,
            what=f"a new leading operator pod after deletion {kill}",
        )
    assert run.wait().phase == "Succeeded"
    assert run.result == {"steps": 30, "total": sum(range(30))}
    counts = pool.executions(run)
    assert sorted(counts) == list(range(30)), (
        f"steps that completed, by the worker logs: {sorted(counts)} (a pod deleted mid-run "
        "takes its log with it)"
    )
    twice = {step: n for step, n in counts.items() if n > 1}
    assert not twice, f"completed steps ran again after an operator restart: {twice}"


def test_kubectl_scale_changes_the_pod_count(runs: Kube) -> None:
    pool = Pool(runs, "steps")
    runs.run("scale", "wp/steps", "--replicas=2")
    pool.ready(2)
    eventually(
        lambda: runs.jsonpath("wp", "steps", "{.status.replicas}") == "2",
        what="the pool's status to count two pods",
    )
    runs.run("scale", "wp/steps", "--replicas=1")
    eventually(lambda: len(pool.pods(terminating=True)) == 1, timeout=90, what="one steps pod")


def test_autoscale_from_zero_on_demand_and_back(runs: Kube) -> None:
    auto = serve_steps(
        runs, "auto", autoscale=True, replicas=0, minReplicas=0, maxReplicas=2, idleTimeout="5s"
    )
    time.sleep(3)
    assert auto.pods(terminating=True) == [], "no demand, no pod"

    run = steps(runs, "auto", count=3)
    eventually(auto.pods, timeout=60, what="a pod for the demand")
    assert run.wait(timeout=120).phase == "Succeeded"
    assert run.result == {"steps": 3, "total": 3}
    eventually(
        lambda: not auto.pods(terminating=True),
        timeout=120,
        what="the idle pool to scale back to zero",
    )
    assert runs.jsonpath("wp", "auto", "{.spec.replicas}") == "0"
