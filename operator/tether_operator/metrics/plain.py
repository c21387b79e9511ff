"""Counters and histograms kept in plain dicts, for code that runs on one event loop.

prometheus_client's own metric classes take a lock for every increment and look labels
up through a validating `labels()` call; on the scheduler's hot path (a few events per
activity round trip) that cost several per cent of dev mode's round trip. Everything
that moves these runs on the event loop, and the endpoint collects them there too, so
no lock is needed: an increment is a dict lookup and an add.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Families", "PlainCounter", "PlainHistogram"]

Labels = tuple[str, ...]


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

    def observe(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
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
