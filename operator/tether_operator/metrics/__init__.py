"""Prometheus metrics of a scheduler: families, what feeds them, and their HTTP endpoint.

`Metrics` holds the families on a registry of its own. History events the engine writes
feed the counters and histograms (`Metrics.observe`); gauges are read from the engine
when scraped (`EngineCollector`); `serve_metrics` answers `GET /metrics` on a port of
its own. The families are documented in docs/metrics.md.
"""

from tether_operator.metrics.collector import EngineCollector, LeaderCollector, StoreCollector
from tether_operator.metrics.families import Metrics
from worker_runtime.metrics import open_metrics_port, serve_metrics

__all__ = [
    "EngineCollector",
    "LeaderCollector",
    "Metrics",
    "StoreCollector",
    "open_metrics_port",
    "serve_metrics",
]
