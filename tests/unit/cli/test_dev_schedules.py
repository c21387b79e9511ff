"""Schedules declared in code, run by `tether dev`: runs start at each slot, named by it;
`tether get schedules` lists them; trigger, suspend and resume act; a bad expression
stops the worker's registration with the field named."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unit.cli.test_dev_mode import DevMode, _until, dev_mode
from tether_operator.engine import run_name

pytestmark = pytest.mark.slow

SCHEDULED = """
import worker_runtime as workflows


@workflows.activity()
async def stamp(n: int) -> int:
    return n


@workflows.workflow.define(name="tick", schedules=["*/2 * * * * *"])
class Tick:
    @workflows.workflow.entrypoint
    async def execute(self, n: int = 7) -> int:
        return await stamp(n)


@workflows.workflow.define(name="plain")
class Plain:
    @workflows.workflow.entrypoint
    async def execute(self) -> int:
        return await stamp(1)
"""


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevMode]:
    with dev_mode(tmp_path, SCHEDULED) as mode:
        yield mode


def _scheduled_runs(dev: DevMode) -> list[str]:
    return sorted(r.run_id for r in dev.client.list_runs().runs if r.run_id.startswith("tick-1"))


def test_code_schedules_start_runs_at_their_slots(dev: DevMode) -> None:
    _until(lambda: len(_scheduled_runs(dev)) >= 2, 20, "two scheduled runs")
    first, second = _scheduled_runs(dev)[:2]
    assert int(second.split("-")[1]) - int(first.split("-")[1]) == 2  # one per slot
    view = dev.client.get_run(first)
    assert view.result == 7  # without input: the entrypoint's defaults
    slot = int(first.split("-")[1])
    assert first == run_name("tick", float(slot), seconds=True)
    assert view.created_at - slot < 1.0, "started within a second of its time"

    listed = dev.tether("get", "schedules")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["NAMESPACE", "NAME", "SCHEDULE"]
    assert row.split()[:2] == ["dev", "tick"]
    assert "plain" not in listed.stdout
    assert "Started" in dev.output() or "tick-1" in dev.output()


def test_trigger_suspend_and_resume(dev: DevMode) -> None:
    _until(lambda: len(_scheduled_runs(dev)) >= 1, 20, "a scheduled run")
    suspended = dev.tether("schedule", "suspend", "tick", "-o", "json")
    assert suspended.returncode == 0, suspended.stderr
    assert json.loads(suspended.stdout)["suspend"] is True
    time.sleep(0.5)  # a run started at the last slot may still register
    before = _scheduled_runs(dev)
    time.sleep(4.5)
    assert _scheduled_runs(dev) == before, "no slot starts while suspended"

    triggered = dev.tether("schedule", "trigger", "tick", "-o", "json")
    assert triggered.returncode == 0, triggered.stderr
    run = json.loads(triggered.stdout)["run"]
    assert run.startswith("tick-t")
    assert dev.client.wait_run(run, timeout=10).phase == "Succeeded"

    assert dev.tether("schedule", "resume", "tick").returncode == 0
    _until(lambda: len(_scheduled_runs(dev)) > len(before), 10, "a run after resuming")
    resumed = _scheduled_runs(dev)
    slots = [int(r.split("-")[1]) for r in resumed if r not in before]
    assert min(slots) > int(before[-1].split("-")[1]) + 4, "suspended times are not caught up"

    missing = dev.tether("schedule", "trigger", "plain")
    assert missing.returncode == 1
    assert 'schedule "plain" not found' in missing.stderr


def test_a_bad_expression_is_refused_at_registration(tmp_path: Path) -> None:
    from tether_operator.scheduler.inputs import InputCatalog, InvalidSchedule
    from worker_runtime.protocol import RegisterWorkerRequest, WorkflowSpec

    req = RegisterWorkerRequest(
        worker_id="w",
        incarnation="1",
        workflows=[WorkflowSpec(name="bad", schedules=["@hourly", "61 * * * *"])],
    )
    with pytest.raises(InvalidSchedule) as refused:
        InputCatalog().check_registration(req)
    assert refused.value.field == "workflows.0.schedules.1"
    assert "minute field: 61 is out of range 0-59" in str(refused.value)
