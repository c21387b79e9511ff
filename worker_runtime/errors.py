"""Exceptions raised by the SDK, in workflow code, in activities and in clients."""

from __future__ import annotations


class TetherError(Exception):
    """Base class of every error the SDK raises on purpose."""


class ApplicationError(TetherError):
    """Raise from an activity to control how its failure is retried.

    ``non_retryable=True`` makes the failure final at once; ``type`` overrides the
    error type recorded in history (default: ``"ApplicationError"``).
    """

    def __init__(
        self, message: str, *, non_retryable: bool = False, type: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.non_retryable = non_retryable
        self.type = type


class ActivityError(TetherError):
    """An activity failed for good (retries exhausted or non-retryable), seen from a workflow."""

    def __init__(
        self,
        activity: str,
        *,
        attempts: int | None,
        cause_type: str,
        message: str,
        reason: str | None = None,
    ) -> None:
        tries = f" after {attempts} attempt(s)" if attempts else ""
        super().__init__(f"activity {activity!r} failed{tries}: {cause_type}: {message}")
        self.activity = activity
        self.attempts = attempts
        self.cause_type = cause_type
        self.message = message
        self.reason = reason


class _CausedError(TetherError):
    """A failure that carries the original error's type, message and reason."""

    def __init__(self, what: str, *, cause_type: str, message: str, reason: str | None) -> None:
        why = f" ({reason})" if reason else ""
        super().__init__(f"{what} failed{why}: {cause_type}: {message}")
        self.cause_type = cause_type
        self.message = message
        self.reason = reason


class ChildWorkflowError(_CausedError):
    """A child workflow failed, or could not be started (e.g. reason ``ChildNotRegistered``)."""

    def __init__(
        self, workflow: str, *, cause_type: str, message: str, reason: str | None = None
    ) -> None:
        super().__init__(
            f"child workflow {workflow!r}", cause_type=cause_type, message=message, reason=reason
        )
        self.workflow = workflow


class PayloadError(TetherError, TypeError):
    """An activity or workflow argument or result is not JSON-serialisable."""


class PayloadTooLargeError(TetherError):
    """A payload's JSON encoding exceeds the 2 MiB limit (``protocol.MAX_PAYLOAD_BYTES``)."""

    def __init__(self, name: str, direction: str, size: int, limit: int) -> None:
        super().__init__(
            f"{direction} of {name!r} is {size} bytes of JSON, over the limit of {limit} bytes"
        )
        self.name = name
        self.direction = direction
        self.size = size
        self.limit = limit


class NonDeterminismError(TetherError):
    """Replayed workflow code issued a different command than the one recorded in history."""


class NonDeterministicCallError(TetherError):
    """Workflow code made a call that a replay cannot reproduce (blocking, I/O, threads).

    Raised at the call; uncaught, it fails the run with reason ``NonDeterministicCall``.
    """

    reason = "NonDeterministicCall"

    def __init__(self, call: str, advice: str) -> None:
        super().__init__(f"{call} in workflow code {advice}")
        self.call = call
        self.advice = advice


class StickyChildError(TetherError):
    """A sticky child workflow was requested for a workflow without a sticky strategy."""


class SessionBrokenError(TetherError):
    """The worker of a HARD sticky session was lost; the run cannot continue."""


class ActivityCancelledError(TetherError):
    """The scheduler cancelled the running activity (timed out, run cancelled)."""


class WorkflowFailedError(_CausedError):
    """A run ended in the Failed or Cancelled phase (raised by clients waiting for a result)."""

    def __init__(
        self, run_id: str, *, cause_type: str, message: str, reason: str | None = None
    ) -> None:
        super().__init__(f"run {run_id!r}", cause_type=cause_type, message=message, reason=reason)
        self.run_id = run_id


class SchedulerUnavailableError(TetherError):
    """The scheduler could not be reached or answered with a server error."""


class WorkerReplacedError(TetherError):
    """A newer process registered under this worker's id; this one stops (its tasks were
    handed to the newer one). Two live processes with one worker id are a misconfiguration."""


class SchedulerRequestError(TetherError):
    """The scheduler rejected a request (4xx); carries the ``Problem`` fields and status.

    ``problem`` is False when the answer had no Problem body (no ``error`` code): it may
    come from whatever answered at the scheduler's address, not from the scheduler.
    """

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        field: str | None = None,
        *,
        problem: bool = True,
    ) -> None:
        where = f" (field {field})" if field else ""
        super().__init__(f"scheduler answered {status} {error}: {message}{where}")
        self.status = status
        self.error = error
        self.message = message
        self.field = field
        self.problem = problem
