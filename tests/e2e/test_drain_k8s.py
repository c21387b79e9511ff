"""Graceful drain and sticky sessions on a Helm-installed operator, driven with kubectl.

The pool serves examples/sticky_soft_hard.py (the image's copy, as
examples/k8s/sticky-soft-hard.yaml does): a run's session holds its second step for a few
seconds, long enough to disturb the pod that runs it.

- `kubectl delete pod` mid-step: the step finishes on the terminating pod and runs once
  (the worker drains on SIGTERM); a SOFT session moves on to another pod (the same node
  when it has one) with `cold_start`, and the run succeeds; a HARD run fails with
  SessionBroken naming the pod and why.
- `kubectl exec POD -- kill 1` (a container restart keeps the pod): HARD waits for the
  same pod and succeeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import IMAGE, Install
from tests.e2e.kube import Kube, Obj, eventually, running_and_ready

pytestmark = pytest.mark.timeout(600)

POOL = "sticky-soft-hard"
MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "k8s" / f"{POOL}.yaml"
HOLD_SECONDS = 6.0
"""How long the held step runs: well inside the worker's shutdown grace (10 s)."""


def ready_pods(ns: Kube) -> list[Obj]:
    return [
        p
        for p in ns.pods(f"tether.dev/pool={POOL}")
        if running_and_ready(p) and not p["metadata"].get("deletionTimestamp")
    ]


@pytest.fixture(scope="module")
def ns(tether: Install) -> Kube:
    """The example's WorkerPool (two pods) and Workflow, ready."""
    ns = tether.workloads["runs"]
    ns.apply(MANIFEST.read_text().replace("image: tether:dev", f"image: {IMAGE}"))
    return ns


def start(ns: Kube, strategy: str) -> str:
    """A run with one `strategy` session of three steps; step 1 is held."""
    eventually(lambda: len(ready_pods(ns)) >= 2, timeout=180, what="two ready worker pods")
    run = {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowRun",
        "metadata": {"generateName": f"drain-{strategy.lower()}-"},
        "spec": {
            "workflowRef": {"name": POOL},
            "input": {
                "strategies": [strategy],
                "steps": 3,
                "hold_at": 1,
                "hold_seconds": HOLD_SECONDS,
            },
        },
    }
    return ns.create(yaml.safe_dump(run))


def status(ns: Kube, run: str) -> dict[str, Any]:
    return dict(ns.get("wfr", run).get("status") or {})


def held_step(ns: Kube, run: str) -> dict[str, Any]:
    """The held step's activity record, once it runs."""

    def running() -> dict[str, Any] | None:
        acts = status(ns, run).get("activities") or []
        held = [a for a in acts if a["state"] == "Running" and len(acts) == 2]
        return held[0] if held else None

    found: dict[str, Any] = eventually(running, timeout=120, what=f"step 1 of {run} running")
    return found


def result(ns: Kube, run: str) -> list[dict[str, Any]]:
    steps: dict[str, list[dict[str, Any]]] = json.loads(ns.jsonpath("wfr", run, "{.status.result}"))
    ((_, out),) = steps.items()
    return out


