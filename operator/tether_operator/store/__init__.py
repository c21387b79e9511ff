"""Durable run history: the `HistoryStore` seam, its errors and fencing, and the tiers
that need nothing but Python (`memory`, `sqlite`); `postgres` and the API server's
(`k8s.store`) are packages of their own."""

from tether_operator.store.errors import (
    Fenced,
    HistoryCorrupt,
    PayloadMissing,
    RunGone,
    StoreError,
    StoreUnavailable,
)
from tether_operator.store.events import fill_namespace
from tether_operator.store.fencing import Fence
from tether_operator.store.protocol import Event, HistoryStore

__all__ = [
    "Event",
    "Fence",
    "Fenced",
    "HistoryCorrupt",
    "HistoryStore",
    "PayloadMissing",
    "RunGone",
    "StoreError",
    "StoreUnavailable",
    "fill_namespace",
]
