"""HTTP client of the scheduler API (``/v1``), for workers and for clients of runs.

Every request goes through one `SchedulerTransport.request_raw`: by default a
`FastTransport` (plain HTTP/1.1 keep-alive); pass ``transport`` (an
``httpx.ASGITransport``, an ``httpx.MockTransport``, ...) to talk to an in-process
scheduler through the same code path.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import httpx
from pydantic import BaseModel

from .credentials import StaticToken, TokenSource, token_from_env
from .errors import SchedulerRequestError, SchedulerUnavailableError, WorkflowFailedError
from .protocol import (
    API_PREFIX,
    History,
    PollResponse,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReportResponse,
    RunList,
    RunView,
    StartRunRequest,
    StickyName,
    WhoAmI,
    WorkerDrainingRequest,
    WorkerHeartbeat,
    WorkerList,
)
from .transport import Origin, scheduler_transport

M = TypeVar("M", bound=BaseModel)

DEFAULT_SCHEDULER_URL = "http://127.0.0.1:7233"
_JSON_PAIRS = [("content-type", "application/json")]
CONNECT_TIMEOUT = 2.0
"""Seconds to connect: a SYN sent where a Service still routes to a scheduler that is
gone is never answered, and a new connection is routed afresh."""
REGISTER_TIMEOUT = 10.0
"""Seconds to wait for a registration's answer: while a worker registers, it neither
heartbeats nor reports, so a request hung on a dead connection must not hold it long."""
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def run_result(view: RunView, waited: float) -> Any:
    """The result of a run that waited `waited` s to end: raises `WorkflowFailedError` if it
    failed or was cancelled, `TimeoutError` if it has not ended yet."""
    if view.phase == "Succeeded":
        return view.result
    if view.phase in ("Failed", "Cancelled"):
        error = view.error
        raise WorkflowFailedError(
            view.run_id,
            cause_type=error.type if error else view.phase,
            message=error.message if error else f"run {view.phase.lower()}",
            reason=error.reason if error else view.phase,
        )
    raise TimeoutError(f"run {view.run_id!r} still {view.phase} after {waited:g}s")


class SchedulerClient:
    """Typed calls to the scheduler. Raises ``SchedulerUnavailableError`` when it cannot
    be reached (or answers 5xx) and ``SchedulerRequestError`` when it rejects a request.

    Every request carries ``Authorization: Bearer`` with ``token`` (a string, or a
    `TokenSource` such as a `TokenFile` the kubelet rotates); by default the token
    comes from ``TETHER_TOKEN`` or the file ``TETHER_TOKEN_FILE`` names, if set.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_SCHEDULER_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
        token: str | TokenSource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = Origin.of(self.base_url)
        self._prefix = urlsplit(self.base_url).path + API_PREFIX
        self._transport = scheduler_transport(transport)
        self._timeout, self._connect_timeout = timeout, CONNECT_TIMEOUT
        self._headers = list((headers or {}).items())
        self._json_headers = self._headers + _JSON_PAIRS
        self._token = StaticToken(token) if isinstance(token, str) else token or token_from_env()

    async def aclose(self) -> None:
        """Close the transport (its connection pool)."""
        await self._transport.aclose()

    def reset_connections(self) -> None:
        """Forget every open connection (`SchedulerTransport.reset`): the scheduler
        behind the URL changed."""
        self._transport.reset()

    async def __aenter__(self) -> SchedulerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ plumbing

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        read_timeout: float | None = None,
        connect_timeout: float | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """Send one request; return the response body or raise a typed error."""
        if isinstance(body, BaseModel):
            content: bytes | None = body.model_dump_json().encode()
        elif body is None:
            content = None
        else:
            content = _encode(body).encode()
        target = quote(self._prefix + path, safe="/:@")
        if params:
            target += "?" + urlencode(params)
        sent = self._json_headers if content is not None else self._headers
        if self._token is not None and (bearer := self._token.current()):
            sent = [*sent, ("authorization", f"Bearer {bearer}")]
        if headers:
            sent = sent + list(headers.items())
        try:
            status, _, data = await self._transport.request_raw(
                method,
                self._origin,
                target,
                content,
                sent,
                connect_timeout=(
                    connect_timeout if connect_timeout is not None else self._connect_timeout
                ),
                read_timeout=read_timeout if read_timeout is not None else self._timeout,
            )
        except httpx.TransportError as exc:
            raise SchedulerUnavailableError(
                f"cannot reach the scheduler at {self.base_url}: {exc or type(exc).__name__}"
            ) from exc
        if status >= 400:
            raise _problem(status, data, method, path)
        return data

    async def _call(self, model: type[M], method: str, path: str, body: Any = None, **kw: Any) -> M:
        return model.model_validate_json(await self.request(method, path, body, **kw))

    # ------------------------------------------------------------------ workers

    async def register(self, request: RegisterWorkerRequest) -> RegisterWorkerResponse:
        """POST /v1/workers."""
        return await self._call(
            RegisterWorkerResponse, "POST", "/workers", request, read_timeout=REGISTER_TIMEOUT
        )

    async def poll(
        self, worker_id: str, max_tasks: int, wait: float, incarnation: str | None = None
    ) -> PollResponse:
        """POST /v1/workers/{id}/poll (long-poll up to ``wait`` seconds)."""
        body: dict[str, Any] = {"max_tasks": max(1, max_tasks), "wait": wait}
        if incarnation is not None:
            body["incarnation"] = incarnation
        return await self._call(
            PollResponse, "POST", f"/workers/{worker_id}/poll", body, read_timeout=wait + 15.0
        )

    async def heartbeat(
        self,
        worker_id: str,
        beat: WorkerHeartbeat | None = None,
        *,
        give_up_after: float | None = None,
    ) -> None:
        """POST /v1/workers/{id}/heartbeat: liveness, and the tasks the worker holds.

        `give_up_after` bounds connecting and reading: a heartbeat stuck on a connection to a
        scheduler that is gone (a deleted pod's address) must fail fast, so the next one
        reaches its successor before the worker counts as silent.
        """
        await self.request(
            "POST",
            f"/workers/{worker_id}/heartbeat",
            beat or {},
            read_timeout=give_up_after,
            connect_timeout=give_up_after,
        )

    async def drain(
        self, worker_id: str, request: WorkerDrainingRequest, *, give_up_after: float = 5.0
    ) -> None:
        """POST /v1/workers/{id}/drain: this worker is going away (it got SIGTERM)."""
        await self.request(
            "POST",
            f"/workers/{worker_id}/drain",
            request,
            read_timeout=give_up_after,
            connect_timeout=give_up_after,
        )

    async def report(self, worker_id: str, report: dict[str, Any]) -> ReportResponse:
        """POST /v1/workers/{id}/report with a ``ReportRequest``-shaped dict."""
        return await self._call(ReportResponse, "POST", f"/workers/{worker_id}/report", report)

    async def list_workers(self) -> WorkerList:
        """GET /v1/workers."""
        return await self._call(WorkerList, "GET", "/workers")

    async def whoami(self, worker_id: str | None = None) -> WhoAmI:
        """GET /v1/workflows/workers/whoami."""
        return await self._call(
            WhoAmI,
            "GET",
            "/workflows/workers/whoami",
            headers={"X-Tether-Worker": worker_id} if worker_id else None,
        )

    # ------------------------------------------------------------------ runs

    async def start_run(
        self,
        workflow: str,
        input: Any = None,
        *,
        run_id: str | None = None,
        sticky: StickyName | None = None,
        schedule_timeout: float | None = None,
    ) -> RunView:
        """POST /v1/runs: start a run of ``workflow``."""
        request = StartRunRequest(workflow=workflow, input=input, run_id=run_id, sticky=sticky)
        if schedule_timeout is not None:
            request.schedule_timeout = schedule_timeout
        return await self._call(RunView, "POST", "/runs", request)

    async def get_run(self, run_id: str) -> RunView:
        """GET /v1/runs/{id}."""
        return await self._call(RunView, "GET", f"/runs/{run_id}")

    async def list_runs(self) -> RunList:
        """GET /v1/runs."""
        return await self._call(RunList, "GET", "/runs")

    async def wait_run(self, run_id: str, wait: float = 60.0) -> RunView:
        """GET /v1/runs/{id}/wait: the run once terminal, or its current view after ``wait`` s."""
        return await self._call(
            RunView,
            "GET",
            f"/runs/{run_id}/wait",
            params={"timeout": wait},
            read_timeout=wait + 15.0,
        )

    async def history(self, run_id: str) -> History:
        """GET /v1/runs/{id}/history."""
        return await self._call(History, "GET", f"/runs/{run_id}/history")

    async def cancel_run(self, run_id: str) -> RunView:
        """POST /v1/runs/{id}/cancel."""
        return await self._call(RunView, "POST", f"/runs/{run_id}/cancel", {})

    async def result(self, run_id: str, wait: float = 60.0) -> Any:
        """Wait for a run and return its result; ``WorkflowFailedError`` if it failed."""
        return run_result(await self.wait_run(run_id, wait), wait)

    async def execute(self, workflow: str, input: Any = None, *, wait: float = 60.0) -> Any:
        """Start a run and return its result (``WorkflowFailedError`` if it fails)."""
        view = await self.start_run(workflow, input)
        return await self.result(view.run_id, wait)


def _problem(status: int, body: bytes, method: str, path: str) -> Exception:
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {}
    error = str(data.get("error") or httpx.codes.get_reason_phrase(status) or "Error")
    message = str(
        data.get("message") or data.get("detail") or body[:500].decode("utf-8", "replace")
    )
    if status >= 500:
        return SchedulerUnavailableError(
            f"scheduler error {status} on {method} {API_PREFIX}{path}: {message}"
        )
    field = data.get("field")
    return SchedulerRequestError(
        status,
        error,
        message,
        field if isinstance(field, str) else None,
        problem="error" in data,
    )
