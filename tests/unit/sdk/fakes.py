"""Helpers for SDK unit tests: workflow tasks with history, and a fake scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import httpx

from worker_runtime.protocol import HistoryEventModel, WorkflowTask


def event(type: str, **data: Any) -> HistoryEventModel:
    return HistoryEventModel(type=type, time=1_700_000_000.0, data=data)


def workflow_task(
    workflow: str,
    input: Any = None,
    history: list[HistoryEventModel] | None = None,
    *,
    run_id: str = "run-1",
    task_id: str = "wft-1",
    session_id: str | None = None,
) -> WorkflowTask:
    return WorkflowTask(
        task_id=task_id,
        run_id=run_id,
        workflow=workflow,
        input=input,
        attempt=1,
        history=history or [],
        session_id=session_id,
    )


async def settle(rounds: int = 20) -> None:
    """Let ready callbacks and tasks run."""
    for _ in range(rounds):
        await asyncio.sleep(0)


class FakeScheduler:
    """A tiny scheduler behind ``httpx.MockTransport``: records requests, queues tasks.

    `events` records, in order, what the worker could know when: ``("handed", ids)``
    as a poll response leaves, ``("held", ids)`` as a heartbeat arrives, and
    ``("acked", ids)`` as a report's response leaves (its completions' task ids).
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.events: list[tuple[str, list[str]]] = []
        self.registrations: list[dict[str, Any]] = []
        self.reports: list[dict[str, Any]] = []
        self.tasks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.report_reply: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: {}
        self.known_workers: set[str] = set()
        self.replaced: set[str] = set()
        """Worker ids whose polls and heartbeats get 409 WorkerReplaced."""
        self.report_event = asyncio.Event()
        self.down = False
        """While True, every request fails to connect (the scheduler is restarting)."""
        self.transport = httpx.MockTransport(self.handle)

    def restart(self) -> None:
        """Come back as a new scheduler process: it knows no worker."""
        self.known_workers.clear()
        self.down = False

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        self.requests.append((path, body))
        if path == "/v1/workers":
            self.registrations.append(body)
            self.known_workers.add(body["worker_id"])
            return httpx.Response(
                200,
                json={"worker_id": body["worker_id"], "heartbeat_interval": 0.05, "namespace": "t"},
            )
        parts = path.split("/")
        worker_id = parts[3]
        if worker_id not in self.known_workers:
            return httpx.Response(404, json={"error": "UnknownWorker", "message": "who?"})
        if worker_id in self.replaced and not path.endswith("/report"):
            return httpx.Response(409, json={"error": "WorkerReplaced", "message": "newer"})
        if path.endswith("/poll"):
            try:
                first = await asyncio.wait_for(self.tasks.get(), timeout=min(body["wait"], 0.2))
            except TimeoutError:
                return httpx.Response(200, json={"tasks": []})
            tasks = [first]
            while not self.tasks.empty() and len(tasks) < body["max_tasks"]:
                tasks.append(self.tasks.get_nowait())
            self.events.append(("handed", [t["task_id"] for t in tasks if "task_id" in t]))
            return httpx.Response(200, json={"tasks": tasks})
        if path.endswith("/report"):
            self.reports.append(body)
            self.report_event.set()
            reply = self.report_reply(body)
            self.events.append(("acked", [c["task_id"] for c in body["completions"]]))
            return httpx.Response(200, json=reply)
        if path.endswith("/heartbeat"):
            self.events.append(("held", list(body.get("tasks") or [])))
        return httpx.Response(200, json={})

    async def wait_for(self, predicate: Callable[[], Any], within: float = 3.0) -> Any:
        async with asyncio.timeout(within):
            while not (value := predicate()):
                self.report_event.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.report_event.wait(), 0.05)
            return value

    def completions(self) -> list[dict[str, Any]]:
        return [c for r in self.reports for c in r["completions"]]

    def heartbeats(self) -> list[list[str]]:
        """The task lists of the worker heartbeats received so far, in order."""
        return [ids for kind, ids in self.events if kind == "held"]

    def commands(self) -> list[dict[str, Any]]:
        return [c for r in self.reports for w in r["workflows"] for c in w["commands"]]
