"""Retry decisions: exponential backoff and retryability of a failure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker_runtime.wire import default_retry_policy

DEFAULT_RETRY: Mapping[str, Any] = default_retry_policy()


def policy_of(options: dict[str, Any]) -> dict[str, Any]:
    """The retry policy in activity options, with defaults filled in."""
    return {**DEFAULT_RETRY, **(options.get("retry") or {})}


def backoff(policy: dict[str, Any], attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    interval = float(policy["initial_interval"]) * float(policy["backoff_coefficient"]) ** (
        attempt - 1
    )
    return min(interval, float(policy["max_interval"]))


def should_retry(policy: dict[str, Any], error: dict[str, Any], attempt: int) -> bool:
    """True if another attempt is allowed after `attempt` failed with `error`."""
    if error.get("non_retryable"):
        return False
    if error.get("type") in policy["non_retryable_errors"]:
        return False
    return attempt < int(policy["max_attempts"])
