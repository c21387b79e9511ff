"""The WorkflowSchedule controller's I/O, over `KubeClient`'s httpx transport (the seam we
own): what it creates, patches and deletes for a schedule, and how it wakes at a slot.
The real API server and operator are in tests/e2e/test_schedules_k8s.py."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tether_operator.k8s.api.client import KubeClient, KubeConfig
from tether_operator.k8s.schedules.controller import ScheduleController
from tether_operator.scheduler import SchedulerService

NS = "reports"
CREATED = 1_796_637_660.0  # 2026-12-07T10:01:00Z


def schedule(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tether.dev/v1alpha1",
        "kind": "WorkflowSchedule",
        "metadata": {
            "name": "nightly",
            "namespace": NS,
            "uid": "u-1",
            "generation": 1,
            "resourceVersion": "1",
            "creationTimestamp": "2026-12-07T10:01:00Z",
        },
        "spec": {"schedules": ["*/5 * * * *"], "workflowRef": {"name": "report"}, **spec},
    }


@dataclass
class ApiServer:
    """Records every write; answers a create with the object, stamped."""

    writes: list[tuple[str, str, Any]] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    schedule: dict[str, Any] = field(default_factory=schedule)
    """The schedule as stored: a PATCH merges into it and answers with it."""

    def handle(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        self.writes.append((request.method, request.url.path, body))
        if request.method == "POST":
            name = body["metadata"]["name"]
            if name in self.taken:
                return httpx.Response(409, json={"reason": "AlreadyExists", "message": "exists"})
            obj = {
                **body,
                "metadata": {**body["metadata"], "creationTimestamp": "2026-12-07T10:05:00Z"},
            }
            return httpx.Response(201, json=obj)
        if request.method == "PATCH":
            for key, value in body.items():
                self.schedule[key] = {**(self.schedule.get(key) or {}), **value}
            meta = self.schedule["metadata"]
            meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
            return httpx.Response(200, json=self.schedule)
        return httpx.Response(200, json={})


@pytest.fixture
def api() -> ApiServer:
    return ApiServer()


def controller(api: ApiServer, now: float) -> ScheduleController:
    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))
    return ScheduleController(client, SchedulerService(), clock=lambda: now)


async def test_each_run_carries_the_schedules_overrides(api: ApiServer) -> None:
    c = controller(api, CREATED + 240.5)  # 10:05:00.5
    c.on_schedule_event(
        "ADDED",
        schedule(
            input={"region": "eu"},
            sticky="HARD",
            scheduleTimeout="2m",
            workerPool="reports",
            ttlSecondsAfterFinished=600,
        ),
    )
    await c.reconcile((NS, "nightly"))
    (create,) = [w for w in api.writes if w[0] == "POST"]
    _, path, body = create
    assert path == f"/apis/tether.dev/v1alpha1/namespaces/{NS}/workflowruns"
    assert body["metadata"]["name"] == "nightly-29943965"
    assert body["metadata"]["labels"] == {"tether.dev/schedule": "nightly"}
    assert body["metadata"]["annotations"] == {"tether.dev/scheduled-time": "2026-12-07T10:05:00Z"}
    (owner,) = body["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "WorkflowSchedule",
        "nightly",
        "u-1",
        True,
    )
    assert body["spec"] == {
        "workflowRef": {"name": "report"},
        "input": {"region": "eu"},
        "sticky": "HARD",
        "scheduleTimeout": "2m",
        "workerPool": "reports",
        "ttlSecondsAfterFinished": 600,
    }
    (status,) = [w for w in api.writes if w[0] == "PATCH"]
    assert status[1].endswith("/workflowschedules/nightly/status")
    assert status[2]["status"]["lastSlotTime"] == "2026-12-07T10:05:00Z"
    assert status[2]["status"]["active"] == [
        {"name": "nightly-29943965", "scheduledTime": "2026-12-07T10:05:00Z"}
    ]


async def test_a_run_that_exists_already_is_not_an_error(api: ApiServer) -> None:
    api.taken.add("nightly-29943965")
    c = controller(api, CREATED + 241)
    c.on_schedule_event("ADDED", schedule())
    plan = await c.reconcile((NS, "nightly"))
    assert plan is not None
    assert c.created == 0
    assert [w[0] for w in api.writes] == ["POST", "PATCH"]


async def test_an_unchanged_status_is_not_written_again(api: ApiServer) -> None:
    c = controller(api, CREATED + 100)
    c.on_schedule_event("ADDED", schedule())
    await c.reconcile((NS, "nightly"))
    patches = len([w for w in api.writes if w[0] == "PATCH"])
    await c.reconcile((NS, "nightly"))
    assert len([w for w in api.writes if w[0] == "PATCH"]) == patches == 1


async def test_the_loop_sleeps_until_the_slot_and_starts_its_run_then(api: ApiServer) -> None:
    """`run` wakes at the next slot (not on a poll) and starts its run then."""
    loop = asyncio.get_running_loop()
    slot = CREATED + 540.0  # 10:10:00; 10:05 was acted on
    offset = slot - 0.3 - loop.time()
    client = KubeClient(KubeConfig(server="http://api"), transport=httpx.MockTransport(api.handle))
    c = ScheduleController(client, SchedulerService(), clock=lambda: loop.time() + offset)
    obj = schedule()
    obj["status"] = {"lastSlotTime": "2026-12-07T10:05:00Z"}
    c.on_schedule_event("ADDED", obj)
    task = asyncio.create_task(c.run())
    try:
        await asyncio.sleep(0.2)
        assert c.created == 0, "nothing before the slot"
        for _ in range(40):
            await asyncio.sleep(0.05)
            if c.created:
                break
        woke = loop.time() + offset
    finally:
        task.cancel()
    assert c.created == 1
    assert slot <= woke < slot + 0.5
    created = [w[2]["metadata"]["name"] for w in api.writes if w[0] == "POST"]
    assert created == ["nightly-29943970"]


async def test_an_invalid_spec_is_reported_not_raised(api: ApiServer) -> None:
    c = controller(api, CREATED + 100)
    c.on_schedule_event("ADDED", schedule(concurrencyPolicy="Queue"))
    assert await c.reconcile((NS, "nightly")) is None
    (patch,) = [w for w in api.writes if w[0] == "PATCH"]
    (ready,) = patch[2]["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "InvalidSpec")
    assert "concurrency_policy" in ready["message"] or "concurrencyPolicy" in ready["message"]
