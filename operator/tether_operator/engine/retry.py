"""Retry decisions: exponential backoff and retryability of a failure."""

from __future__ import annotations

from typing import Any

DEFAULT_RETRY: dict[str, Any] = {
    "max_attempts": 3,
    "initial_interval": 1.0,
    "backoff_coefficient": 2.0,
    "max_interval": 100.0,
    "non_retryable_errors": [],
}


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
