"""`tether operator`: kopf watches, the scheduler and its HTTP API, in one process.

Start-up, in this order: load the cluster config; build the `KubeClient` and the
store (`KubernetesRunStore`, or memory for tests); recover the store (every run with
history is rebuilt in the engine); start kopf (its own registry, standalone, no
peering, cluster-wide or the given namespaces, logged in with the same config) and
the HTTP API through the scheduler's one `serve()`. `GET /readyz` answers 200 once
the store is recovered and kopf watches; 503 before. SIGTERM stops accepting
requests, flushes history, status and Events, and exits.

The controller seam. A controller is a function `setup(registry, context)` that
adds its kopf handlers to `registry` (a `kopf.OperatorRegistry`) and may start
background work with `context.spawn(...)`; `context` (`OperatorContext`) hands it
the settings, the `KubeClient`, the `SchedulerService` and the Event recorder.
WorkflowRuns and Workflows are set up here; the WorkerPool controller
(`tether_operator.k8s.pools.setup`) and the node watch (`k8s.nodes.setup`) plug in
the same way, through `CONTROLLERS`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import kopf
from fastapi.responses import JSONResponse

from tether_operator.engine import EngineConfig
from tether_operator.engine.effects import Notice
from tether_operator.k8s import pools
from tether_operator.k8s.auth import KubernetesAuthenticator, run_namespace
from tether_operator.k8s import nodes, pools
from tether_operator.k8s.client import KubeClient, load_config, resource_path
from tether_operator.k8s.events import EventRecorder
from tether_operator.k8s.login import register_login
from tether_operator.k8s.mirror import MarkingStore
from tether_operator.k8s.naming import run_object
from tether_operator.k8s.resources import API_VERSION, GROUP, VERSION
from tether_operator.k8s.runs import RunController
from tether_operator.k8s.store import KubernetesRunStore
from tether_operator.k8s.workflows import WorkflowDirectory, WorkflowPublisher
from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.auth import Gate
from tether_operator.scheduler.server import serve
from tether_operator.scheduler.service import SchedulerService
from tether_operator.scheduler.store import InMemoryRunStore, RunStore
from worker_runtime.protocol import RegisterWorkerRequest

RESTART_GRACE_SECONDS = 30.0
"""How long attempts and sessions of recovered runs wait for their worker to register
again. Workers reach a new operator pod only once it is Ready and the Service's
endpoints follow, seconds after recovery: dev mode's 5 s would retry work that is done."""

WORKER_HEARTBEAT_TIMEOUT_SECONDS = 3.0
"""A worker silent this long is lost. Dev mode's 1 s is too tight for pods reached
through a Service on busy nodes, and a pod that is deleted, evicted or loses its node
is seen at once by the pod watch, not by this timeout."""

__all__ = [
    "CONTROLLERS",
    "OperatorContext",
    "OperatorService",
    "OperatorSettings",
    "run_operator",
]

logger = logging.getLogger("tether.operator")

StoreKind = Literal["kubernetes", "memory"]
AuthKind = Literal["tokenreview", "none"]
AUTH_KINDS: tuple[AuthKind, ...] = ("tokenreview", "none")


def _env_auth() -> AuthKind:
    value = os.environ.get("TETHER_AUTH", "") or "tokenreview"
    for kind in AUTH_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"TETHER_AUTH={value!r}: use one of {', '.join(AUTH_KINDS)}")


def _env_list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in os.environ.get(name, "").split(",") if part.strip())


@dataclass
class OperatorSettings:
    """How the operator runs (flags of `tether operator`, else the environment)."""

    host: str = "0.0.0.0"
    """Address the scheduler's HTTP API listens on."""
    port: int = 7233
    """Port of the scheduler's HTTP API (the Service port)."""
    namespaces: tuple[str, ...] = field(
        default_factory=lambda: _env_list("TETHER_WATCH_NAMESPACES")
    )
    """Namespaces to watch (TETHER_WATCH_NAMESPACES); empty: every namespace."""
    scheduler_url: str = field(default_factory=lambda: os.environ.get("TETHER_SCHEDULER_URL", ""))
    """The URL workers reach the scheduler at (TETHER_SCHEDULER_URL)."""
    operator_namespace: str = field(
        default_factory=lambda: os.environ.get("TETHER_OPERATOR_NAMESPACE", "")
    )
    """The operator's own namespace (TETHER_OPERATOR_NAMESPACE); empty: the config's."""
    pod_name: str = field(default_factory=lambda: os.environ.get("TETHER_POD_NAME", ""))
    """The operator's pod (TETHER_POD_NAME), named in the Events it writes."""
    store: StoreKind = "kubernetes"
    """Where run history lives: `kubernetes` (durable) or `memory` (lost on exit)."""
    auth: AuthKind = field(default_factory=_env_auth)
    """Who may call the scheduler (TETHER_AUTH): `tokenreview` checks every request's
    bearer token with the API server (TokenReview, SubjectAccessReview); `none` serves
    anyone who reaches the port (host-process tests)."""


