"""The retry rules of an activity attempt, applied by the engine and by the SDK's
local activities alike."""

from __future__ import annotations

from collections.abc import Collection


def backoff_seconds(
    initial_interval: float, backoff_coefficient: float, max_interval: float, attempt: int
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based): the initial
    interval grown by the coefficient per attempt, capped at `max_interval`."""
    return float(min(initial_interval * backoff_coefficient ** (attempt - 1), max_interval))


def is_retryable(
    error_type: str | None, non_retryable: bool, non_retryable_errors: Collection[str]
) -> bool:
    """Whether an attempt that failed with an error of `error_type` may be tried again
    (attempts left aside): not when the error says so, nor when the policy names its type."""
    return not non_retryable and error_type not in non_retryable_errors
