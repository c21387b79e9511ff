"""Every error the worker reports, built as an ``ErrorInfo``; retry decisions."""

from __future__ import annotations

import traceback as tb
from typing import Any

from tether_types import retry

from .errors import ApplicationError, PayloadError, PayloadTooLargeError
from .protocol import ErrorInfo, RetryPolicy

START_TO_CLOSE_TIMEOUT = "StartToCloseTimeout"


def error_info(exc: BaseException, *, with_traceback: bool = True) -> ErrorInfo:
    """Describe ``exc`` for the wire: class name (or ``ApplicationError.type``), message."""
    non_retryable = False
    type_name = type(exc).__name__
    reason = getattr(exc, "reason", None)
    if isinstance(exc, ApplicationError):
        non_retryable = exc.non_retryable
        type_name = exc.type or type_name
    return ErrorInfo(
        type=type_name,
        message=str(exc),
        reason=reason if isinstance(reason, str) else None,
        non_retryable=non_retryable,
        traceback="".join(tb.format_exception(exc)) if with_traceback else None,
    )


def timeout_error(activity: str, seconds: float) -> ErrorInfo:
    """The error of an attempt that ran past its start-to-close timeout."""
    return ErrorInfo(
        type=START_TO_CLOSE_TIMEOUT,
        message=f"activity {activity!r} exceeded its start_to_close_timeout of {seconds:g}s",
        reason=START_TO_CLOSE_TIMEOUT,
    )


def activity_not_registered(activity: str, worker_id: str) -> ErrorInfo:
    """The error of a task for an activity this worker did not register."""
    return ErrorInfo(
        type="ActivityNotRegistered",
        reason="ActivityNotRegistered",
        message=f"activity {activity!r} is not registered on worker {worker_id}",
    )


def workflow_not_registered(workflow: str, worker_id: str) -> ErrorInfo:
    """The error that fails a run whose workflow this worker did not register."""
    return ErrorInfo(
        type="WorkflowNotRegistered",
        reason="WorkflowNotFound",
        message=f"workflow {workflow!r} is not registered on worker {worker_id}",
        non_retryable=True,
    )


def worker_stopped() -> ErrorInfo:
    """The error of an attempt cut short because its worker is shutting down (retried)."""
    return ErrorInfo(
        type="ActivityCancelledError", reason="WorkerStopped", message="worker shutting down"
    )


def bad_output(exc: PayloadError | PayloadTooLargeError) -> ErrorInfo:
    """The error of an attempt whose result is too large or not JSON (not retried)."""
    kind = "PayloadTooLargeError" if isinstance(exc, PayloadTooLargeError) else "TypeError"
    return ErrorInfo(type=kind, message=str(exc), non_retryable=True)


def is_retryable(error: ErrorInfo, policy: RetryPolicy) -> bool:
    """Whether a failed attempt with ``error`` may be retried under ``policy``."""
    return retry.is_retryable(error.type, error.non_retryable, policy.non_retryable_errors)


def backoff(policy: RetryPolicy, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    return retry.backoff_seconds(
        policy.initial_interval, policy.backoff_coefficient, policy.max_interval, attempt
    )


def error_from_dict(data: Any) -> ErrorInfo:
    """Parse a recorded error leniently (unknown keys dropped)."""
    if isinstance(data, ErrorInfo):
        return data
    if not isinstance(data, dict):
        return ErrorInfo(type="Error", message=str(data))
    known = {k: v for k, v in data.items() if k in ErrorInfo.model_fields}
    known.setdefault("type", "Error")
    try:
        return ErrorInfo.model_validate(known)
    except ValueError:
        return ErrorInfo(type=str(known.get("type")), message=str(known.get("message", "")))
