"""Every example runs, in-process with the real engine and as a script."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import get_definition

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _fast_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_EXAMPLE_LOAD_SECONDS", "0.01")


async def test_ml_inference_loads_once_and_predicts_on_the_session_worker() -> None:
    ex = load("ml_inference")
    async with WorkflowEnvironment(workflows=[ex.MLInferenceWorkflow], workers=3) as env:
        batch = [{"x": i} for i in range(6)]
        run_id = await env.start(ex.MLInferenceWorkflow, {"batch": batch})
        view = await env.wait(run_id)
    assert view.phase == "Succeeded"
    assert [r["y"] for r in view.result] == [2 * i + 1 for i in range(6)]
    workers = {a.worker for a in view.activities}
    assert len(workers) == 1
    assert view.sessions[0].state == "Closed"
    assert [a.cold_start for a in view.activities] == [True] + [False] * 6


async def test_multi_batch_reuses_one_captured_worker() -> None:
    ex = load("multi_batch")
    async with WorkflowEnvironment(workflows=[ex.MultiBatchWorkflow], workers=3) as env:
        batches = [[{"id": 1}, {"id": 2}], [{"id": 3}], [{"id": 4}]]
        result = await env.execute(ex.MultiBatchWorkflow, {"batches": batches})
    assert len({row["worker"] for batch in result for row in batch}) == 1


async def test_local_activities_run_in_the_workflow_process() -> None:
    ex = load("local_activities")
    async with WorkflowEnvironment(workflows=[ex.UserWorkflow]) as env:
        run_id = await env.start(ex.UserWorkflow, {"email": "ada@example.com"})
        view = await env.wait(run_id)
    assert view.result == {"valid": True, "upper": "ADA@EXAMPLE.COM"}
    assert all(a.local for a in view.activities)


async def test_mixed_local_and_remote() -> None:
    ex = load("mixed_execution")
    async with WorkflowEnvironment(workflows=[ex.MixedWorkflow], workers=2) as env:
        run_id = await env.start(ex.MixedWorkflow, {"email": "grace@example.org"})
        view = await env.wait(run_id)
    assert view.result["domain"] == "example.org"
    assert view.result["verified"]["verified"] is True
    assert [a.local for a in view.activities] == [True, False]


async def test_heartbeating_long_task() -> None:
    ex = load("heartbeat_long_task")
    async with WorkflowEnvironment(workflows=[ex.LongTaskWorkflow]) as env:
        result = await env.execute(ex.LongTaskWorkflow, {"items": ["a", "b"]})
    assert result == {"results": ["A", "B"], "resumed_from": 0, "attempt": 1}


async def test_retries_until_success_and_non_retryable_rejection() -> None:
    ex = load("retries")
    async with WorkflowEnvironment(workflows=[ex.RetriesWorkflow]) as env:
        ok = await env.execute(ex.RetriesWorkflow, {"order_id": "A-1"})
        rejected = await env.execute(ex.RetriesWorkflow, {"order_id": "B-2"})
    assert ok == {"order_id": "A-1", "charged": True, "attempts": 3}
    assert rejected["attempts"] == 1
    assert "must start with 'A-'" in rejected["rejected"]


async def test_nightly_report_runs_and_declares_its_schedule() -> None:
    ex = load("nightly_report")
    assert get_definition(ex.NightlyReport).schedules == ("0 2 * * *",)
    async with WorkflowEnvironment(workflows=[ex.NightlyReport]) as env:
        eu = await env.execute(ex.NightlyReport)
        us = await env.execute(ex.NightlyReport, {"region": "us", "settle_seconds": 0.05})
    assert eu == {"region": "eu", "orders": 3, "report": "eu: 3 orders, 242.75 total"}
    assert us["report"] == "us: 2 orders, 409.99 total"


async def test_nested_activity_failure_retries_the_parent() -> None:
    ex = load("nested_activity")
    async with WorkflowEnvironment(workflows=[ex.NestedWorkflow]) as env:
        run_id = await env.start(ex.NestedWorkflow, {"input_data": "hello"})
        view = await env.wait(run_id)
    assert view.result == {"result_data": "olleh", "parent_attempt": 2}
    assert [a.name for a in view.activities] == ["parent_activity"]


@pytest.mark.parametrize("name", ["StickySoftDag", "StickyHardDag"])
async def test_sticky_dag_steps_share_the_workflow_worker(name: str) -> None:
    ex = load("sticky_dag")
    wf = getattr(ex, name)
    async with WorkflowEnvironment(workflows=[wf], workers=3) as env:
        result: dict[str, Any] = await env.execute(wf, None)
    assert result["step1a"] == result["step1b"] == result["step2"] == result["workflow_worker"]


async def test_sticky_child_runs_on_the_parent_worker() -> None:
    ex = load("sticky_child")
    wfs = [ex.StickyParentWorkflow, ex.StickyChildWorkflow, ex.PlainChildWorkflow]
    async with WorkflowEnvironment(workflows=wfs, workers=3) as env:
        result = await env.execute(ex.StickyParentWorkflow, {"n": 3})
    assert result["child"]["child_worker"] == result["parent_worker"]
    assert result["child"]["worker"] == result["parent_worker"]
    assert result["child"]["n"] == 9
    assert "sticky strategy" in result["plain_child_refused"]


@pytest.mark.slow
async def test_sticky_soft_hard_keeps_each_session_on_one_worker() -> None:
    ex = load("sticky_soft_hard")
    async with WorkflowEnvironment(workflows=[ex.StickySoftHard], workers=2) as env:
        result = await env.execute(ex.StickySoftHard, {"strategies": ["SOFT", "HARD"], "steps": 3})
    for strategy in ("SOFT", "HARD"):
        steps = result[strategy]
        assert [s["i"] for s in steps] == [0, 1, 2]
        assert len({s["pod"] for s in steps}) == 1, steps
        assert [s["warm"] for s in steps] == [False, True, True]
        assert steps[0]["cold_start"] is True
        assert [s["cold_start"] for s in steps[1:]] == [False, False]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.stem)
def test_example_script_runs(path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"TETHER_EXAMPLE_LOAD_SECONDS": "0.01", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