def test_soft_session_moves_on_after_its_pod_is_deleted_mid_step(ns: Kube) -> None:
    run = start(ns, "SOFT")
    step = held_step(ns, run)
    pod, node = step["pod"], step["node"]
    same_node = [p for p in ready_pods(ns) if p["metadata"]["name"] != pod]
    same_node = [p for p in same_node if p["spec"].get("nodeName") == node]
    ns.run("delete", "pod", pod, "--wait=false")

    broken = eventually(
        lambda: [s for s in status(ns, run).get("sessions", []) if s.get("state") == "Broken"],
        timeout=10,
        interval=0.2,
        what="the session Broken while the step still runs",
    )
    assert broken[0]["reason"] == "PodDeleted", broken
    assert broken[0]["brokenAt"], broken

    ns.wait("wfr", run, "Succeeded", timeout=120)
    steps = result(ns, run)
    assert (steps[1]["pod"], steps[1]["attempt"]) == (pod, 1), "finished where it ran, once"
    assert steps[2]["pod"] != pod
    assert steps[2]["cold_start"] is True
    assert steps[2]["warm"] is False
    if same_node:
        assert steps[2]["node"] == node, "a pod on the same node was ready: SOFT prefers it"
    acts = status(ns, run)["activities"]
    assert [a["attempt"] for a in acts] == [1, 1, 1], "nothing ran twice"
    (session,) = status(ns, run)["sessions"]
    assert session["state"] == "Closed"
    first, second = session["bindings"]
    assert (first["pod"], first["node"], first["reason"]) == (pod, node, "PodDeleted")
    assert first["endedAt"]
    assert second["pod"] == steps[2]["pod"]


def test_hard_run_fails_when_its_pod_is_deleted(ns: Kube) -> None:
    run = start(ns, "HARD")
    pod = held_step(ns, run)["pod"]
    ns.run("delete", "pod", pod, "--wait=false")
    ns.wait("wfr", run, "Failed", timeout=60)
    error = status(ns, run)["error"]
    assert error["reason"] == "SessionBroken", error
    assert f"pod {pod}" in error["message"], error
    assert "was deleted (PodDeleted)" in error["message"], error


def test_hard_session_survives_a_container_restart(ns: Kube) -> None:
    run = start(ns, "HARD")
    pod = held_step(ns, run)["pod"]
    restarts = ns.get("pod", pod)["status"]["containerStatuses"][0].get("restartCount", 0)
    ns.run("exec", pod, "-c", "worker", "--", "sh", "-c", "kill 1")
    ns.wait("wfr", run, "Succeeded", timeout=120)
    steps = result(ns, run)
    assert {s["pod"] for s in steps} == {pod}, "HARD never moves"
    assert steps[1]["attempt"] == 1, "the held step finished before the process exited"
    assert steps[2]["cold_start"] is True, "a new process: the session's cache is gone"
    eventually(
        lambda: (
            ns.get("pod", pod)["status"]["containerStatuses"][0].get("restartCount", 0) > restarts
        ),
        timeout=30,
        what=f"the restart of pod {pod}'s container in its status (restartCount)",
    )
    (session,) = status(ns, run)["sessions"]
    assert [b["pod"] for b in session["bindings"]] == [pod, pod]
    assert session["bindings"][0]["reason"] == "ProcessExited"


def test_scaling_down_past_a_busy_pod_drains_it_and_its_step_runs_once(ns: Kube) -> None:
    """Both pods hold a step; `kubectl scale` to one pod removes a busy one: its step
    finishes there (the SIGTERM drain), is not retried, and its SOFT session moves on."""
    runs = [start(ns, "SOFT"), start(ns, "SOFT")]
    steps = {run: held_step(ns, run) for run in runs}
    assert len({step["pod"] for step in steps.values()}) == 2, (
        "a new session takes the pod with fewer"
    )
    try:
        ns.run("scale", "wp", POOL, "--replicas=1")
        for run in runs:
            ns.wait("wfr", run, "Succeeded", timeout=120)
    finally:
        ns.run("scale", "wp", POOL, "--replicas=2")
    moved = 0
    for run in runs:
        held = result(ns, run)[1]
        assert (held["pod"], held["attempt"]) == (steps[run]["pod"], 1), "finished where it ran"
        assert [a["attempt"] for a in status(ns, run)["activities"]] == [1, 1, 1]
        (session,) = status(ns, run)["sessions"]
        reasons = [b.get("reason") for b in session["bindings"]]
        if "ScaledDown" in reasons:
            moved += 1
            assert result(ns, run)[2]["pod"] != held["pod"]
            assert result(ns, run)[2]["cold_start"] is True
    assert moved == 1, "exactly the scaled-away pod's session moved on"
