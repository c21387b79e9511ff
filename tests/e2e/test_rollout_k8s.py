"""Editing a WorkerPool's template rolls its pods, as a Deployment's would (issue 15):
on the chart's operator, a pool of two pods serving `testdata/sticky_steps.py` gets a new
environment variable while a SOFT run and a plain run go; every pod is replaced by one
of the new template, never fewer than two ready, and both runs end right.
"""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.conftest import Install
from tests.e2e.kube import Kube, eventually, running_and_ready
from tests.e2e.testdata_pools import script_pool, start_steps
from tether_operator.k8s.pools.pods import TEMPLATE_HASH

pytestmark = pytest.mark.timeout(600)

POOL = "rolling"


def pods(ns: Kube) -> list[dict[str, object]]:
    return [
        p for p in ns.pods(f"tether.dev/pool={POOL}") if not p["metadata"].get("deletionTimestamp")
    ]


def start(ns: Kube, sticky: bool) -> str:
    return start_steps(ns, POOL, count=30, seconds=0.5, sticky=sticky)[0]


def test_editing_the_template_rolls_the_pods_and_runs_go_on(tether: Install) -> None:
    ns = tether.workloads["runs"]
    ns.apply(*script_pool(POOL, "sticky_steps.py", workflow=POOL, replicas=2))
    eventually(
        lambda: sum(running_and_ready(p) for p in pods(ns)) == 2, timeout=120, what="two pods"
    )
    before = {p["metadata"]["name"] for p in pods(ns)}
    runs = [start(ns, sticky=True), start(ns, sticky=False)]
    eventually(
        lambda: all(ns.jsonpath("wfr", r, "{.status.phase}") == "Running" for r in runs),
        timeout=60,
        what="both runs running",
    )
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
        now = pods(ns)
        names = {p["metadata"]["name"] for p in now}
        return len(now) == 2 and not names & before and all(running_and_ready(p) for p in now)

    eventually(rolled, timeout=300, interval=0.5, what="every pod replaced")
    status = ns.get("wp", POOL)["status"]
    assert status["updatedReplicas"] == 2
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert progressing["reason"] == "Updated"
    hashes = {p["metadata"]["annotations"][TEMPLATE_HASH] for p in pods(ns)}
    assert len(hashes) == 1
    for pod in pods(ns):
        env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
        assert env["ROLLED"] == "yes"
    assert fewest_ready >= 2, "maxUnavailable 0: never fewer ready workers than replicas"
    for run in runs:
        ns.wait("wfr", run, "Succeeded", timeout=240)
    ns.delete("wp", POOL)
    ns.delete("wf", POOL)
