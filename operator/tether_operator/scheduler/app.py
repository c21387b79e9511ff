"""The scheduler's HTTP API (FastAPI), a thin layer over `SchedulerService`.

Request and response types are the protocol models, so `/openapi.json` documents
every message. The worker hot path (register, poll, report, heartbeat) answers with
pre-serialised JSON built from the engine's plain dicts: no response-model round
trip per request. Client endpoints (runs, workers) let FastAPI validate responses
against the protocol views, which keeps the engine honest about their shape.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Body, FastAPI, Header, Path, Query, Request
from starlette.responses import Response

from tether_operator.engine import TERMINAL_PHASES, InvalidCommand
from tether_operator.scheduler import worker_calls
from tether_operator.scheduler.auth import (
    AuthMiddleware,
    Gate,
    Principal,
    Unauthenticated,
    principal_of,
)
from tether_operator.scheduler.fastpath import WorkerFastPath, report_payloads
from tether_operator.scheduler.problems import (
    GuardMiddleware,
    check_payload,
    install_error_handlers,
)
from tether_operator.scheduler.schedule_routes import add_schedule_routes
from tether_operator.scheduler.service import (
    SchedulerService,
    run_of_task,
)
from tether_operator.scheduler.ui import mount_ui
from tether_types.views import RunViewData, progress_counts
from worker_runtime.protocol import (
    API_PREFIX,
    ActivityCompletion,
    ActivityHeartbeat,
    History,
    PollRequest,
    PollResponse,
    Problem,
    RegisterWorkerRequest,
    RegisterWorkerResponse,
    ReportRequest,
    ReportResponse,
    RunList,
    RunPhase,
    RunSummaryList,
    RunView,
    StartRunRequest,
    WhoAmI,
    WorkerDrainingRequest,
    WorkerHeartbeat,
    WorkerList,
    WorkerLostRequest,
    WorkflowList,
)

__all__ = ["WORKER_HEADER", "create_app"]

WORKER_HEADER = "X-Tether-Worker"

_ERRORS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "Body or a payload too large"},
    422: {"model": Problem, "description": "Validation error; `field` names the location"},
    500: {"model": Problem, "description": "Unexpected error (logged)"},
}
_WORKER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": Problem, "description": "Unknown worker: register again"},
    409: {"model": Problem, "description": "A newer process took this worker id: stop"},
}
_RUN_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": Problem, "description": "Unknown run (named in the message)"},
}

_dumps = json.JSONEncoder(separators=(",", ":")).encode


def _json(content: Any, status_code: int = 200) -> Response:
    return Response(_dumps(content), status_code=status_code, media_type="application/json")


_EMPTY = b"{}"


def _empty() -> Response:
    return Response(_EMPTY, media_type="application/json")


WorkerId = Annotated[str, Path(min_length=1, max_length=253, description="The worker's id.")]
RunId = Annotated[str, Path(min_length=1, description="The run's id.")]


Item = TypeVar("Item", bound=Mapping[str, Any])


def _connected(request: Request) -> worker_calls.StillConnected:
    async def connected() -> bool:
        return not await request.is_disconnected()

    return connected


def create_app(
    service: SchedulerService,
    *,
    manage_lifecycle: bool = True,
    fast_path: bool = True,
    gate: Gate | None = None,
    run_namespace: Callable[[str], str] | None = None,
) -> FastAPI:
    """The HTTP API over `service`. With `manage_lifecycle`, the app's lifespan
    starts the service (and recovers stored runs) and stops it. With `fast_path`,
    worker poll/report/heartbeat bypass FastAPI's routing (same behaviour, less
    overhead; see `fastpath.py`). With `gate`, every request but the probes must
    carry a token it accepts, and may do only what it allows (see `auth.py`);
    without it the API is open (dev mode binds loopback). `run_namespace` gives a run
    id's namespace (default: the gate's rule, else the service's one namespace). The run
    timeline page is served at `/ui/` (`scheduler.ui`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage_lifecycle:
            await service.start()
            await service.recover()
        try:
            yield
        finally:
            if manage_lifecycle:
                await service.stop()

    app = FastAPI(
        title="Tether scheduler",
        version="v1",
        description="Task dispatch for Tether workers and run control for clients.",
        lifespan=lifespan,
        # FastAPI's OpenTelemetry hooks ask for the global providers on every request,
        # workers' polls included; Tether exports no OTel spans or metrics.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.service = service
    namespace_of_run = run_namespace or (
        gate.run_namespace if gate is not None else lambda _run_id: service.namespace
    )
    install_error_handlers(app)
    app.state.refused = service.metrics.refused
    app.add_middleware(
        GuardMiddleware,
        fast_path=WorkerFastPath(service) if fast_path else None,
        served=service.metrics.served,
    )
    if gate is not None:  # outermost: before the body is read
        app.add_middleware(AuthMiddleware, gate=gate, refused=service.metrics.refused)

    def caller(request: Request) -> Principal | None:
        """Who sent the request (None without a gate); fails closed if the gate's
        middleware did not run."""
        principal = principal_of(request.scope)
        if gate is not None and principal is None:
            raise Unauthenticated("the request was not authenticated")
        return principal

    async def allow(request: Request, verb: str, resource: str, namespace: str | None) -> None:
        """Raise `Forbidden` unless the caller may `verb` `resource` (no gate: anyone may)."""
        principal = caller(request)
        if gate is not None and principal is not None:
            await gate.require(principal, verb, resource, namespace)

    async def visible(
        request: Request,
        resource: str,
        items: list[Item],
        namespace_of: Callable[[Item], str],
    ) -> list[Item]:
        """The `items` of namespaces where the caller may list `resource` (all without a
        gate): a caller with rights in one namespace sees nothing of another's."""
        principal = caller(request)
        if gate is None or principal is None:
            return items
        namespaces = [namespace_of(item) for item in items]
        shown = await gate.allowed_namespaces(principal, "list", resource, namespaces)
        return [item for item, ns in zip(items, namespaces, strict=True) if ns in shown]

    async def allow_run(request: Request, verb: str, run_id: str) -> None:
        if gate is not None:
            await allow(request, verb, "workflowruns", gate.run_namespace(run_id))

    def run_namespace_of(run: RunViewData) -> str:
        return namespace_of_run(run["run_id"])

    def assigned(request: Request, worker_id: str, task_ids: list[str]) -> None:
        """An authenticated worker reports only tasks dispatched to it."""
        if caller(request) is not None:
            service.check_assigned(worker_id, task_ids)

    # -------------------------------------------------------------- workers

    @app.post(
        f"{API_PREFIX}/workers",
        response_model=RegisterWorkerResponse,
        responses=_ERRORS,
        tags=["workers"],
        summary="Register a worker process",
    )
    async def register_worker(request: Request, req: RegisterWorkerRequest) -> Response:
        principal = caller(request)
        if gate is not None and principal is not None:
            await gate.check_registration(principal, req)
            if principal.pod is not None:  # it serves its own pod's namespace, always
                req = req.model_copy(update={"namespace": principal.pod.namespace})
        return _json(service.register_worker(req))

    @app.post(
        f"{API_PREFIX}/workers/{{worker_id}}/poll",
        response_model=PollResponse,
        responses=_WORKER_ERRORS,
        tags=["workers"],
        summary="Long-poll for tasks",
    )
    async def poll(request: Request, worker_id: WorkerId, req: PollRequest) -> Response:
        return _json(await worker_calls.poll(service, worker_id, req, _connected(request)))

    @app.post(
        f"{API_PREFIX}/workers/{{worker_id}}/heartbeat",
        response_model=dict[str, Any],
        responses=_WORKER_ERRORS,
        tags=["workers"],
        summary="Worker liveness",
    )
    async def worker_heartbeat(
        worker_id: WorkerId, beat: Annotated[WorkerHeartbeat | None, Body()] = None
    ) -> Response:
        service.heartbeat(worker_id, beat)
        return _empty()

    @app.post(
        f"{API_PREFIX}/workers/{{worker_id}}/report",
        response_model=ReportResponse,
        responses=_WORKER_ERRORS,
        tags=["workers"],
        summary="Report completions, activity heartbeats and workflow commands",
    )
    async def report(request: Request, worker_id: WorkerId, req: ReportRequest) -> Response:
        check_payload(request, report_payloads(req))
        answer = await worker_calls.report(
            service,
            worker_id,
            req,
            check_owner=caller(request) is not None,
            still_connected=_connected(request),
        )
        if answer is None:  # gone while its report was stored: its tasks stay queued
            return Response(status_code=499)
        return _json(answer)

    @app.post(
        f"{API_PREFIX}/workers/{{worker_id}}/lost",
        response_model=dict[str, Any],
        responses=_WORKER_ERRORS,
        tags=["workers"],
        summary="Declare a worker's process or pod gone",
    )
    async def worker_lost(
        worker_id: WorkerId, req: Annotated[WorkerLostRequest | None, Body()] = None
    ) -> Response:
        req = req or WorkerLostRequest()
        service.worker_lost(worker_id, req.reason, req.message)
        return _empty()

    @app.post(
        f"{API_PREFIX}/workers/{{worker_id}}/drain",
        response_model=dict[str, Any],
        responses=_WORKER_ERRORS,
        tags=["workers"],
        summary="A worker is going away: break its sessions, give it no new tasks",
    )
    async def worker_draining(
        worker_id: WorkerId, req: Annotated[WorkerDrainingRequest | None, Body()] = None
    ) -> Response:
        req = req or WorkerDrainingRequest()
        service.worker_draining(
            worker_id, req.reason, req.message, incarnation=req.incarnation, held=req.tasks
        )
        return _empty()

    @app.get(
        f"{API_PREFIX}/workers",
        response_model=WorkerList,
        tags=["workers"],
        summary="Every known worker",
    )
    async def list_workers(request: Request) -> dict[str, Any]:
        workers = service.workers()
        return {"workers": await visible(request, "workerpools", workers, _namespace)}

    @app.get(
        f"{API_PREFIX}/workflows",
        response_model=WorkflowList,
        tags=["workflows"],
        summary="Registered workflows and activities, with their input schemas",
    )
    async def list_workflows(request: Request) -> dict[str, Any]:
        registered = service.registered()
        return {
            kind: await visible(request, "workflows", items, _namespace)
            for kind, items in registered.items()
        }

    @app.get(
        f"{API_PREFIX}/workflows/workers/whoami",
        response_model=WhoAmI,
        tags=["workers"],
        summary="Which scheduler this is, as the calling worker sees it",
    )
    async def whoami(
        x_tether_worker: Annotated[str | None, Header(alias=WORKER_HEADER)] = None,
    ) -> WhoAmI:
        return WhoAmI(
            scheduler_url=service.scheduler_url,
            namespace=service.namespace,
            tls=service.scheduler_url.startswith("https"),
            worker_id=x_tether_worker,
        )

    # -------------------------------------------------------------- tasks

    def _same_task(path_id: str, body_id: str) -> None:
        if path_id != body_id:
            raise InvalidCommand(
                f"task_id {body_id!r} in the body differs from {path_id!r} in the path",
                field="task_id",
            )

    @app.post(
        f"{API_PREFIX}/tasks/{{task_id:path}}/complete",
        response_model=ReportResponse,
        responses=_WORKER_ERRORS,
        tags=["tasks"],
        summary="Complete one activity attempt",
    )
    async def complete_task(
        request: Request,
        task_id: str,
        completion: ActivityCompletion,
        worker_id: Annotated[str, Header(alias=WORKER_HEADER, min_length=1)],
    ) -> Response:
        _same_task(task_id, completion.task_id)
        check_payload(request, [("result", completion.result)])
        assigned(request, worker_id, [task_id])
        result = service.complete_task(worker_id, completion)
        if (written := service.written([run_of_task(task_id)])) is not None:
            await written
        return _json(result)

    @app.post(
        f"{API_PREFIX}/tasks/{{task_id:path}}/heartbeat",
        response_model=ReportResponse,
        responses=_WORKER_ERRORS,
        tags=["tasks"],
        summary="Heartbeat one activity attempt",
    )
    async def heartbeat_task(
        request: Request,
        task_id: str,
        heartbeat: ActivityHeartbeat,
        worker_id: Annotated[str, Header(alias=WORKER_HEADER, min_length=1)],
    ) -> Response:
        _same_task(task_id, heartbeat.task_id)
        check_payload(request, [("details", heartbeat.details)])
        assigned(request, worker_id, [task_id])
        return _json(service.heartbeat_task(worker_id, heartbeat))

    # -------------------------------------------------------------- runs

    @app.post(
        f"{API_PREFIX}/runs",
        response_model=RunView,
        status_code=201,
        responses={
            **_ERRORS,
            404: {"model": Problem, "description": "No worker registered the workflow"},
            409: {"model": Problem, "description": "The run id is taken"},
            504: {
                "model": Problem,
                "description": "Operator: the WorkflowRun was created but did not start in time",
            },
        },
        tags=["runs"],
        summary="Start a run",
        description="On the operator the run becomes a WorkflowRun (`<namespace>.<name>` "
        "run ids; docs/operator.md); the answer comes once it started and its first history "
        "is stored.",
    )
    async def start_run(request: Request, req: StartRunRequest) -> RunViewData:
        check_payload(request, [("input", req.input)])
        if gate is None:
            return await service.start_requested_run(req)
        namespace = req.namespace or gate.run_namespace(req.run_id or "")
        await allow(request, "create", "workflowruns", namespace)
        return await service.start_requested_run(req, namespace)

    @app.get(
        f"{API_PREFIX}/runs",
        response_model=RunList | RunSummaryList,
        tags=["runs"],
        summary="Every run the caller may list, oldest first",
        description="`view=summary` answers with `RunSummary` items, as `kubectl get "
        "workflowruns` lists them (no input, result or steps): what a list page needs.",
    )
    async def list_runs(
        request: Request,
        namespace: Annotated[str | None, Query(description="Only this namespace's runs.")] = None,
        workflow: Annotated[str | None, Query(description="Only this workflow's runs.")] = None,
        phase: Annotated[RunPhase | None, Query(description="Only runs in this phase.")] = None,
        view: Annotated[Literal["full", "summary"], Query(description="Item shape.")] = "full",
    ) -> Response:
        runs = [
            run
            for run in await service.find_runs()
            if (workflow is None or run["workflow"] == workflow)
            and (phase is None or run["phase"] == phase)
            and (namespace is None or run_namespace_of(run) == namespace)
        ]
        if gate is not None:
            runs = await visible(request, "workflowruns", runs, run_namespace_of)
        if view == "summary":
            return _json({"runs": [run_summary(run, run_namespace_of(run)) for run in runs]})
        return _json({"runs": runs})

    @app.get(
        f"{API_PREFIX}/runs/{{run_id}}",
        response_model=RunView,
        responses={**_RUN_ERRORS, 304: {"description": "Unchanged since the `ETag` sent"}},
        tags=["runs"],
        summary="One run",
        description="The answer carries an `ETag`; sent back in `If-None-Match`, it gets a "
        "304 while the run is unchanged (how the run page polls a live run cheaply).",
    )
    async def get_run(request: Request, run_id: RunId) -> Response:
        await allow_run(request, "get", run_id)
        sent = request.headers.get("if-none-match")
        version = service.run_version(run_id)  # a held run: no view built to say "unchanged"
        if version is not None and sent == version:
            return Response(status_code=304, headers={"ETag": version})
        body = _dumps(await service.find_run(run_id)).encode()
        etag = version or '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
        if sent == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(body, media_type="application/json", headers={"ETag": etag})

    @app.get(
        f"{API_PREFIX}/runs/{{run_id}}/wait",
        response_model=RunView,
        responses=_RUN_ERRORS,
        tags=["runs"],
        summary="Wait until the run ends (or `timeout` passes) and return it",
    )
    async def wait_run(
        request: Request,
        run_id: RunId,
        timeout: Annotated[  # noqa: ASYNC109 - the documented query parameter
            float, Query(ge=0, le=3600, description="Seconds to wait.")
        ] = 30.0,
    ) -> RunViewData:
        await allow_run(request, "get", run_id)
        view = await service.wait_run(run_id, timeout)
        finished = view["phase"] in TERMINAL_PHASES
        # A finished run is reported finished once its end is stored.
        if finished and (written := service.written([run_id])) is not None:
            await written
        return view

    @app.get(
        f"{API_PREFIX}/runs/{{run_id}}/history",
        response_model=History,
        responses=_RUN_ERRORS,
        tags=["runs"],
        summary="The run's recorded history",
    )
    async def history(request: Request, run_id: RunId) -> dict[str, Any]:
        await allow_run(request, "get", run_id)
        return {"run_id": run_id, "events": await service.stored_history(run_id)}

    @app.post(
        f"{API_PREFIX}/runs/{{run_id}}/cancel",
        response_model=RunView,
        responses=_RUN_ERRORS,
        tags=["runs"],
        summary="Cancel a run",
    )
    async def cancel_run(request: Request, run_id: RunId) -> RunViewData:
        await allow_run(request, "delete", run_id)
        view = service.cancel_run(run_id)
        if (written := service.written([run_id])) is not None:
            await written
        return view

    @app.get("/healthz", response_model=dict[str, bool], tags=["health"], summary="Liveness")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    add_schedule_routes(app, service, allow, visible)
    mount_ui(app)
    return app


def run_summary(run: RunViewData, namespace: str) -> dict[str, Any]:
    """A `RunSummary` of `run`: its list columns, without input, result or steps."""
    done, total = progress_counts(run)
    return {
        "run_id": run["run_id"],
        "namespace": namespace,
        "workflow": run["workflow"],
        "phase": run["phase"],
        "worker": run["worker"],
        "progress": f"{done}/{total}",
        "sticky": run["sticky"],
        "parent_run_id": run["parent_run_id"],
        "created_at": run["created_at"],
        "finished_at": run["finished_at"],
        "error": run["error"],
        "message": run.get("message"),
    }


def _namespace(view: dict[str, Any]) -> str:
    return str(view.get("namespace", ""))
