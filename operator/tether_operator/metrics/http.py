"""`GET /metrics` on a port of its own, served on the caller's event loop.

Serving on the loop (not prometheus_client's thread server) lets collectors read the
engine without locks: a scrape sees one consistent moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["open_metrics_port", "serve_metrics"]

logger = logging.getLogger("tether.metrics")

MAX_HEAD = 16 * 1024


async def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> asyncio.Server:
    """Start answering `GET /metrics` with `registry`'s text exposition; the server is
    returned started (its bound port in `server.sockets`)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
                path = rest.split(b" ", 1)[0].split(b"?", 1)[0]
                if method not in (b"GET", b"HEAD"):
                    status, body, ctype = b"405 Method Not Allowed", b"GET only\n", b"text/plain"
                elif path != b"/metrics":
                    status, body, ctype = b"404 Not Found", b"see /metrics\n", b"text/plain"
                else:
                    status, ctype = b"200 OK", CONTENT_TYPE_LATEST.encode()
                    body = generate_latest(registry)
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype
                    + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                    + (b"" if method == b"HEAD" else body)
                )  # fmt: skip
                await writer.drain()
        except ConnectionError:
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.start_server(handle, host, port, limit=MAX_HEAD)


async def open_metrics_port(
    registry: CollectorRegistry, host: str, port: int
) -> asyncio.Server | None:
    """`serve_metrics` on `port`, or None if `port` is 0 (off) or cannot be bound: metrics
    are not worth failing the scheduler for, so that is logged as an error, not raised."""
    if not port:
        return None
    try:
        server = await serve_metrics(registry, host, port)
    except OSError as exc:
        logger.error(
            "metrics: cannot listen on %s:%d (%s); /metrics is not served. Free the port "
            "or pick another with --metrics-port (0 turns metrics off)",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    logger.info("metrics: serving http://%s:%d/metrics", host, port)
    return server
