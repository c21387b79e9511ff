"""Helpers on stored events that every tier shares."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tether_operator.store.errors import HistoryCorrupt
from tether_operator.store.protocol import Event

__all__ = ["JSON", "decode_batches", "fill_namespace", "payload_id"]

JSON = json.JSONEncoder(separators=(",", ":"))
"""Compact and ASCII-only: a string's length is its size in bytes, and lone surrogates
survive every store as escapes."""


def fill_namespace(events: list[Event], namespace: str) -> None:
    """Give a history recorded before runs carried their namespace (a `RunStarted`
    without one) `namespace`, in place; any other history is left as it is."""
    if not events or events[0].get("type") != "RunStarted":
        return
    data: Any = events[0].get("data")
    if isinstance(data, dict) and not data.get("namespace"):
        events[0] = {**events[0], "data": {**data, "namespace": namespace}}


def decode_batches(run_id: str, batches: list[tuple[int, str]]) -> list[Event]:
    """The events of a run's stored batches (`(start, JSON array)` in start order);
    `HistoryCorrupt` at a gap or a batch that is not JSON."""
    events: list[Event] = []
    for start, body in batches:
        if start != len(events):
            raise HistoryCorrupt(
                run_id,
                f"history of run {run_id} has a gap: a batch at event {start} follows "
                f"event {len(events) - 1}",
            )
        try:
            batch = json.loads(body)
        except ValueError as exc:
            raise HistoryCorrupt(
                run_id, f"history batch {start} of run {run_id} is not JSON: {exc}"
            ) from exc
        events.extend(batch)
    return events


def payload_id(text: str) -> str:
    """A payload's id: its content's hash, so the same value is stored once."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]
