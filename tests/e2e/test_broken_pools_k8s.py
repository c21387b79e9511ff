"""A WorkerPool Kubernetes refuses or cannot start: the operator neither spins nor hides
it (issue 15). Against the chart's operator on the e2e cluster.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, eventually
from tests.e2e.scenario import Pool, Run, run, serve
from tests.e2e.testdata_pools import script_pool

pytestmark = pytest.mark.timeout(300)

REFUSED = re.compile(
    r'^apiserver_request_total\{(?=[^}]*code="422")(?=[^}]*resource="pods")'
    r'(?=[^}]*verb="POST")[^}]*\} (\d+)',
    re.M,
)


def refused_pod_creates(kube: Kube) -> int:
    """Pod creations the API server has refused as invalid (422), all clients."""
    return sum(int(n) for n in REFUSED.findall(kube.run("get", "--raw", "/metrics")))


def test_a_pool_whose_pods_are_refused_backs_off_and_says_why_once(
    tether: Install, kube: Kube
) -> None:
    ns = tether.workloads["runs"]
    objects = script_pool("no-image", "steps.py")
    del objects[1]["spec"]["template"]["spec"]["containers"][0]["image"]
    before = refused_pod_creates(kube)
    ns.apply(*objects)
    failure = eventually(
        lambda: [
            c
            for c in ns.get("wp", "no-image").get("status", {}).get("conditions", [])
            if c["type"] == "ReplicaFailure" and c["status"] == "True"
        ],
        timeout=60,
        what="the pool's ReplicaFailure condition",
    )[0]
    assert "spec.containers[0].image" in failure["message"], failure
    time.sleep(20)
    tries = refused_pod_creates(kube) - before
    # Backoff of 1, 2, 4, 8 ... s: about five tries in the first 20 s (was ~1,800).
    assert 1 <= tries <= 8, f"{tries} refused pod creations in ~20 s"
    events = [
        e
        for e in ns.list("events")
        if e["involvedObject"]["name"] == "no-image" and e["reason"] == "FailedCreate"
    ]
    assert len(events) == 1, [e["message"] for e in events]
    assert "spec.containers[0].image" in events[0]["message"]
    ns.delete("wp", "no-image")


def ready_condition(pool: Pool) -> dict[str, str] | None:
    for c in pool.ns.get("wp", pool.name).get("status", {}).get("conditions", []):
        if c["type"] == "Ready":
            return dict(c)
    return None


def accepted(run: Run) -> dict[str, str]:
    conditions = run.status.get("conditions", [])
    return next((c for c in conditions if c["type"] == "Accepted"), {"reason": ""})


def test_an_image_that_cannot_be_pulled_shows_on_the_pool_and_its_waiting_run(
    tether: Install,
) -> None:
    ns = tether.workloads["runs"]
    pool = serve(ns, "bad-image", "steps.py", image="nope.invalid/tether:1")
    waiting = run(ns, "bad-image")
    ready = eventually(
        lambda: (
            (c := ready_condition(pool))
            and c["reason"] in ("ErrImagePull", "ImagePullBackOff")
            and c
        ),
        timeout=120,
        what="the pool's Ready condition to name the pull error",
    )
    assert "nope.invalid/tether:1" in ready["message"], ready
    why = eventually(
        lambda: (c := accepted(waiting))["reason"] == "WorkerPoolNotReady" and c,
        timeout=60,
        what="the run to say its pool cannot start",
    )
    assert "nope.invalid/tether:1" in why["message"]
    assert waiting.phase == "Pending"
    ns.delete("wfr", waiting.name)
    pool.remove()


def test_a_worker_file_with_a_syntax_error_shows_its_line_on_the_pool(
    tether: Install,
) -> None:
    ns = tether.workloads["runs"]
    broken = "import worker_runtime\n\ndef broken(:\n    pass\n"
    ns.apply(*script_pool("syntax-error", "steps.py", source=broken))
    pool = Pool(ns, "syntax-error")
    ready = eventually(
        lambda: (c := ready_condition(pool)) and c["reason"] == "CrashLoopBackOff" and c,
        timeout=180,
        what="the pool's Ready condition to say its pod crash-loops",
    )
    assert "SyntaxError: invalid syntax" in ready["message"], ready
    assert "steps.py, line 3" in ready["message"], ready
    ns.delete("wp", pool.name)


def test_a_run_naming_no_workflow_says_so(tether: Install) -> None:
    ns = tether.workloads["runs"]
    lost = run(ns, "no-such-workflow")
    why = eventually(
        lambda: (c := accepted(lost))["reason"] == "WorkflowNotFound" and c,
        timeout=60,
        what="the run to say its Workflow does not exist",
    )
    assert f"namespace {ns.namespace!r}" in why["message"]
    assert "no-such-workflow" in why["message"]
    ns.delete("wfr", lost.name)
