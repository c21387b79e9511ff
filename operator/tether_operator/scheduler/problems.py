"""Errors as `Problem` bodies, and the guard that keeps bad requests from hurting us.

Nothing a client sends can crash the scheduler: engine errors map to 404/409/422,
validation errors to 422 naming the field, oversized bodies to 413 before any
parsing, and anything unexpected to a logged 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether_operator.engine import (
    EngineError,
    InvalidCommand,
    RunAlreadyExists,
    RunNotFound,
    UnknownWorker,
    WorkerIdTaken,
    WorkerReplaced,
    WorkerRetired,
    WorkflowNotFound,
)
from tether_operator.scheduler.auth import AuthError
from tether_operator.scheduler.run_starter import RunNotStarted
from tether_operator.store import StoreError, StoreUnavailable
from worker_runtime.protocol import MAX_BODY_BYTES, MAX_PAYLOAD_BYTES

__all__ = [
    "BODY_SIZE_SCOPE_KEY",
    "ROUTE_SCOPE_KEY",
    "GuardMiddleware",
    "PayloadTooLarge",
    "auth_error_problem",
    "check_payload",
    "engine_problem",
    "install_error_handlers",
    "payload_problem",
    "problem",
    "route_of",
    "validation_problem",
]

logger = logging.getLogger("tether.scheduler")

FastPath = Callable[[Scope, bytes, Receive, Send], Awaitable[bool]]
"""Handles a request directly (True) or declines it (False) to let the app route it."""
Served = Callable[[str, str, float], None]
"""Told of each request served: method, route template (`route_of`), seconds."""

ROUTE_SCOPE_KEY = "tether.route"
"""ASGI scope key: the route template of a request the fast path served."""


def route_of(scope: Scope) -> str:
    """The template of the route that served the request (a bounded label): the fast
    path's, else the router's, else `unmatched`."""
    fast: str | None = scope.get(ROUTE_SCOPE_KEY)
    if fast is not None:
        return fast
    route = scope.get("route")
    return "unmatched" if route is None else str(getattr(route, "path", "unmatched"))


BODY_SIZE_SCOPE_KEY = "tether.body_size"
"""ASGI scope key: the request body's size in bytes, set by `GuardMiddleware`."""

ENGINE_ERROR_STATUS: dict[type[EngineError], int] = {
    RunNotFound: 404,
    UnknownWorker: 404,
    WorkerReplaced: 409,
    WorkerIdTaken: 409,
    WorkerRetired: 409,
    WorkflowNotFound: 404,
    RunAlreadyExists: 409,
    InvalidCommand: 422,
}


def problem(status: int, error: str, message: str, field: str | None = None) -> Response:
    body = json.dumps({"error": error, "message": message, "field": field})
    return Response(body, status_code=status, media_type="application/json")


class PayloadTooLarge(Exception):
    """One activity/workflow payload in the request is over `MAX_PAYLOAD_BYTES`."""

    def __init__(self, field: str, size: int) -> None:
        super().__init__(
            f"{field} is {size} bytes of JSON; a payload may be at most "
            f"{MAX_PAYLOAD_BYTES} bytes (2 MiB)"
        )
        self.field = field
        self.size = size


def json_size(value: Any) -> int:
    """Bytes of the compact UTF-8 JSON encoding of `value`."""
    if value is None:
        return 4
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())


def check_payload(request: Request | Scope, fields: Iterable[tuple[str, Any]]) -> None:
    """Raise `PayloadTooLarge` for the first (field, value) over the limit.

    A payload's compact encoding is never longer than its text inside the body, so a
    body under the limit (the common case) skips the measuring entirely.
    """
    scope = request.scope if isinstance(request, Request) else request
    if scope.get(BODY_SIZE_SCOPE_KEY, MAX_BODY_BYTES) <= MAX_PAYLOAD_BYTES:
        return
    for field, value in fields:
        size = json_size(value)
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(field, size)


