"""The wording of notices about activity attempts and lost workers (pure functions)."""

from __future__ import annotations

from typing import Any

TIMEOUT_ERRORS = frozenset({"StartToCloseTimeout", "HeartbeatTimeout"})
"""Error types of an attempt the engine timed out."""


def attempt_notice(
    name: str,
    attempt: int,
    policy: dict[str, Any],
    error: dict[str, Any],
    retry_at: float | None,
    now: float,
) -> tuple[str, str]:
    """(reason, message) of the notice for one failed attempt: retried, timed out or final."""
    message = error.get("message")
    what = f"{error.get('type')}: {message}" if message else str(error.get("type"))
    timed_out = error.get("type") in TIMEOUT_ERRORS
    if retry_at is None:
        early = " (not retryable)" if attempt < int(policy["max_attempts"]) else ""
        return (
            "ActivityTimedOut" if timed_out else "ActivityFailed",
            f"activity {name} failed after {attempt} attempt{'s' if attempt != 1 else ''}"
            f"{early}: {what}",
        )
    verb = "timed out" if timed_out else "failed"
    return (
        "ActivityTimedOut" if timed_out else "ActivityRetrying",
        f"attempt {attempt} of {policy['max_attempts']} of activity {name} {verb}: {what}; "
        f"retrying in {round(max(retry_at - now, 0.0), 3):g}s",
    )


def worker_loss_consequences(sessions: list[str], attempts: int, workflows: int) -> str:
    """What losing a worker did, for its one WorkerLost line: `; sessions broken: ...`."""
    parts = []
    if sessions:
        parts.append(f"sessions broken: {', '.join(sessions)}")
    if attempts:
        parts.append(f"{attempts} activity attempt{'s' if attempts != 1 else ''} retried")
    if workflows:
        parts.append(f"{workflows} workflow{'s' if workflows != 1 else ''} re-queued for replay")
    return "".join(f"; {part}" for part in parts)
