"""The scheduler embedded in the `tether dev` process: built, served, watched, stopped.

This is the one module of dev mode that knows the scheduler package; the supervisor
sees a URL, a readiness wait, a stream of engine notices and a stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable

import httpx
from rich.console import Console
from rich.logging import RichHandler

from tether_operator.dev.schedules import CodeSchedules
from tether_operator.engine import EngineError
from tether_operator.metrics import open_metrics_port
from tether_operator.scheduler import SchedulerService
from tether_operator.scheduler.server import ServeError, serve
from tether_operator.store import StoreError
from tether_operator.store.memory import MemoryStore
from tether_operator.store.sqlite import SqliteStore
from tether_types.notices import Notice
from worker_runtime.logs import JsonFormatter

READY_TIMEOUT_SECONDS = 15.0
"""How long the scheduler may take to answer `/healthz` after start."""


class DevError(Exception):
    """Dev mode cannot start (port in use, file missing, ...): one `error:` line, exit 1."""


def check_port_free(host: str, port: int) -> None:
    """Fail early, with a clear message, when something already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise DevError(
                    f"port {port} on {host} is already in use — is another `tether dev` "
                    f"running? Pick another with --port"
                ) from None
            raise DevError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _route_scheduler_logs(console: Console, log_format: str) -> logging.Handler:
    """Show the scheduler's errors and what the schedules do on the dev console (its
    notices are printed separately), or with `json` write all its logs as JSON lines on
    stderr."""
    handler: logging.Handler
    if log_format == "json":
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        handler.setLevel(logging.INFO)
    else:
        handler = RichHandler(console=console, level=logging.INFO, show_path=False)
        handler.addFilter(
            lambda r: r.levelno >= logging.ERROR or r.name.startswith("tether.schedules")
        )
        logging.getLogger("tether.schedules").setLevel(logging.INFO)
    logger = logging.getLogger("tether")
    logger.addHandler(handler)
    logger.propagate = False
    return handler


class EmbeddedScheduler:
    """A `SchedulerService` served by the scheduler's `serve()` inside this event loop.

    The supervisor owns Ctrl-C and SIGTERM, so `serve()` leaves signals alone and is
    stopped through its `stop` event.
    """

    def __init__(
        self,
        host: str,
        port: int,
        console: Console,
        db: str | None = None,
        metrics_port: int = 0,
        log_format: str = "text",
    ) -> None:
        self.host = host
        self.log_format = log_format
        self.port = port
        self.metrics_port = metrics_port
        self._metrics: asyncio.Server | None = None
        self.console = console
        self.db = db
        self._log_handler: logging.Handler | None = None
        store = SqliteStore(db) if db else MemoryStore()
        self.service = SchedulerService(store=store, scheduler_url=self.url, namespace="dev")
        self.schedules = CodeSchedules(self.service)
        self.service.use_schedules(self.schedules)
        self._schedules_task: asyncio.Task[None] | None = None
        self.recovered: list[str] = []
        """The runs `start` found in `db` and took up again."""
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        """The base URL workers and the CLI use."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.host in {"0.0.0.0", "::"}:
            host = "127.0.0.1"
        return f"http://{host}:{self.port}"

    def on_notice(self, listener: Callable[[Notice], None]) -> None:
        """Call `listener` with every engine notice (session bound/broken, run ended...)."""
        self.service.subscribe(listener)

    def worker_lost(self, worker_id: str, message: str) -> bool:
        """Tell the scheduler a worker process exited; False if it never registered."""
        try:
            self.service.worker_lost(worker_id, "ProcessExited", message)
        except EngineError:
            return False
        return True

    async def start(self) -> None:
        """Serve the scheduler and return once `/healthz` answers."""
        check_port_free(self.host, self.port)
        self._log_handler = _route_scheduler_logs(self.console, self.log_format)
        try:
            await self.service.start()
            if self.db:
                self.recovered = await self.service.recover()
        except StoreError as exc:
            raise DevError(f"--db {self.db}: {exc}") from None
        self._task = asyncio.create_task(
            serve(
                self.host,
                self.port,
                self.service,
                stop=self._stop,
                handle_signals=False,
                graceful_shutdown=2,
            ),
            name="tether-scheduler",
        )
        await self._wait_ready()
        self._schedules_task = asyncio.create_task(self.schedules.run(), name="tether-schedules")
        self._metrics = await open_metrics_port(
            self.service.metrics.registry, self.host, self.metrics_port
        )

    async def _wait_ready(self) -> None:
        assert self._task is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_SECONDS
        async with httpx.AsyncClient(base_url=self.url, timeout=1.0) as client:
            while True:
                if self._task.done():
                    with contextlib.suppress(ServeError):
                        self._task.result()
                    raise DevError(f"the scheduler failed to start on {self.host}:{self.port}")
                with contextlib.suppress(httpx.HTTPError):
                    response = await client.get("/healthz")
                    if response.status_code == 200:
                        return
                if loop.time() > deadline:
                    raise DevError(
                        f"the scheduler did not become ready on {self.url} "
                        f"within {READY_TIMEOUT_SECONDS:g}s"
                    )
                await asyncio.sleep(0.05)

    @property
    def failed(self) -> bool:
        """True when the server stopped without being asked to."""
        return self._task is not None and self._task.done() and not self._stopping

    _stopping = False

    async def stop(self) -> None:
        """Stop serving (in-flight long polls get a short grace period)."""
        self._stopping = True
        if self._schedules_task is not None:
            self._schedules_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._schedules_task
        if self._metrics is not None:
            self._metrics.close()
        self.service.begin_shutdown()
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        await self.service.stop()
        if self._log_handler is not None:
            logger = logging.getLogger("tether")
            logger.removeHandler(self._log_handler)
            logger.propagate = True
