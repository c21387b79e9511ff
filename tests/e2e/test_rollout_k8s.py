"""Editing a WorkerPool's template rolls its pods, as a Deployment's would (issue 15):
on the chart's operator, a pool of two pods serving `testdata/sticky_steps.py` gets a new
environment variable while a SOFT run and a plain run go; every pod is replaced by one
of the new template, never fewer than two ready, and both runs end right.
"""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.conftest import Install
from tests.e2e.kube import eventually, running_and_ready
from tests.e2e.scenario import serve, steps
from tether_operator.k8s.pools.pods import TEMPLATE_HASH

pytestmark = pytest.mark.timeout(600)

POOL = "rolling"


def test_editing_the_template_rolls_the_pods_and_runs_go_on(tether: Install) -> None:
    ns = tether.workloads["runs"]
    pool = serve(ns, POOL, "sticky_steps.py", replicas=2).ready(2)
    before = {p["metadata"]["name"] for p in pool.pods()}
    runs = [steps(ns, POOL, 30, 0.5, sticky=True), steps(ns, POOL, 30, 0.5, sticky=False)]
    for run in runs:
        run.reaches("Running")
    patch = [
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "ROLLED", "value": "yes"},
        }
    ]
    ns.run("patch", "wp", POOL, "--type=json", "-p", yaml.safe_dump(patch, default_flow_style=True))
    fewest_ready = 2

    def rolled() -> bool:
        nonlocal fewest_ready
        # Ready as the pool counts it: pods whose worker is registered and takes work.
        ready = ns.get("wp", POOL).get("status", {}).get("readyReplicas", 0)
        fewest_ready = min(fewest_ready, int(ready))
        now = pool.pods()
        names = {p["metadata"]["name"] for p in now}
        return len(now) == 2 and not names & before and all(running_and_ready(p) for p in now)

    eventually(rolled, timeout=300, interval=0.5, what="every pod replaced")
    status = ns.get("wp", POOL)["status"]
    assert status["updatedReplicas"] == 2
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert progressing["reason"] == "Updated"
    hashes = {p["metadata"]["annotations"][TEMPLATE_HASH] for p in pool.pods()}
    assert len(hashes) == 1
    for pod in pool.pods():
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["ROLLED"] == "yes"
    assert fewest_ready >= 2, "maxUnavailable 0: never fewer ready workers than replicas"
    for run in runs:
        assert run.wait().phase == "Succeeded"
    pool.remove()
