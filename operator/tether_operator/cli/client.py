"""A small synchronous HTTP client for the scheduler's client API (`/v1/runs`, `/v1/workers`).

Every failure is turned into a `CliError` whose message is the one line the CLI
prints: an unreachable scheduler, a `Problem` body from the server, a response
that is not what the protocol promises. Tests pass an `httpx.MockTransport`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from worker_runtime.protocol import (
    API_PREFIX,
    History,
    Problem,
    RunList,
    RunView,
    ScheduleList,
    ScheduleView,
    StartRunRequest,
    TriggeredRun,
    WorkerList,
    WorkflowList,
)

DEFAULT_SERVER = "http://127.0.0.1:7233"
"""Where `tether dev` listens unless told otherwise."""

ModelT = TypeVar("ModelT", bound=BaseModel)
FOLLOW_TRIES = 5
"""How many servers a call with `follow` tries before it gives up."""


class CliError(Exception):
    """A failure the CLI reports as one `error: ...` line on stderr (exit code 1)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        """The scheduler's HTTP status, when it answered with an error."""


def format_problem(status: int, body: bytes) -> str:
    """Turn an error response into one readable line, using the `Problem` body when present."""
    try:
        problem = Problem.model_validate_json(body)
    except ValidationError:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")
        if len(text) > 200:
            text = text[:200] + "..."
        return f"the scheduler answered HTTP {status}" + (f": {text}" if text else "")
    message = problem.message or problem.error
    if problem.field:
        message += f" (field: {problem.field})"
    return message


class SchedulerClient:
    """Calls the scheduler's HTTP API and returns protocol models.

    `server` is the base URL (no `/v1`); `token`, if given, is sent as a bearer token
    (a scheduler on Kubernetes checks it); `transport` replaces the network in tests.
    `follow`, if given, returns a new base URL when the server cannot be reached or a
    standby answers (503: the leader changed); the call is then sent again there (a
    request that may have reached the old server is not).
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
        follow: Callable[[], str] | None = None,
    ) -> None:
        self._timeout = timeout
        self._transport = transport
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        self._follow = follow
        self._connect(server)

    def _connect(self, server: str) -> None:
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server + API_PREFIX,
            timeout=self._timeout,
            transport=self._transport,
            headers=self._headers,
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def __enter__(self) -> SchedulerClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ API calls

    def start_run(self, request: StartRunRequest) -> RunView:
        """POST /v1/runs: start a run and return its first view."""
        body = request.model_dump(mode="json", exclude_none=True)
        return self._call("POST", "/runs", RunView, json=body)

    def get_run(self, run_id: str) -> RunView:
        """GET /v1/runs/{id}."""
        return self._call("GET", f"/runs/{run_id}", RunView)

    def list_runs(self) -> RunList:
        """GET /v1/runs."""
        return self._call("GET", "/runs", RunList)

    def wait_run(self, run_id: str, timeout: float) -> RunView:
        """GET /v1/runs/{id}/wait: the view once terminal, or the current one after `timeout` s."""
        return self._call(
            "GET",
            f"/runs/{run_id}/wait",
            RunView,
            params={"timeout": timeout},
            read_timeout=timeout + self._timeout,
        )

    def cancel_run(self, run_id: str) -> RunView:
        """POST /v1/runs/{id}/cancel."""
        return self._call("POST", f"/runs/{run_id}/cancel", RunView)

    def history(self, run_id: str) -> History:
        """GET /v1/runs/{id}/history."""
        return self._call("GET", f"/runs/{run_id}/history", History)

    def list_workers(self) -> WorkerList:
        """GET /v1/workers."""
        return self._call("GET", "/workers", WorkerList)

    def list_workflows(self) -> WorkflowList:
        """GET /v1/workflows: registered workflows and activities, with input schemas."""
        return self._call("GET", "/workflows", WorkflowList)

    def list_schedules(self) -> ScheduleList:
        """GET /v1/schedules: every schedule the caller may list."""
        return self._call("GET", "/schedules", ScheduleList)

    def trigger_schedule(self, namespace: str, name: str) -> TriggeredRun:
        """POST /v1/schedules/{ns}/{name}/trigger: start one run now."""
        return self._call("POST", f"/schedules/{namespace}/{name}/trigger", TriggeredRun)

    def suspend_schedule(self, namespace: str, name: str, suspend: bool) -> ScheduleView:
        """POST /v1/schedules/{ns}/{name}/suspend (or /resume)."""
        verb = "suspend" if suspend else "resume"
        return self._call("POST", f"/schedules/{namespace}/{name}/{verb}", ScheduleView)

    def worker_lost(self, worker_id: str, reason: str, message: str) -> None:
        """POST /v1/workers/{id}/lost: the process or pod behind a worker is gone."""
        self._request(
            "POST", f"/workers/{worker_id}/lost", json={"reason": reason, "message": message}
        )

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: str,
        path: str,
        model: type[ModelT],
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> ModelT:
        response = self._request(method, path, json=json, params=params, read_timeout=read_timeout)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise CliError(
                f"unexpected answer from {method} {API_PREFIX}{path}: {where}: {first['msg']}"
            ) from None

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        read_timeout: float | None = None,
    ) -> httpx.Response:
        timeout = httpx.Timeout(self._timeout, read=read_timeout or self._timeout)
        for _ in range(FOLLOW_TRIES if self._follow is not None else 1):
            try:
                response = self._http.request(
                    method, path, json=json, params=params, timeout=timeout
                )
            except httpx.HTTPError as exc:
                # A connection never made carried nothing: safe to send again, POST too.
                again = isinstance(exc, httpx.ConnectError) or method == "GET"
                if self._follow is None or not again:
                    raise self._unreachable(exc) from None
                self._move()
                continue
            if response.status_code == 503 and self._follow is not None:
                self._move()  # a standby answered: the leader changed
                continue
            if response.status_code >= 400:
                raise CliError(
                    format_problem(response.status_code, response.content), response.status_code
                )
            return response
        raise CliError(f"no leading Tether scheduler answered in {FOLLOW_TRIES} tries")

    def _move(self) -> None:
        """Reach the server `follow` names now (the new leader)."""
        assert self._follow is not None
        self._http.close()
        self._connect(self._follow())

    def _unreachable(self, exc: httpx.HTTPError) -> CliError:
        if isinstance(exc, httpx.ConnectError):
            return CliError(
                f"cannot reach the Tether scheduler at {self.server}"
                " — is `tether dev FILE` running?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return CliError(f"the Tether scheduler at {self.server} did not answer in time")
        return CliError(f"cannot talk to the Tether scheduler at {self.server}: {exc}")
