"""Retry decisions: exponential backoff, retryability, and what a failed attempt leads to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether_types.retry import backoff_seconds, is_retryable
from tether_types.wire import default_retry_policy, workflow_retry_fields

from .deadlines import DeadlineKind
from .effects import Outbox
from .notices import attempt_notice
from .runs import Run
from .state import EngineState, LiveTask
from .tasks import Tasks

DEFAULT_RETRY: Mapping[str, Any] = default_retry_policy()


def policy_of(options: dict[str, Any]) -> dict[str, Any]:
    """The retry policy in activity options, with defaults filled in."""
    return {**DEFAULT_RETRY, **(options.get("retry") or {})}


def with_workflow_defaults(
    options: dict[str, Any], defaults: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Activity options whose retry fields the activity's code did not set (those not in
    `retry_set`) take the workflow's `defaults`; options of a code that does not say
    which it set (no `retry_set`) are all its own."""
    taken = workflow_retry_fields(options.get("retry_set"), defaults)
    if not taken:
        return options
    return {**options, "retry": {**policy_of(options), **taken}}


def backoff(policy: dict[str, Any], attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    return backoff_seconds(
        float(policy["initial_interval"]),
        float(policy["backoff_coefficient"]),
        float(policy["max_interval"]),
        attempt,
    )


def should_retry(policy: dict[str, Any], error: dict[str, Any], attempt: int) -> bool:
    """True if another attempt is allowed after `attempt` failed with `error`."""
    return attempt < int(policy["max_attempts"]) and is_retryable(
        error.get("type"), bool(error.get("non_retryable")), policy["non_retryable_errors"]
    )


class Retries:
    """A failed activity attempt: retried after its backoff, or the step's final failure."""

    def __init__(self, state: EngineState, out: Outbox, tasks: Tasks) -> None:
        self.state = state
        self.out = out
        self.tasks = tasks

    def attempt_failed(self, task: LiveTask, error: dict[str, Any], *, immediate: bool) -> None:
        """Record the failed attempt; `immediate` retries without backoff (worker lost)."""
        st, now = self.state, self.out.now
        st.drop_task(task)
        run = st.runs[task.run_id]
        if run.terminal:
            return
        rec = run.activities[task.seq]
        policy = policy_of(rec.options)
        retry_at: float | None = None
        if should_retry(policy, error, task.attempt):
            retry_at = now if immediate else now + backoff(policy, task.attempt)
        self._record_failed(run, task, error, retry_at)
        if not immediate:  # a lost worker's attempts are summed up in its WorkerLost notice
            self.out.notice(
                run.run_id,
                "Warning",
                *attempt_notice(rec.name, task.attempt, policy, error, retry_at, now),
            )
        if retry_at is not None:
            if immediate:
                self.tasks.enqueue_activity(run, rec)
            else:
                seq = str(task.seq)
                st.deadlines.add(retry_at, DeadlineKind.RETRY, run.run_id, seq, token=task.attempt)
        else:
            # The SDK words it: "activity X failed after N attempt(s): Type: message".
            final = {**error, "attempts": task.attempt}
            self.tasks.resolve(run, task.seq, ok=False, error=final)

    def handed_back(self, task: LiveTask, error: dict[str, Any]) -> None:
        """A draining worker never began attempt `task`: it is dispatched again at once.
        The hand-back shows as a failed attempt, but never as the step's final failure."""
        st = self.state
        st.drop_task(task)
        run = st.runs[task.run_id]
        if run.terminal:
            return
        self._record_failed(run, task, error, self.out.now)
        self.tasks.enqueue_activity(run, run.activities[task.seq])

    def _record_failed(
        self, run: Run, task: LiveTask, error: dict[str, Any], retry_at: float | None
    ) -> None:
        """History of failed attempt `task`; `retry_at` None marks the step's final failure."""
        self.out.record(
            run,
            "ActivityFailed",
            seq=task.seq,
            attempt=task.attempt,
            error=error,
            retry_at=retry_at,
            heartbeat_details=task.heartbeat_details,
        )
