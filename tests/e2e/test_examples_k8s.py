"""Every manifest in examples/k8s/, installed with Helm and driven with kubectl, as the
README tells a user: apply the WorkerPool + Workflow, create a run, wait for Succeeded,
read the result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import IMAGE, Install
from tests.e2e.kube import Kube
from tests.e2e.scenario import Run

pytestmark = pytest.mark.timeout(600)

EXAMPLES_K8S = Path(__file__).resolve().parents[2] / "examples" / "k8s"
STOCK_IMAGE = "image: tether:dev"


def _same_worker(result: dict[str, Any]) -> bool:
    return result["step1a"] == result["step1b"] == result["step2"] == result["workflow_worker"]


def _one_warm_pod(steps: list[dict[str, Any]]) -> bool:
    """Every step of the session ran once on one pod; only the first found its cache cold."""
    return (
        len({s["pod"] for s in steps}) == 1
        and [s["warm"] for s in steps] == [False] + [True] * (len(steps) - 1)
        and {s["attempt"] for s in steps} == {1}
    )


EXPECTED: dict[str, Callable[[Any], bool]] = {
    "configmap-worker": lambda r: [g["greeting"] for g in r] == ["Hello, Ada!", "Hello, Grace!"],
    "deterministic-workflow": lambda r: r["receipt"]["user"] == "ada" and "woke_at" in r,
    "heartbeat-long-task": lambda r: (
        r == {"results": ["A", "B", "C", "D"], "resumed_from": 0, "attempt": 1}
    ),
    "local-activities": lambda r: r == {"valid": True, "upper": "ADA@EXAMPLE.COM"},
    "mixed-execution": lambda r: r["domain"] == "example.org" and r["verified"]["verified"],
    "ml-inference": lambda r: (
        [row["y"] for row in r] == [3.0, 5.0, 7.0, 9.0, 11.0]
        and len({row["worker"] for row in r}) == 1
    ),
    "multi-batch": lambda r: (
        [[row["id"] for row in batch] for batch in r] == [[1, 2], [3], [4, 5]]
        and len({row["worker"] for batch in r for row in batch}) == 1
    ),
    "nightly-report": lambda r: (
        r == {"region": "us", "orders": 2, "report": "us: 2 orders, 409.99 total"}
    ),
    # The nested call fails once per worker process, so a later run on the same pod
    # succeeds at its first attempt.
    "nested-activity": lambda r: r["result_data"] == "olleh",
    "retries": lambda r: r == {"order_id": "A-1", "charged": True, "attempts": 3},
    "sticky-child": lambda r: (
        r["child"]["n"] == 9
        and r["child"]["child_worker"] == r["parent_worker"]
        and "sticky strategy" in r["plain_child_refused"]
    ),
    "sticky-dag": _same_worker,
    "sticky-soft-hard": lambda r: all(_one_warm_pod(r[s]) for s in ("SOFT", "HARD")),
}
"""What each example's run returns, by manifest name (examples/k8s/NAME-run.yaml)."""


def manifest(name: str) -> str:
    """examples/k8s/NAME.yaml with the session's image in place of the stock one."""
    return (EXAMPLES_K8S / name).read_text().replace(STOCK_IMAGE, f"image: {IMAGE}")


def run_to_success(ns: Kube, name: str, timeout: float = 120) -> Run:
    """Create examples/k8s/NAME-run.yaml and wait for it to succeed."""
    run = Run(ns, ns.create(manifest(f"{name}-run.yaml")))
    assert run.wait(timeout=timeout).phase == "Succeeded", ns.run_post_mortem(run.name)
    return run


@pytest.fixture(scope="module")
def examples(tether: Install) -> Kube:
    """Every example's WorkerPool and Workflow applied at once, as `kubectl apply -f` of a
    folder does (a run may come before its pool is ready)."""
    ns = tether.workloads["examples"]
    ns.apply(*(manifest(f"{name}.yaml") for name in EXPECTED))
    return ns


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_run_succeeds_with_its_result(examples: Kube, name: str) -> None:
    run = run_to_success(examples, name)
    result = run.result
    assert EXPECTED[name](result), f"{name} run {run.name} returned {result!r}"


def test_kubectl_get_shows_the_columns(examples: Kube) -> None:
    run = run_to_success(examples, "ml-inference").name
    header, *rows = (line.split() for line in examples.run("get", "wfr").splitlines())
    assert header == ["NAME", "WORKFLOW", "PHASE", "WORKER-POD", "PROGRESS", "AGE"]
    row = next(r for r in rows if r[0] == run)
    pods = {p["metadata"]["name"] for p in examples.pods("tether.dev/pool=ml-inference")}
    assert row[1:3] == ["ml-inference", "Succeeded"]
    assert row[3] in pods, f"the worker pod column names a pool pod: {row}"
    assert row[4] == "6/6", "load_model and five predictions"

    pools = [line.split() for line in examples.run("get", "wp", "ml-inference").splitlines()]
    assert pools[0] == ["NAME", "DESIRED", "READY", "SESSIONS", "AGE"]
    assert pools[1][1:3] == ["2", "2"]

    flows = [line.split() for line in examples.run("get", "wf", "ml-inference").splitlines()]
    assert flows[0] == ["NAME", "ACTIVITIES", "POOLS", "AGE"]
    assert flows[1][1:3] == ["2", "ml-inference"]
