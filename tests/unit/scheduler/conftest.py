"""Fixtures for the scheduler service: the real engine, an injectable clock, no sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tether_operator.engine import EngineConfig
from tether_operator.scheduler import SchedulerService
from tether_operator.store.memory import MemoryStore
from worker_runtime.protocol import RegisterWorkerRequest, ReportRequest, StartRunRequest


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def service(clock: FakeClock) -> AsyncIterator[SchedulerService]:
    svc = SchedulerService(
        EngineConfig(worker_heartbeat_timeout=10.0), store=MemoryStore(), clock=clock
    )
    await svc.start()
    yield svc
    await svc.stop()


def register(svc: SchedulerService, worker_id: str = "w1", incarnation: str = "i1") -> None:
    svc.register_worker(
        RegisterWorkerRequest(
            worker_id=worker_id,
            incarnation=incarnation,
            workflows=[{"name": "wf"}],
            activities=[{"name": "act"}],
        )
    )


def start(svc: SchedulerService, run_id: str | None = None) -> str:
    view = svc.start_run(StartRunRequest(workflow="wf", input={"n": 1}, run_id=run_id))
    return str(view["run_id"])


def commands(run_id: str, task_id: str, *cmds: dict[str, Any], max_tasks: int = 8) -> ReportRequest:
    return ReportRequest.model_validate(
        {
            "workflows": [{"run_id": run_id, "workflow_task_id": task_id, "commands": list(cmds)}],
            "max_tasks": max_tasks,
        }
    )


def schedule(seq: int, **extra: Any) -> dict[str, Any]:
    return {"type": "schedule_activity", "seq": seq, "activity": "act", **extra}


def complete(seq: int, result: Any) -> dict[str, Any]:
    return {"type": "complete_workflow", "seq": seq, "result": result}
