"""Child runs on Kubernetes: their history lives with their root's WorkflowRun.

A child run (a workflow's `execute_child`) has no WorkflowRun of its own. Its history
ConfigMaps are owned by the root's WorkflowRun, so an operator killed while the child
runs recovers it, and deleting the root collects the child's objects too.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.kube import Kube, eventually
from tests.e2e.operator_env import (
    TESTDATA,
    OperatorEnv,
    operator_env,
    run_across_an_operator_kill,
)

STEPS = TESTDATA / "operator_workflows.py"


@pytest.fixture
def env(kube: Kube, crds: list[str], tmp_path: Path) -> Iterator[OperatorEnv]:
    with operator_env(kube, tmp_path) as started:
        yield started


def history_of(ns: Kube) -> list[dict[str, Any]]:
    return ns.list("configmaps", "app.kubernetes.io/managed-by=tether,tether.dev/part=history")


def test_the_operator_killed_while_a_child_runs_recovers_it_with_no_step_run_twice(
    env: OperatorEnv, tmp_path: Path
) -> None:
    count = 10
    run, executions = run_across_an_operator_kill(
        env, tmp_path / "ledger.txt", "family", "family", {"count": count, "seconds": 0.4}
    )
    status = run["status"]
    assert status["phase"] == "Succeeded"
    assert status["result"] == {
        "count": count,
        "sum": sum(i * i for i in range(count)),
        "own": 1000 * 1000,
    }
    child_steps = [i for i in executions if i != 1000]
    # A step whose completion was in flight at the kill may run again; none completed before.
    assert sorted(set(child_steps)) == list(range(count))
    assert len(child_steps) <= count + 1, executions
    assert executions.count(1000) == 1
    assert "has no WorkflowRun any more" not in env.operator.log(), "no child was pruned"

    root_uid = run["metadata"]["uid"]
    segments = history_of(env.ns)
    children = [s for s in segments if s["metadata"]["labels"]["tether.dev/run"] != "family"]
    assert children, [s["metadata"]["name"] for s in segments]
    for segment in children:
        meta = segment["metadata"]
        assert meta["name"].startswith("family-c"), meta["name"]
        assert meta["labels"]["tether.dev/root"] == "family"
        assert meta["annotations"]["tether.dev/run-name"] == meta["labels"]["tether.dev/run"]
        assert meta["ownerReferences"][0]["uid"] == root_uid

    env.ns.delete("wfr", "family")
    eventually(lambda: not history_of(env.ns), timeout=60, what="the garbage collector")
    assert env.operator.stop(signal.SIGTERM, timeout=20) == 0
