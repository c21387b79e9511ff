"""Gauges read from the engine when Prometheus scrapes: what is open and who can work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from tether_operator.engine import Engine
    from tether_operator.store import HistoryStore

__all__ = ["EngineCollector", "LeaderCollector", "StoreCollector"]


class EngineCollector(Collector):
    """Open runs and sessions, workers by pool and state, and their slots.

    It reads the engine on the event loop's thread (the metrics endpoint serves there),
    so what it sees is one consistent moment.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        runs = self._engine.runs
        open_runs = sessions_open = 0
        for run in runs.values():
            if not run.terminal:
                open_runs += 1
                sessions_open += sum(1 for s in run.sessions.values() if s.state == "Open")
        yield GaugeMetricFamily("tether_runs_open", "Runs started and not ended.", open_runs)
        yield GaugeMetricFamily(
            "tether_sessions_open", "Sessions of open runs bound to a worker.", sessions_open
        )
        workers = GaugeMetricFamily(
            "tether_workers", "Registered workers, by pool and state.", labels=["pool", "state"]
        )
        slots = GaugeMetricFamily(
            "tether_worker_slots",
            "Activity slots of live workers, busy or free, by pool.",
            labels=["pool", "state"],
        )
        counts: Counter[tuple[str, str]] = Counter()
        slot_counts: Counter[tuple[str, str]] = Counter()
        for w in self._engine.workers.values():
            counts[(w.pool, "lost" if not w.alive else "draining" if w.draining else "ready")] += 1
            if w.alive:
                busy = len(w.running)
                slot_counts[(w.pool, "busy")] += busy
                slot_counts[(w.pool, "free")] += max(0, w.slots - busy)
        for (pool, state), n in sorted(counts.items()):
            workers.add_metric([pool, state], n)
        for (pool, state), n in sorted(slot_counts.items()):
            slots.add_metric([pool, state], n)
        yield workers
        yield slots


class LeaderCollector(Collector):
    """Whether this operator leads, and the epoch its history writes are fenced with."""

    def __init__(self, leading: Callable[[], bool], epoch: Callable[[], int | None]) -> None:
        self._leading = leading
        self._epoch = epoch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "tether_leader",
            "1 while this operator leads (holds the Lease and has recovered), else 0.",
            1 if self._leading() else 0,
        )
        epoch = self._epoch()
        if epoch is not None:
            yield GaugeMetricFamily(
                "tether_leader_epoch",
                "The Lease epoch this operator last led with (its history writes carry it).",
                epoch,
            )


class StoreCollector(Collector):
    """The bytes of history a durable store took, read from it at each scrape (nothing is
    counted on the commit path)."""

    def __init__(self, store: HistoryStore) -> None:
        self._store = store

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "tether_history_bytes_committed",
            "Bytes of history JSON appended to the store by this process.",
            labels=["store"],
        )
        family.add_metric([self._store.kind], self._store.bytes_written)
        yield family
