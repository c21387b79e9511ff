"""The chart's embedded Postgres deleted while runs go (only with TETHER_E2E_STORE=postgres,
the Postgres tier's session of `make test`): runs pause while the database is gone, each
says why in a `HistoryNotStored` Event and a `HistoryStored=False` condition, and when the
StatefulSet's new pod is up every run finishes, nothing lost and no step whose completion
was acknowledged run again."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import STORE, Install
from tests.e2e.kube import eventually
from tests.e2e.scenario import serve, steps

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(STORE != "postgres", reason="the chart's Postgres tier only"),
]


def test_the_database_pod_deleted_mid_run_pauses_runs_and_loses_nothing(tether: Install) -> None:
    ns = tether.workloads["runs"]
    pool = serve(ns, "pgdown", "steps.py", configmap="pgdown-workflow", replicas=1).ready(1)
    count = 30
    runs = [steps(ns, "pgdown", count=count, seconds=0.3) for _ in range(3)]
    eventually(lambda: all(r.done >= 3 for r in runs), timeout=120, what="three steps each")

    (database,) = tether.system.pods("app.kubernetes.io/component=postgres")
    tether.system.run("delete", "pod", database["metadata"]["name"], "--wait=false")

    def said_why() -> bool:
        # The condition is absent until an append fails: present (False, or True again
        # after a short outage) means the run said its history could not be written.
        return any(
            c["type"] == "HistoryStored" for r in runs for c in r.status.get("conditions", [])
        )

    eventually(said_why, timeout=90, what="a run to say its history cannot be written")
    reasons = [e.get("reason") for e in ns.list("events") if e.get("reason") == "HistoryNotStored"]
    assert reasons, "a HistoryNotStored Event"

    for run in runs:
        assert run.wait(timeout=300).phase == "Succeeded"
        assert run.result == {"steps": count, "total": sum(range(count))}
        conditions = {c["type"]: c for c in run.status["conditions"]}
        if "HistoryStored" in conditions:
            assert conditions["HistoryStored"]["status"] == "True", conditions
        executed = pool.executions(run)
        assert sorted(executed) == list(range(count)), f"{run.name}: {sorted(executed)}"
        again = [step for step, n in executed.items() if n > 1]
        # Only a step in flight while the database was gone may run again (its
        # completion was never acknowledged): at most one per run.
        assert len(again) <= 1, f"{run.name} ran steps again: {again}"
    pool.remove()
