"""`tether operator`: kopf watches, the scheduler and its HTTP API, in one process.

Start-up, in this order: load the cluster config; build the `KubeClient` and the
store (`KubernetesRunStore`, or memory for tests); serve the HTTP API through the
scheduler's one `serve()` (only `/healthz` and `/readyz` answer until the store is
recovered; the rest is 503); with leader election on (`--leader-elect`), wait until
this process holds the Lease (`access/leader.py`); recover the store (every run with
history is rebuilt in the engine); start kopf (its own registry, standalone, no
peering, cluster-wide or the given namespaces, logged in with the same config) and
the controllers' background work. `GET /healthz` answers 200 from the start (a
standby is alive); `GET /readyz` 200 once this process leads, the store is
recovered and kopf watches, 503 before, so the Service routes only to the leader.
SIGTERM stops accepting requests, flushes history, status and Events, releases the
Lease and exits 0. A lost Lease (`LeadershipLost`) or a fenced history write
(`Fenced`) stops everything at once, without flushing, and the process exits 1: the
container restarts as a standby.

The controller seam. A controller is a function `setup(registry, context)` that
adds its kopf handlers to `registry` (a `kopf.OperatorRegistry`) and may start
background work with `context.spawn(...)`; `context` (`OperatorContext`) hands it
the settings, the `KubeClient`, the `SchedulerService` and the Event recorder.
WorkflowRuns and Workflows are set up here; the WorkerPool controller
(`tether_operator.k8s.pools.controller.setup`), the node watch (`k8s.nodes.setup`) and the
WorkflowSchedule controller (`k8s.schedules.controller.setup`) plug in the same way,
through `CONTROLLERS`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import kopf
from fastapi.responses import JSONResponse

from tether_operator.engine import EngineConfig
from tether_operator.k8s.access.auth import KubernetesAuthenticator, run_namespace
from tether_operator.k8s.access.leader import (
    LeaderElector,
    LeadershipLost,
    LeaseSettings,
    label_pod,
    new_identity,
)
from tether_operator.k8s.api import paths
from tether_operator.k8s.api.client import KubeClient, load_config
from tether_operator.k8s.api.events import EventRecorder, ObjectRef
from tether_operator.k8s.api.login import register_login
from tether_operator.k8s.context import OperatorContext, OperatorSettings, Setup
from tether_operator.k8s.pool_health import PoolHealth
from tether_operator.k8s.pools import controller as pools
from tether_operator.k8s.pools import nodes
from tether_operator.k8s.resources.naming import run_object
from tether_operator.k8s.resources.specs import GROUP, VERSION
from tether_operator.k8s.runs.api_starter import ApiRunStarter
from tether_operator.k8s.runs.controller import RunController
from tether_operator.k8s.runs.mirror import MarkingStore
from tether_operator.k8s.runs.workflows import WorkflowDirectory, WorkflowPublisher, retry_defaults
from tether_operator.k8s.schedules import controller as schedules
from tether_operator.k8s.store.history import KubernetesRunStore
from tether_operator.metrics import LeaderCollector, open_metrics_port
from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.auth import Gate, is_open_path
from tether_operator.scheduler.server import serve
from tether_operator.scheduler.service import SchedulerService
from tether_operator.store import HistoryStore, StoreError, StoreUnavailable
from tether_operator.store.fencing import Fence, Fenced
from tether_operator.store.memory import MemoryStore
from tether_operator.store.postgres import PostgresStore
from tether_types.notices import Notice, RunStarted

RESTART_GRACE_SECONDS = 30.0
"""How long attempts and sessions of recovered runs wait for their worker to register
again. Workers reach a new operator pod only once it is Ready and the Service's
endpoints follow, seconds after recovery: dev mode's 5 s would retry work that is done."""

WORKER_HEARTBEAT_TIMEOUT_SECONDS = 3.0
"""A worker silent this long is lost. Dev mode's 1 s is too tight for pods reached
through a Service on busy nodes, and a pod that is deleted, evicted or loses its node
is seen at once by the pod watch, not by this timeout."""