class OperatorService(SchedulerService):
    """The scheduler service, telling the operator about every worker registration."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.registration_listeners: list[Callable[[RegisterWorkerRequest], None]] = []

    def register_worker(self, req: RegisterWorkerRequest) -> dict[str, Any]:
        response = super().register_worker(req)
        for listener in tuple(self.registration_listeners):
            try:
                listener(req)
            except Exception:
                logger.exception("registration listener %r failed", listener)
        return response


@dataclass
class OperatorContext:
    """What a controller's `setup(registry, context)` is handed."""

    settings: OperatorSettings
    client: KubeClient
    service: OperatorService
    events: EventRecorder
    waiting: Callable[[], Mapping[str, int]] = dict
    """Runs not in the engine yet that wait for a worker, per pool id (autoscaling)."""
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    """Coroutines run beside the HTTP server for the operator's lifetime."""

    def spawn(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work()` for as long as the operator runs (it stops the operator if it ends)."""
        self.background.append(work)


Setup = Callable[[kopf.OperatorRegistry, OperatorContext], object]


CONTROLLERS: list[Setup] = [pools.setup, nodes.setup]
"""Controllers set up beside the WorkflowRun and Workflow handlers."""


class Readiness:
    """`/readyz`: the store is recovered and kopf watches."""

    def __init__(self) -> None:
        self.recovered = False
        self.watching = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self.recovered and self.watching.is_set()


def _make_store(settings: OperatorSettings, client: KubeClient) -> RunStore:
    if settings.store == "memory":
        return InMemoryRunStore()
    return KubernetesRunStore(client, list(settings.namespaces) or None)


def _gate(settings: OperatorSettings, client: KubeClient, service: SchedulerService) -> Gate | None:
    if settings.auth == "none":
        logger.warning("the scheduler's API is open to anyone who reaches it (--auth none)")
        return None

    def alive(worker_id: str) -> bool:
        return any(w["worker_id"] == worker_id and w.get("alive") for w in service.workers())

    return Gate(
        KubernetesAuthenticator(client, namespaces=settings.namespaces),
        run_namespace=run_namespace(service.namespace),
        worker_alive=alive,
    )


def _app(service: SchedulerService, readiness: Readiness, gate: Gate | None) -> Any:
    app = create_app(service, manage_lifecycle=False, gate=gate)

    async def readyz() -> JSONResponse:
        ready = readiness.ready
        body = {
            "ready": ready,
            "recovered": readiness.recovered,
            "watching": readiness.watching.is_set(),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"], summary="Readiness")
    return app


async def _prune_orphans(
    client: KubeClient, service: SchedulerService, restored: list[str], namespaces: Sequence[str]
) -> None:
    """Cancel restored runs whose WorkflowRun was deleted while the operator was down."""
    if not restored:
        return
    present: set[tuple[str, str]] = set()
    scopes: Sequence[str | None] = list(namespaces) or [None]
    for ns in scopes:
        for item in await client.list(resource_path(API_VERSION, "workflowruns", ns)):
            meta = item.get("metadata") or {}
            present.add((meta.get("namespace", ""), meta.get("name", "")))
    for run_id in restored:
        if run_object(run_id) not in present and not service.is_terminal(run_id):
            logger.info("run %s has no WorkflowRun any more: cancelling it", run_id)
            service.cancel_run(run_id)


async def run_operator(settings: OperatorSettings) -> None:
    """Run the operator until SIGTERM/SIGINT (or until a part of it fails)."""
    config = load_config()
    client = KubeClient(config)
    namespace = settings.operator_namespace or config.namespace
    readiness = Readiness()
    events = EventRecorder(client, instance=settings.pod_name)
    publisher: WorkflowPublisher | None = None

    def spec_changed(namespace: str, name: str) -> None:
        if publisher is not None:
            publisher.spec_changed(namespace, name)

    directory = WorkflowDirectory(spec_changed)
    runs: RunController | None = None

    def durable(run_id: str) -> None:
        if runs is not None:
            runs.mark(run_id)

    store = MarkingStore(_make_store(settings, client), durable)
    service = OperatorService(
        engine_config=EngineConfig(
            worker_heartbeat_timeout=WORKER_HEARTBEAT_TIMEOUT_SECONDS,
            restart_grace=RESTART_GRACE_SECONDS,
        ),
        store=store,
        namespace=namespace,
        scheduler_url=settings.scheduler_url,
    )
    runs = RunController(service, store, client, events, directory)
    publisher = WorkflowPublisher(
        client,
        lambda: {w["worker_id"] for w in service.workers() if w.get("alive")},
        directory,
        default_namespace=namespace,
    )

    def on_registration(req: RegisterWorkerRequest) -> None:
        publisher.registered(req)
        assert runs is not None
        runs.retry_pending()

    def on_notice(notice: Notice) -> None:
        assert runs is not None
        runs.on_notice(notice)
        if notice.reason in ("WorkerRegistered", "WorkerLost"):
            publisher.workers_changed()

    service.registration_listeners.append(on_registration)
    service.subscribe(on_notice)

    registry = kopf.OperatorRegistry()
    register_login(registry)
    kopf.on.event(GROUP, VERSION, "workflowruns", registry=registry)(_handler(runs.on_event))
    kopf.on.event(GROUP, VERSION, "workflows", registry=registry)(
        _handler(_async(directory.on_event))
    )
    context = OperatorContext(settings, client, service, events, runs.waiting_by_pool)
    for setup in CONTROLLERS:
        setup(registry, context)

    started = time.monotonic()
    await service.start()
    restored = await service.recover()
    await _prune_orphans(client, service, restored, settings.namespaces)
    readiness.recovered = True
    logger.info(
        "recovered %d runs from the %s store in %.2fs",
        len(restored),
        settings.store,
        time.monotonic() - started,
    )
    events.start()
    runs.status.start()
    publisher.writer.start()

    kopf_settings = kopf.OperatorSettings()
    kopf_settings.posting.enabled = False  # our own Events; kopf's would name handlers
    kopf_settings.scanning.disabled = True
    kopf_settings.watching.server_timeout = 300
    stop_kopf = asyncio.Event()
    stop = asyncio.Event()
    kopf_task = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=kopf_settings,
            standalone=True,
            clusterwide=not settings.namespaces,
            namespaces=list(settings.namespaces),
            ready_flag=readiness.watching,
            stop_flag=stop_kopf,
        ),
        name="tether-kopf",
    )

    async def watch() -> None:
        """Ends (stopping the server) if kopf ends; cancelling it leaves kopf running."""
        ready = asyncio.create_task(readiness.watching.wait())
        await asyncio.wait([ready, kopf_task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not kopf_task.done():
            _take_signals(stop)
        await asyncio.shield(kopf_task)

    try:
        await serve(
            settings.host,
            settings.port,
            service,
            app=_app(service, readiness, _gate(settings, client, service)),
            companions=[watch, *context.background],
            stop=stop,
        )
    finally:
        # History, status and Events first: kopf, when it stops, cancels every task
        # started after it (it cannot tell ours from its own).
        await service.stop()
        await runs.status.stop()
        await publisher.writer.stop()
        await events.stop()
        stop_kopf.set()
        try:
            await asyncio.wait_for(kopf_task, 15)
        except TimeoutError:
            logger.warning("kopf did not stop within 15s")
        except Exception:
            logger.exception("kopf failed")
        await client.aclose()
        logger.info("operator stopped")


def _take_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set `stop` (kopf installed its own handlers while starting).

    kopf would stop its watches first; the process stops in its own order instead:
    the HTTP server, then history, status and Events, then kopf.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            return  # not the main thread: the caller owns signals


def _async(fn: Callable[[Any], None]) -> Callable[[Any], Coroutine[Any, Any, None]]:
    async def call(event: Any) -> None:
        fn(event)

    return call


def _handler(
    take: Callable[[Any], Coroutine[Any, Any, None]],
) -> Callable[..., Coroutine[Any, Any, None]]:
    """A kopf event handler passing the raw event on (and returning None: kopf stores nothing)."""

    async def handler(event: Any, **_: Any) -> None:
        await take(event)

    return handler
