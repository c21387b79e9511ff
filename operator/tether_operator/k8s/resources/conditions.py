"""Kubernetes conditions, built one way for every resource. Pure: `now` is passed in.

Conditions follow the Kubernetes conventions: `lastTransitionTime` moves only when a
condition's `status` changes, and every condition carries `observedGeneration`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

Condition = dict[str, Any]


def rfc3339(t: float | None, *, millis: bool = False) -> str | None:
    """Unix seconds as a Kubernetes timestamp (`2026-01-02T03:04:05Z`)."""
    if t is None:
        return None
    when = datetime.fromtimestamp(t, UTC)
    text = when.isoformat(timespec="milliseconds" if millis else "seconds")
    return text.replace("+00:00", "Z")


def seconds_of(text: object) -> float | None:
    """A Kubernetes timestamp as Unix seconds; None for an absent or malformed one."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def condition(
    type_: str, status: str, reason: str, message: str, generation: int | None
) -> Condition:
    """A condition in the Kubernetes shape, without its `lastTransitionTime` (see
    `merge_conditions`); the message is cut to what the API server accepts."""
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
    }


def merge_conditions(
    wanted: Iterable[Condition],
    previous: Sequence[Mapping[str, Any]],
    now: float,
    *,
    keep_absent: bool = True,
) -> list[Condition]:
    """`wanted` with `lastTransitionTime` kept from `previous` where `status` is unchanged.

    A condition of `previous` that `wanted` does not name is kept as it was (conditions
    are not dropped, so `kubectl wait` never sees one vanish), unless `keep_absent` is
    False: then it goes, as a Deployment's `ReplicaFailure` does once pods are made.
    """
    before = {c.get("type"): c for c in previous}
    merged: list[Condition] = []
    for cond in wanted:
        old = before.pop(cond["type"], None)
        keep = old is not None and old.get("status") == cond["status"]
        stamp = old.get("lastTransitionTime") if keep and old is not None else None
        merged.append({**cond, "lastTransitionTime": stamp or rfc3339(now)})
    if keep_absent:
        merged.extend(dict(c) for c in before.values())
    return merged


def conditions_changed(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]]) -> bool:
    """Whether two condition lists differ in anything but order."""
    return sorted(map(_key, a)) != sorted(map(_key, b))


def _key(c: Mapping[str, Any]) -> str:
    return json.dumps(c, sort_keys=True, default=str)