__all__ = ["CONTROLLERS", "run_operator"]

logger = logging.getLogger("tether.operator")

CONTROLLERS: list[Setup] = [pools.setup, nodes.setup, schedules.setup]
"""Controllers set up beside the WorkflowRun and Workflow handlers."""


class Readiness:
    """`/readyz`: this process leads, the store is recovered and kopf watches;
    `/readyz?standby=true` (the pods' readiness probe) also while it stands by for a
    leader that is alive, so `helm install --wait` returns once some replica leads."""

    def __init__(
        self,
        leading: Callable[[], bool] = lambda: True,
        led_elsewhere: Callable[[], bool] = lambda: True,
    ) -> None:
        self.leading = leading
        self.led_elsewhere = led_elsewhere
        self.recovered = False
        self.watching = asyncio.Event()
        self.store_error = ""
        """Why the history store cannot be opened, while it cannot."""

    @property
    def ready(self) -> bool:
        return self.leading() and self.recovered and self.watching.is_set()

    @property
    def standing_by(self) -> bool:
        """Waiting for the Lease while another replica leads (or deposed and about to
        exit): alive, not leading."""
        return not self.leading() and not self.recovered and self.led_elsewhere()


class StandbyGate:
    """An ASGI wrapper: 503 for every API call until `open()` (the store is recovered);
    the probes and the run page's files are answered (`is_open_path`).

    A standby's engine is empty; a worker or client that reaches it anyway must not
    register or start anything there.
    """

    def __init__(self, app: Any, is_open: Callable[[], bool]) -> None:
        self.app = app
        self.is_open = is_open

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.is_open() or is_open_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"error": "not serving: this operator is a standby or still recovering; retry"}
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"2")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _make_store(settings: OperatorSettings, client: KubeClient, fence: Fence) -> HistoryStore:
    if settings.store == "memory":
        return MemoryStore()
    if settings.store == "postgres":
        return PostgresStore(settings.store_dsn, fence)
    return KubernetesRunStore(client, list(settings.namespaces) or None, fence=fence)


STORE_RETRY_MAX = 30.0
"""Seconds at most between two tries to reach the history store at start-up."""


