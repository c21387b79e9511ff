"""Prometheus metrics kept in plain dicts on one event loop, and `GET /metrics` served there.

The scheduler (`tether_operator.metrics`) and workers (`Worker.metrics`) both use them.
prometheus_client's own metric classes take a lock for every increment and look labels
up through a validating `labels()` call; on the scheduler's hot path (a few events per
activity round trip) that cost several per cent of dev mode's round trip. Everything
that moves these runs on the event loop, and the endpoint collects them there too, so
no lock is needed: an increment is a dict lookup and an add.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "LATENCY_BUCKETS",
    "Families",
    "PlainCounter",
    "PlainHistogram",
    "open_metrics_port",
    "serve_metrics",
]

logger = logging.getLogger("tether.metrics")

Labels = tuple[str, ...]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0, 300.0, 1800.0,
)  # fmt: skip
"""From half a millisecond (a warm dispatch) to half an hour (a long activity)."""


class PlainCounter:
    """A counter family: `inc(labels)` with label values in `labelnames` order."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def family(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, value in sorted(self.values.items()):
            family.add_metric(list(labels), value)
        return family


class PlainHistogram:
    """A histogram family with fixed upper bounds (`+Inf` added)."""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]
    ) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self.bounds = tuple(buckets)
        self.series: dict[Labels, list[float]] = {}
        """Per label set: a count per bucket (the last is +Inf), then the sum."""

    def series_of(self, labels: Labels) -> list[float]:
        """The counts of `labels`: a count per bucket (the last is +Inf), then the sum.
        A caller may keep it and count into it directly."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        return series

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels) or self.series_of(labels)
        series[bisect_left(self.bounds, value)] += 1
        series[-1] += value

    def family(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [*(repr(float(b)) for b in self.bounds), "+Inf"]
        for labels, series in sorted(self.series.items()):
            cumulative, total = [], 0.0
            for bound, count in zip(bounds, series[:-1], strict=True):
                total += count
                cumulative.append((bound, total))
            family.add_metric(list(labels), cumulative, series[-1])
        return family


class Families(Collector):
    """Collects a set of plain families (register it once on a registry)."""

    def __init__(self, *families: PlainCounter | PlainHistogram) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            yield family.family()


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
            "or pick another with --metrics-port or TETHER_METRICS_PORT (0: no metrics)",
            host,
            port,
            exc.strerror or exc,
        )
        return None
    logger.info("metrics: serving http://%s:%d/metrics", host, port)
    return server
