"""A worker's own Prometheus metrics (`python -m worker_runtime --metrics-port`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .metrics import LATENCY_BUCKETS, Families, PlainCounter, PlainHistogram

__all__ = ["WorkerMetrics"]


class _Slots(Collector):
    def __init__(self, busy: Callable[[], int], slots: int) -> None:
        self._busy, self._slots = busy, slots

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "tether_worker_slots", "This worker's activity slots, busy or free.", labels=["state"]
        )

    def describe(self) -> Iterator[Metric]:
        # The registry describes a collector when it is registered: before the worker
        # it reads is built.
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        busy = self._busy()
        family.add_metric(["busy"], busy)
        family.add_metric(["free"], max(0, self._slots - busy))
        yield family


class WorkerMetrics:
    """Activity times, session cold starts, slots and retried reports of one worker."""

    def __init__(self, busy: Callable[[], int], slots: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.activity_seconds = PlainHistogram(
            "tether_worker_activity_seconds",
            "An activity attempt's run on this worker, by outcome (completed, failed, cancelled).",
            ["activity", "outcome"],
            LATENCY_BUCKETS,
        )
        self.session_activities = PlainCounter(
            "tether_worker_session_activities",
            "Attempts this worker ran in a sticky session: cold_start=true when the "
            "session had just come here (its resource not loaded yet: a cache miss), "
            "false when it was warm (a hit).",
            ["cold_start"],
        )
        self.reports_retried = PlainCounter(
            "tether_worker_reports_retried",
            "Reports of completions and commands sent again because the scheduler did "
            "not take them (unreachable, or another server answered).",
            [],
        )
        self.registry.register(
            Families(self.activity_seconds, self.session_activities, self.reports_retried)
        )
        self.registry.register(_Slots(busy, slots))