async def _open_store(service: SchedulerService, readiness: Readiness) -> None:
    """Start the service (which opens its store), retrying with backoff while the store
    cannot be reached; `/readyz` and the log say why meanwhile, and the process keeps
    running (a wrong password is fixed in the Secret, not by a crash loop)."""
    delay = 1.0
    while True:
        try:
            await service.start()
        except StoreError as exc:
            readiness.store_error = str(exc)
            # A database still starting (installed with the release) is no error yet;
            # one that refuses the login or is too new is.
            level = logging.WARNING if isinstance(exc, StoreUnavailable) else logging.ERROR
            logger.log(level, "history store not ready (retrying in %.0fs): %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX)
            continue
        readiness.store_error = ""
        return


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


def _app(service: SchedulerService, readiness: Readiness, gate: Gate | None = None) -> Any:
    app = create_app(
        service,
        manage_lifecycle=False,
        gate=gate,
        run_namespace=run_namespace(service.namespace),
    )

    async def readyz(standby: bool = False) -> JSONResponse:
        ready = readiness.ready or (standby and readiness.standing_by)
        body = {
            "ready": ready,
            "leader": readiness.leading(),
            "recovered": readiness.recovered,
            "watching": readiness.watching.is_set(),
            **({"store": readiness.store_error} if readiness.store_error else {}),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"], summary="Readiness")
    return StandbyGate(app, lambda: readiness.recovered)


async def _prune_orphans(
    client: KubeClient,
    service: SchedulerService,
    restored: list[str],
    namespaces: Sequence[str],
    store: HistoryStore,
) -> None:
    """Cancel restored runs whose WorkflowRun was deleted while the operator was down,
    then delete their history (the API server's garbage collector already did on its
    tier; a SQL tier keeps it until told).

    A child run has no WorkflowRun: it lives as long as its root's (`store.root`).
    """
    if not restored:
        return
    present: set[tuple[str, str]] = set()
    scopes: Sequence[str | None] = list(namespaces) or [None]
    for ns in scopes:
        for item in await client.list(paths.workflow_runs(ns)):
            meta = item.get("metadata") or {}
            present.add((meta.get("namespace", ""), meta.get("name", "")))
    orphans = [run_id for run_id in restored if run_object(store.root(run_id)) not in present]
    for run_id in orphans:
        if not service.is_terminal(run_id):
            logger.info("run %s has no WorkflowRun any more: cancelling it", run_id)
            service.cancel_run(run_id)
    if written := service.written(orphans):
        await written
    for root in {store.root(run_id) for run_id in orphans}:
        if service.holds_run(root) and service.is_terminal(root):
            service.forget_run(root)  # its object is gone: so is its place in memory
        await store.delete(root)


async def run_operator(settings: OperatorSettings) -> None:
    """Run the operator until SIGTERM/SIGINT (or until a part of it fails)."""
    config = load_config()
    client = KubeClient(config)
    namespace = settings.operator_namespace or config.namespace
    elector: LeaderElector | None = None
    fence = Fence()
    if settings.leader_elect:
        elector = LeaderElector(
            client,
            LeaseSettings(
                name=settings.lease_name,
                namespace=namespace,
                identity=new_identity(settings.pod_name),
                pod=settings.pod_name,
            ),
        )
        fence.guard(lambda: elector is not None and elector.leading, elector.confirm)
    readiness = Readiness(
        leading=lambda: elector is None or elector.leading,
        led_elsewhere=lambda: elector is not None and elector.held_elsewhere,
    )
    events = EventRecorder(client, instance=settings.pod_name)
    history = _make_store(settings, client, fence)
    store = MarkingStore(history)
    service = SchedulerService(
        engine_config=EngineConfig(
            worker_heartbeat_timeout=WORKER_HEARTBEAT_TIMEOUT_SECONDS,
            restart_grace=RESTART_GRACE_SECONDS,
        ),
        store=store,
        namespace=namespace,
        scheduler_url=settings.scheduler_url,
    )
    directory = WorkflowDirectory()
    directory.subscribe(
        lambda ns, name, spec: service.set_retry_defaults(ns, name, retry_defaults(spec))
    )
    pool_health = PoolHealth()
    runs = RunController(service, store, client, events, directory, pools=pool_health)
    service.use_run_starter(ApiRunStarter(client, runs, namespace, settings.namespaces))
    publisher = WorkflowPublisher(
        client,
        lambda: {w["worker_id"] for w in service.workers() if w.get("alive")},
        directory,
        default_namespace=namespace,
    )
    service.on_registration(publisher.registered)
    service.on_registration(lambda _: runs.retry_pending())

    def on_notice(notice: Notice) -> None:
        # Notices are handed over before the history writer runs: a child is bound to
        # its root's objects before its first events are written.
        match notice:
            case RunStarted(run_id=str(child), parent_run_id=str(parent)):
                store.child_started(child, parent)
        runs.on_notice(notice)
        if notice.reason in ("WorkerRegistered", "WorkerLost"):
            publisher.workers_changed()

    service.subscribe(on_notice)

    registry = kopf.OperatorRegistry()
    register_login(registry)
    kopf.on.event(GROUP, VERSION, "workflowruns", registry=registry)(_handler(runs.on_event))
    kopf.on.event(GROUP, VERSION, "workflows", registry=registry)(
        _handler(_async(directory.on_event))
    )
    context = OperatorContext(
        settings, client, service, events, runs.waiting_by_pool, pool_health=pool_health
    )
    for setup in CONTROLLERS:
        setup(registry, context)

    kopf_settings = kopf.OperatorSettings()
    kopf_settings.posting.enabled = False  # our own Events; kopf's would name handlers
    kopf_settings.scanning.disabled = True
    kopf_settings.watching.server_timeout = 300
    stop_kopf = asyncio.Event()
    stop = asyncio.Event()
    active = asyncio.Event()
    """Set once this process leads, has recovered and started kopf."""
    client.observe = service.metrics.api_request
    service.metrics.registry.register(
        LeaderCollector(lambda: active.is_set() and readiness.leading(), lambda: fence.epoch)
    )
    kopf_task: asyncio.Task[None] | None = None
    lost: list[BaseException] = []

    async def mark(leading: bool, message: str = "") -> None:
        """The leader label on this pod (the Service routes to the leader by it), and an
        Event on the pod when it starts to lead."""
        if elector is None or not settings.pod_name:
            return
        try:
            pod = await asyncio.wait_for(
                label_pod(client, namespace, settings.pod_name, leading), 5
            )
        except Exception as exc:
            logger.warning("could not label pod %s/%s: %r", namespace, settings.pod_name, exc)
            return
        if message:
            ref = ObjectRef(namespace, settings.pod_name, pod["metadata"]["uid"], "Pod", "v1")
            events.record(ref, "Normal", "LeaderElected", message)

    acquired = asyncio.Event()

    async def lead() -> None:
        """Wait for the Lease, recover, start kopf; then end (stopping the server) only
        if kopf ends."""
        nonlocal kopf_task
        if elector is not None:
            await mark(False)  # a restarted container of the old leader stands by
            await elector.acquire()
            fence.epoch = elector.epoch
            acquired.set()
        started = time.monotonic()
        await _open_store(service, readiness)
        restored = await service.recover()
        await _prune_orphans(client, service, restored, settings.namespaces, store)
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
        ready = asyncio.create_task(readiness.watching.wait())
        await asyncio.wait([ready, kopf_task], return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if not kopf_task.done():
            _take_signals(stop)  # kopf installed its own handlers while starting
            active.set()
            if elector is not None:
                await mark(
                    True,
                    f"{elector.identity} leads (lease {namespace}/{settings.lease_name}, "
                    f"epoch {elector.epoch}): recovered {len(restored)} runs in "
                    f"{time.monotonic() - started:.1f}s",
                )
        await asyncio.shield(kopf_task)

    async def deposed(until: Callable[[], Awaitable[None]]) -> None:
        """Run `until()` (it raises only when this process must stop writing)."""
        try:
            await until()
        except (LeadershipLost, Fenced) as exc:
            lost.append(exc)
            raise

    async def keep_lease() -> None:
        """Renew the Lease from the moment it is held (recovery included)."""
        assert elector is not None
        await acquired.wait()
        await elector.hold()

    guards: list[Callable[[], Awaitable[None]]] = [lambda: deposed(fence.fenced)]
    if elector is not None:
        guards.append(lambda: deposed(keep_lease))

    def gated(work: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            await active.wait()
            await work()

        return run

    metrics = await open_metrics_port(
        service.metrics.registry, settings.host, settings.metrics_port
    )
    try:
        await serve(
            settings.host,
            settings.port,
            service,
            app=_app(service, readiness, _gate(settings, client, service)),
            companions=[lead, *guards, *(gated(work) for work in context.background)],
            stop=stop,
        )
    finally:
        if metrics is not None:
            metrics.close()
        if active.is_set():
            await mark(False)
        # Deposed: stop at once, write nothing more (the new leader owns the runs).
        grace = 0.0 if lost else None
        # History, status and Events first: kopf, when it stops, cancels every task
        # started after it (it cannot tell ours from its own).
        await service.stop(**({} if grace is None else {"flush_timeout": grace}))
        if not lost:
            await runs.status.stop()
            await publisher.writer.stop()
            await events.stop()
            if elector is not None:
                await elector.release()
        stop_kopf.set()
        if kopf_task is not None:
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
