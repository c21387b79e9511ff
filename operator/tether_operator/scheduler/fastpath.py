"""The worker hot path (poll, report, heartbeat) served without FastAPI's routing.

Workers call these three endpoints thousands of times a second; FastAPI's routing,
dependency solving and response handling cost more than the engine's work. The
`GuardMiddleware` hands these requests here first: the body is validated straight
from bytes by pydantic-core, the service is called, and the JSON answer is sent as
two ASGI messages. Errors become the same `Problem` bodies as on the FastAPI routes,
which stay registered (they document the endpoints in `/openapi.json` and serve them
when the fast path is off).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

from tether_operator.engine import EngineError
from tether_operator.scheduler import worker_calls
from tether_operator.scheduler.auth import AuthError, principal_of
from tether_operator.scheduler.http_protocol import CONNECTED
from tether_operator.scheduler.problems import (
    ROUTE_SCOPE_KEY,
    PayloadTooLarge,
    auth_error_problem,
    check_payload,
    engine_problem,
    payload_problem,
    validation_problem,
)
from tether_operator.scheduler.service import SchedulerService
from worker_runtime.protocol import API_PREFIX, PollRequest, ReportRequest, WorkerHeartbeat

__all__ = ["WorkerFastPath", "report_payloads"]

_WORKERS = f"{API_PREFIX}/workers/"
_ACTIONS = frozenset({"poll", "report", "heartbeat"})
_ROUTES = {action: f"{_WORKERS}{{worker_id}}/{action}" for action in _ACTIONS}
"""The route template of each action: the label its requests are timed under."""
_HEADERS = [(b"content-type", b"application/json")]
_json_encode = json.JSONEncoder(separators=(",", ":")).encode


def report_payloads(req: ReportRequest) -> Iterator[tuple[str, Any]]:
    """Every activity/workflow payload in a report, with its dotted field name."""
    for i, c in enumerate(req.completions):
        yield f"completions.{i}.result", c.result
    for i, h in enumerate(req.heartbeats):
        yield f"heartbeats.{i}.details", h.details
    for i, batch in enumerate(req.workflows):
        for j, cmd in enumerate(batch.commands):
            prefix = f"workflows.{i}.commands.{j}"
            if cmd.type == "schedule_activity":
                yield f"{prefix}.args", {"args": cmd.args, "kwargs": cmd.kwargs}
            elif cmd.type == "start_child":
                yield f"{prefix}.input", cmd.input
            elif cmd.type in ("complete_workflow", "record_local_activity"):
                yield f"{prefix}.result", cmd.result


async def _send_json(send: Send, payload: bytes, status: int = 200) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


def _still_connected(scope: Scope, receive: Receive) -> Any:
    """An async check, without waiting, that the client has not disconnected: what it
    would take must stay queued for its next request, not go into a dead answer.

    Served by `http_protocol`, the scope carries the connection's own check (a look at
    its transport); elsewhere a cancelled `receive` tells, at some 20x the cost.
    """
    own = scope.get("extensions", {}).get(CONNECTED)
    if own is not None:

        async def open_() -> bool:
            return bool(own())

        return open_

    async def connected() -> bool:
        while True:
            message: dict[str, Any] = {}
            with anyio.CancelScope() as scope:
                scope.cancel()
                message = dict(await receive())
            # The request body comes first (replayed by the body-limit layer): skip it.
            if message.get("type") != "http.request":
                return message.get("type") != "http.disconnect"

    return connected


class WorkerFastPath:
    """`POST /v1/workers/{id}/poll|report|heartbeat`, straight to the service."""

    def __init__(self, service: SchedulerService) -> None:
        self.service = service

    async def __call__(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        path: str = scope["path"]
        if scope["method"] != "POST" or not path.startswith(_WORKERS):
            return False
        worker_id, _, action = path[len(_WORKERS) :].rpartition("/")
        if action not in _ACTIONS or not worker_id or "/" in worker_id or len(worker_id) > 253:
            return False
        scope[ROUTE_SCOPE_KEY] = _ROUTES[action]
        service = self.service
        try:
            if action == "report":
                req = ReportRequest.model_validate_json(body)
                check_payload(scope, report_payloads(req))
                answer = await worker_calls.report(
                    service,
                    worker_id,
                    req,
                    check_owner=principal_of(scope) is not None,
                    still_connected=_still_connected(scope, receive),
                )
                if answer is None:
                    return True  # gone while it waited: its tasks stay queued
                await _send_json(send, _json_encode(answer).encode())
            elif action == "poll":
                polled = await worker_calls.poll(
                    service,
                    worker_id,
                    PollRequest.model_validate_json(body),
                    _still_connected(scope, receive),
                )
                await _send_json(send, _json_encode(polled).encode())
            else:
                beat = WorkerHeartbeat.model_validate_json(body) if body.strip() else None
                service.heartbeat(worker_id, beat)
                await _send_json(send, b"{}")
        except ValidationError as exc:
            await validation_problem(exc.errors(), in_body=True)(scope, receive, send)
        except EngineError as exc:
            await engine_problem(exc)(scope, receive, send)
        except PayloadTooLarge as exc:
            await payload_problem(exc)(scope, receive, send)
        except AuthError as exc:
            await auth_error_problem(exc)(scope, receive, send)
        return True
