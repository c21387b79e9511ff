"""Run the scheduler's HTTP API under uvicorn, in the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import uvicorn

from tether_operator.scheduler.app import create_app
from tether_operator.scheduler.http_protocol import CoalescingHttpToolsProtocol
from tether_operator.scheduler.service import SchedulerService

__all__ = ["http_config", "serve"]

logger = logging.getLogger("tether.scheduler")


class _Server(uvicorn.Server):
    """Releases long-polls before uvicorn waits for open requests to finish."""

    def __init__(self, config: uvicorn.Config, service: SchedulerService) -> None:
        super().__init__(config)
        self._service = service

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


async def serve(
    host: str = "127.0.0.1",
    port: int = 7233,
    service: SchedulerService | None = None,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled (or SIGINT/SIGTERM when run in the main thread).

    `ready` is set once the socket accepts connections. With `port=0` the bound port
    is in `service.scheduler_url` when `ready` is set (if the URL was empty).
    """
    service = service or SchedulerService()
    config = http_config(create_app(service), host, port)
    server = _Server(config, service)
    task = asyncio.create_task(server.serve(), name="tether-scheduler-http")
    try:
        while not server.started:
            if task.done():
                await task  # raises what made start-up fail
                raise RuntimeError("the scheduler's HTTP server stopped during start-up")
            await asyncio.sleep(0.005)
        if not service.scheduler_url:
            for server_ in server.servers:
                for sock in server_.sockets:
                    bound_host, bound_port = sock.getsockname()[:2]
                    service.scheduler_url = f"http://{bound_host}:{bound_port}"
                    break
        if ready is not None:
            ready.set()
        await asyncio.shield(task)
    except asyncio.CancelledError:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
