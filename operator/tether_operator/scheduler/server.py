"""Run the scheduler's HTTP API under uvicorn, with companion tasks, in the caller's loop.

`serve()` is the one way a scheduler is served: `python -m tether_operator.scheduler`,
dev mode (`tether dev`) and the Kubernetes operator (`tether operator`, whose kopf
watches run as a companion) all call it. uvicorn's own signal handling is off:
`serve()` handles SIGINT/SIGTERM itself when asked to, and a caller that owns the
signals (dev mode's supervisor) stops it with the `stop` event instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import uvicorn

from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.http_protocol import CoalescingHttpToolsProtocol
from tether_operator.scheduler.service import SchedulerService
from worker_runtime.gc_tuning import tune_gc

__all__ = ["Companion", "ServeError", "http_config", "serve"]

logger = logging.getLogger("tether.scheduler")

Companion = Callable[[], Awaitable[None]]
"""A task that runs beside the HTTP server for as long as it serves (kopf's watches).
If it returns or raises, the server stops: the process should not outlive a part of it."""


class ServeError(Exception):
    """The HTTP server could not start (address in use, bad host, ...)."""


class _Server(uvicorn.Server):
    """Releases long-polls before uvicorn waits for open requests to finish; leaves
    signals to `serve()`."""

    def __init__(self, config: uvicorn.Config, service: SchedulerService) -> None:
        super().__init__(config)
        self._service = service

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._service.begin_shutdown()
        await super().shutdown(sockets)


def http_config(app: Any, host: str, port: int, *, graceful_shutdown: int = 5) -> uvicorn.Config:
    """The uvicorn settings every scheduler server uses (dev mode included)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=CoalescingHttpToolsProtocol,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=graceful_shutdown,
    )


@contextlib.contextmanager
def _signals_set(stop: asyncio.Event, enabled: bool) -> Iterator[None]:
    """SIGINT and SIGTERM set `stop` (main thread only; elsewhere nothing changes)."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    if enabled:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError, ValueError):
                break  # not the main thread, or no signal support
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _bound_url(server: uvicorn.Server) -> str | None:
    for server_ in server.servers:
        for sock in server_.sockets:
            bound_host, bound_port = sock.getsockname()[:2]
            return f"http://{bound_host}:{bound_port}"
    return None


async def serve(
    host: str = "127.0.0.1",
    port: int = 7233,
    service: SchedulerService | None = None,
    ready: asyncio.Event | None = None,
    *,
    app: Any = None,
    companions: Sequence[Companion] = (),
    stop: asyncio.Event | None = None,
    handle_signals: bool = True,
    graceful_shutdown: int = 5,
) -> None:
    """Serve the scheduler's HTTP API (and run `companions`) until told to stop.

    Stops, gracefully, when `stop` is set, on SIGINT/SIGTERM (with `handle_signals`,
    in the main thread), or when a companion ends; a companion's exception is raised
    once the server has stopped. Cancelling the call stops at once. `ready` is set
    once the socket accepts connections; with `port=0` the bound port is in
    `service.scheduler_url` then (if the URL was empty). `app` replaces the default
    `create_app(service)` (to mount more routes). Raises `ServeError` if the server
    cannot start.
    """
    service = service or SchedulerService()
    tune_gc()
    stop = stop or asyncio.Event()
    server = _Server(
        http_config(app or create_app(service), host, port, graceful_shutdown=graceful_shutdown),
        service,
    )
    http = asyncio.create_task(server.serve(), name="tether-scheduler-http")
    side: list[asyncio.Task[None]] = []
    with _signals_set(stop, handle_signals):
        try:
            while not server.started:
                if http.done():
                    await _startup_failure(http, host, port)
                await asyncio.sleep(0.005)
            if not service.scheduler_url:
                service.scheduler_url = _bound_url(server) or ""
            side = [
                asyncio.create_task(_run(companion), name=f"tether-companion-{i}")
                for i, companion in enumerate(companions)
            ]
            if ready is not None:
                ready.set()
            stopper = asyncio.create_task(stop.wait(), name="tether-stop")
            try:
                await asyncio.wait([http, stopper, *side], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopper.cancel()
            server.should_exit = True
            await http
        except asyncio.CancelledError:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await http
            raise
        finally:
            for task in side:
                task.cancel()
            results = await asyncio.gather(*side, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result


async def _run(companion: Companion) -> None:
    await companion()


async def _startup_failure(http: asyncio.Task[None], host: str, port: int) -> None:
    with contextlib.suppress(SystemExit):  # uvicorn exits so when it cannot bind or start
        await http
    raise ServeError(f"the scheduler's HTTP server could not start on {host}:{port}")
