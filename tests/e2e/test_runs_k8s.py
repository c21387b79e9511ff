"""WorkflowRuns on a Helm-installed operator, driven with kubectl: a run applied before
its pool waits and then runs, `kubectl delete wfr` cancels a run, `kubectl scale wp`
and demand scale a pool, and a run survives its operator pod being deleted twice
without any completed activity running again.

The workflow (testdata/steps.py) is mounted from a ConfigMap into the stock image and
prints a line per step it starts and completes; executions are counted in the worker
pods' logs, not in the run's status.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from typing import Any

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, Obj, eventually, running_and_ready
from tests.e2e.testdata_pools import script_pool, start_steps

pytestmark = pytest.mark.timeout(600)


def served(name: str, **spec: Any) -> list[Obj]:
    """A WorkerPool ``name`` serving testdata/steps.py as workflow ``name``, its
    Workflow, and the file's ConfigMap (shared by these pools)."""
    return script_pool(name, "steps.py", workflow=name, configmap="steps-workflow", **spec)


def start(ns: Kube, workflow: str, count: int, seconds: float = 0.0) -> tuple[str, str]:
    """Create a run of ``workflow`` with ``count`` steps; its name and its tag (which
    marks its steps' lines in the logs)."""
    return start_steps(ns, workflow, count, seconds)


def done(ns: Kube, run: str) -> int:
    """How many of the run's scheduled activities are done (status.progress)."""
    progress = ns.jsonpath("wfr", run, "{.status.progress}") or "0/0"
    return int(progress.split("/")[0])


def pool_pods(ns: Kube, pool: str) -> list[Obj]:
    return ns.pods(f"tether.dev/pool={pool}")


def executions(ns: Kube, pool: str, tag: str, what: str = "executed") -> Counter[int]:
    """How many times each step of the run tagged ``tag`` was ``what`` (started or
    executed to completion), over the logs of the pool's pods."""
    pattern = re.compile(rf"tether-e2e {what} tag={tag} step=(\d+)")
    counts: Counter[int] = Counter()
    for pod in ns.list("pods", f"tether.dev/pool={pool}"):
        counts.update(int(m) for m in pattern.findall(ns.logs(pod["metadata"]["name"])))
    return counts


def result(ns: Kube, run: str) -> Any:
    return json.loads(ns.jsonpath("wfr", run, "{.status.result}"))


@pytest.fixture(scope="module")
def runs(tether: Install) -> Kube:
    """The namespace of these tests, with the `steps` pool (one pod) ready."""
    ns = tether.workloads["runs"]
    ns.apply(*served("steps", replicas=1))
    eventually(
        lambda: [p for p in pool_pods(ns, "steps") if running_and_ready(p)],
        timeout=120,
        what="the steps pool's pod to be ready",
    )
    return ns


def test_run_applied_before_its_pool_waits_then_runs(runs: Kube) -> None:
    run, _ = start(runs, "late", count=2)

    def pending_with_reason() -> Obj | None:
        status = runs.get("wfr", run).get("status", {})
        said = [c for c in status.get("conditions", []) if c.get("message")]
        return status if status.get("phase") == "Pending" and said else None

    status = eventually(pending_with_reason, what=f"{run} to be Pending with a condition")
    time.sleep(3)
    assert runs.jsonpath("wfr", run, "{.status.phase}") == "Pending", status

    runs.apply(*served("late", replicas=1))
    runs.wait("wfr", run, "Succeeded", timeout=120)
    assert result(runs, run) == {"steps": 2, "total": 1}
    runs.delete("wp", "late")


def test_kubectl_delete_wfr_cancels_the_run(runs: Kube) -> None:
    run, tag = start(runs, "steps", count=40, seconds=0.5)
    uid = runs.jsonpath("wfr", run, "{.metadata.uid}")
    eventually(lambda: done(runs, run) >= 2, what=f"{run} to complete two steps")

    runs.run("delete", "wfr", run, "--timeout=60s")
    assert not runs.exists("wfr", run)
    time.sleep(2)  # the step running at deletion may end
    started = sum(executions(runs, "steps", tag, "started").values())
    time.sleep(4)
    assert sum(executions(runs, "steps", tag, "started").values()) == started, (
        "no step starts after the run is deleted"
    )
    assert started < 40

    def owned() -> list[str]:
        return [
            cm["metadata"]["name"]
            for cm in runs.list("configmaps")
            if any(o.get("uid") == uid for o in cm["metadata"].get("ownerReferences", []))
        ]

    eventually(lambda: not owned(), what=f"the objects {run} owned to be garbage-collected")


def test_run_survives_its_operator_pod_deleted_twice(tether: Install, runs: Kube) -> None:
    run, tag = start(runs, "steps", count=30, seconds=0.4)
    threshold = 0
    for kill in (1, 2):
        threshold += 5
        try:
            eventually(
                lambda t=threshold: done(runs, run) >= t,
                timeout=120,
                what=f"{run} to complete {threshold} steps",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{runs.run_post_mortem(run)}") from None
        phase = runs.jsonpath("wfr", run, "{.status.phase}")
        assert phase == "Running", f"the run is {phase} before deletion {kill}: slow its steps"
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
    runs.wait("wfr", run, "Succeeded", timeout=240)
    assert result(runs, run) == {"steps": 30, "total": sum(range(30))}
    counts = executions(runs, "steps", tag)
    assert sorted(counts) == list(range(30)), (
        f"steps that completed, by the worker logs: {sorted(counts)} (a pod deleted mid-run "
        "takes its log with it)"
    )
    twice = {step: n for step, n in counts.items() if n > 1}
    assert not twice, f"completed steps ran again after an operator restart: {twice}"


def test_kubectl_scale_changes_the_pod_count(runs: Kube) -> None:
    runs.run("scale", "wp/steps", "--replicas=2")
    eventually(
        lambda: len([p for p in pool_pods(runs, "steps") if running_and_ready(p)]) == 2,
        timeout=120,
        what="two ready steps pods",
    )
    eventually(
        lambda: runs.jsonpath("wp", "steps", "{.status.replicas}") == "2",
        what="the pool's status to count two pods",
    )
    runs.run("scale", "wp/steps", "--replicas=1")
    eventually(lambda: len(pool_pods(runs, "steps")) == 1, timeout=90, what="one steps pod")


def test_autoscale_from_zero_on_demand_and_back(runs: Kube) -> None:
    runs.apply(
        *served("auto", autoscale=True, replicas=0, minReplicas=0, maxReplicas=2, idleTimeout="5s")
    )
    time.sleep(3)
    assert pool_pods(runs, "auto") == [], "no demand, no pod"

    run, _ = start(runs, "auto", count=3)
    eventually(lambda: pool_pods(runs, "auto"), timeout=60, what="a pod for the demand")
    runs.wait("wfr", run, "Succeeded", timeout=120)
    assert result(runs, run) == {"steps": 3, "total": 3}
    eventually(
        lambda: not pool_pods(runs, "auto"),
        timeout=120,
        what="the idle pool to scale back to zero",
    )
    assert runs.jsonpath("wp", "auto", "{.spec.replicas}") == "0"
