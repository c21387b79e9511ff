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

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import IMAGE, Install
from tests.e2e.kube import Obj, eventually, running_and_ready
from tests.e2e.scenario import Pool, Run, run

pytestmark = pytest.mark.timeout(600)

POOL = "sticky-soft-hard"
MANIFEST = Path(__file__).resolve().parents[2] / "examples" / "k8s" / f"{POOL}.yaml"
HOLD_SECONDS = 6.0
"""How long the held step runs: well inside the worker's shutdown grace (10 s)."""


def ready_pods(pool: Pool) -> list[Obj]:
    """Its pods that run and are ready."""
    return [p for p in pool.pods() if running_and_ready(p)]


@pytest.fixture(scope="module")
def pool(tether: Install) -> Pool:
    """The example's WorkerPool (two pods) and Workflow, applied; each run waits for
    both pods ready."""
    ns = tether.workloads["runs"]
    ns.apply(MANIFEST.read_text().replace("image: tether:dev", f"image: {IMAGE}"))
    return Pool(ns, POOL)


def start(pool: Pool, strategy: str) -> Run:
    """A run with one `strategy` session of three steps; step 1 is held."""
    pool.ready(2, timeout=180)
    given = {"strategies": [strategy], "steps": 3, "hold_at": 1, "hold_seconds": HOLD_SECONDS}
    return run(pool.ns, POOL, input=given)


def held_step(run: Run) -> dict[str, Any]:
    """The held step's activity record, once it runs."""

    def running() -> dict[str, Any] | None:
        acts = run.activities
        held = [a for a in acts if a["state"] == "Running" and len(acts) == 2]
        return held[0] if held else None

    found: dict[str, Any] = eventually(running, timeout=120, what=f"step 1 of {run.name} running")
    return found


def result(run: Run) -> list[dict[str, Any]]:
    """The steps of the run's one session, as its result lists them."""
    steps: dict[str, list[dict[str, Any]]] = run.result
    ((_, out),) = steps.items()
    return out


def test_soft_session_moves_on_after_its_pod_is_deleted_mid_step(
    pool: Pool, tether: Install
) -> None:
    breaks = tether.metric("tether_sessions_broken_total", reason="PodDeleted")
    cold_rebinds = tether.metric("tether_session_rebinds_total", cold_start="true")
    run = start(pool, "SOFT")
    step = held_step(run)
    pod, node = step["pod"], step["node"]
    same_node = [p for p in ready_pods(pool) if p["metadata"]["name"] != pod]
    same_node = [p for p in same_node if p["spec"].get("nodeName") == node]
    pool.kill(pod)

    broken = eventually(
        lambda: [s for s in run.status.get("sessions", []) if s.get("state") == "Broken"],
        timeout=10,
        interval=0.2,
        what="the session Broken while the step still runs",
    )
    assert broken[0]["reason"] == "PodDeleted", broken
    assert broken[0]["brokenAt"], broken

    assert run.wait(timeout=120).phase == "Succeeded"
    steps = result(run)
    assert (steps[1]["pod"], steps[1]["attempt"]) == (pod, 1), "finished where it ran, once"
    assert steps[2]["pod"] != pod
    assert steps[2]["cold_start"] is True
    assert steps[2]["warm"] is False
    if same_node:
        assert steps[2]["node"] == node, "a pod on the same node was ready: SOFT prefers it"
    assert [a["attempt"] for a in run.activities] == [1, 1, 1], "nothing ran twice"
    (session,) = run.status["sessions"]
    assert session["state"] == "Closed"
    first, second = session["bindings"]
    assert (first["pod"], first["node"], first["reason"]) == (pod, node, "PodDeleted")
    assert first["endedAt"]
    assert second["pod"] == steps[2]["pod"]
    # The new pod's worker counted the session's arrival as a cold start (a cache miss).
    cold = pool.metric(second["pod"], "tether_worker_session_activities_total", cold_start="true")
    assert cold >= 1
    # The operator's metrics saw the break and the cold rebind.
    assert tether.metric("tether_sessions_broken_total", reason="PodDeleted") == breaks + 1
    assert tether.metric("tether_session_rebinds_total", cold_start="true") == cold_rebinds + 1


def test_hard_run_fails_when_its_pod_is_deleted(pool: Pool) -> None:
    run = start(pool, "HARD")
    pod = held_step(run)["pod"]
    pool.kill(pod)
    assert run.wait(timeout=60).phase == "Failed"
    error = run.status["error"]
    assert error["reason"] == "SessionBroken", error
    assert f"pod {pod}" in error["message"], error
    assert "was deleted (PodDeleted)" in error["message"], error


def test_hard_session_survives_a_container_restart(pool: Pool) -> None:
    ns = pool.ns
    run = start(pool, "HARD")
    pod = held_step(run)["pod"]
    restarts = ns.get("pod", pod)["status"]["containerStatuses"][0].get("restartCount", 0)
    ns.run("exec", pod, "-c", "worker", "--", "sh", "-c", "kill 1")
    assert run.wait(timeout=120).phase == "Succeeded"
    steps = result(run)
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
    (session,) = run.status["sessions"]
    assert [b["pod"] for b in session["bindings"]] == [pod, pod]
    assert session["bindings"][0]["reason"] == "ProcessExited"


def test_scaling_down_past_a_busy_pod_drains_it_and_its_step_runs_once(pool: Pool) -> None:
    """Both pods hold a step; `kubectl scale` to one pod removes a busy one: its step
    finishes there (the SIGTERM drain), is not retried, and its SOFT session moves on."""
    runs = [start(pool, "SOFT"), start(pool, "SOFT")]
    steps = {run.name: held_step(run) for run in runs}
    assert len({step["pod"] for step in steps.values()}) == 2, (
        "a new session takes the pod with fewer"
    )
    try:
        pool.ns.run("scale", "wp", POOL, "--replicas=1")
        for run in runs:
            assert run.wait(timeout=120).phase == "Succeeded"
    finally:
        pool.ns.run("scale", "wp", POOL, "--replicas=2")
    moved = 0
    for run in runs:
        held = result(run)[1]
        assert (held["pod"], held["attempt"]) == (steps[run.name]["pod"], 1), (
            "finished where it ran"
        )
        assert [a["attempt"] for a in run.activities] == [1, 1, 1]
        (session,) = run.status["sessions"]
        reasons = [b.get("reason") for b in session["bindings"]]
        if "ScaledDown" in reasons:
            moved += 1
            assert result(run)[2]["pod"] != held["pod"]
            assert result(run)[2]["cold_start"] is True
    assert moved == 1, "exactly the scaled-away pod's session moved on"