def _dotted(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie") and len(parts) > 1:
        parts = parts[1:]
    return ".".join(parts)


def validation_problem(errors: Sequence[Any], *, in_body: bool = False) -> Response:
    """A 400 (malformed JSON) or 422 Problem from pydantic/FastAPI error dicts.

    `in_body`: the locations come from validating the body alone (no `body` prefix).
    """
    if not errors:
        return problem(422, "ValidationError", "the request is invalid")
    first = errors[0]
    if first.get("type") == "json_invalid":
        ctx = first.get("ctx") or {}
        return problem(
            400, "InvalidJSON", f"the body is not valid JSON: {ctx.get('error', 'decode error')}"
        )

    def where(error: Any) -> str:
        loc = tuple(error.get("loc", ()))
        return _dotted(("body", *loc) if in_body else loc)

    messages = [f"{where(e) or 'body'}: {e.get('msg', 'invalid')}" for e in errors]
    return problem(422, "ValidationError", "; ".join(messages[:10]), where(first) or None)


def engine_problem(exc: EngineError) -> Response:
    status = ENGINE_ERROR_STATUS.get(type(exc), 422)
    return problem(status, exc.reason, exc.message, exc.field)


def auth_error_problem(exc: AuthError) -> Response:
    response = problem(exc.status, exc.error, exc.message, exc.field)
    if exc.status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="tether"'
    return response


def payload_problem(exc: PayloadTooLarge) -> Response:
    return problem(413, "PayloadTooLarge", str(exc), exc.field)


async def _on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return validation_problem(list(exc.errors()))


async def _on_engine_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EngineError)
    return engine_problem(exc)


async def _on_auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    refused = getattr(request.app.state, "refused", None)
    if refused is not None:
        refused(exc.error)
    return auth_error_problem(exc)


async def _on_payload_too_large(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PayloadTooLarge)
    return payload_problem(exc)


async def _on_run_not_started(request: Request, exc: Exception) -> Response:
    return problem(504, "RunNotStarted", str(exc))


async def _on_store_error(request: Request, exc: Exception) -> Response:
    """Reading stored history (a forgotten run's, a large result) met the store down."""
    if isinstance(exc, StoreUnavailable):
        return problem(503, "StoreUnavailable", f"{exc}; retry once the history store is back")
    return problem(500, type(exc).__name__, str(exc))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "Error"
    error = "".join(word.capitalize() for word in phrase.replace("-", " ").split())
    response = problem(exc.status_code, error, str(exc.detail))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(EngineError, _on_engine_error)
    app.add_exception_handler(PayloadTooLarge, _on_payload_too_large)
    app.add_exception_handler(AuthError, _on_auth_error)
    app.add_exception_handler(RunNotStarted, _on_run_not_started)
    app.add_exception_handler(StoreError, _on_store_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)


class GuardMiddleware:
    """Outermost ASGI layer: body-size limit before parsing, and a 500 for surprises.

    The body is read here (refusing it as soon as it passes `max_body`, or at once if
    Content-Length says so) and replayed to the app; its size is left in the scope.
    An exception escaping the app is logged and answered with a 500 Problem, and
    does not propagate to the server.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body: int = MAX_BODY_BYTES,
        fast_path: FastPath | None = None,
        served: Served | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.fast_path = fast_path
        self.served = served

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body:
                    await self._too_large(scope, receive, send, declared)
                    return
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    await self._too_large(scope, receive, send, size)
                    return
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        scope[BODY_SIZE_SCOPE_KEY] = size
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if self.fast_path is None or not await self.fast_path(
                scope, body, replay, tracking_send
            ):
                await self.app(scope, replay, tracking_send)
        except Exception:
            logger.exception(
                "unhandled error serving %s %s", scope.get("method"), scope.get("path")
            )
            if not started:
                await problem(
                    500,
                    "InternalError",
                    "the scheduler failed to handle the request; "
                    "it is logged and the scheduler keeps running",
                )(scope, replay, send)
        finally:
            if self.served is not None:
                self.served(scope["method"], route_of(scope), time.perf_counter() - began)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        response = problem(
            413,
            "BodyTooLarge",
            f"the request body is {size} bytes or more; the limit is {self.max_body} bytes",
        )
        response.headers["connection"] = "close"
        await response(scope, receive, send)
