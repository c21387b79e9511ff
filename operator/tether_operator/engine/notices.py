"""The wording of notices about activity attempts and lost workers (pure functions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, assert_never

from tether_types.notices import NoticeReason, RunLoss
from tether_types.wire import LossReason

TIMEOUT_ERRORS = frozenset({"StartToCloseTimeout", "HeartbeatTimeout"})
"""Error types of an attempt the engine timed out."""


def attempt_notice(
    name: str,
    attempt: int,
    policy: dict[str, Any],
    error: dict[str, Any],
    retry_at: float | None,
    now: float,
) -> tuple[NoticeReason, str]:
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


def run_losses(
    sessions: Iterable[tuple[str, str]],
    attempts: Iterable[tuple[str, int, int]],
    workflows: Iterable[str],
) -> dict[str, RunLoss]:
    """What a worker loss did, per run: broken sessions as (run, session), attempts cut
    short as (run, seq, attempt), and the runs whose workflow task it held."""
    broken: dict[str, list[str]] = {}
    cut: dict[str, list[tuple[int, int]]] = {}
    for run_id, sid in sessions:
        broken.setdefault(run_id, []).append(sid)
    for run_id, seq, attempt in attempts:
        cut.setdefault(run_id, []).append((seq, attempt))
    replayed = set(workflows)
    return {
        run_id: RunLoss(
            run_id,
            sessions=tuple(broken.get(run_id, ())),
            attempts=tuple(cut.get(run_id, ())),
            workflow_replayed=run_id in replayed,
        )
        for run_id in {*broken, *cut, *replayed}
    }


def loss_phrase(reason: LossReason) -> str:
    """What happened to a pod, as a session notice words it: `was deleted`."""
    match reason:
        case "PodDeleted":
            return "was deleted"
        case "Evicted":
            return "was evicted"
        case "ScaledDown":
            return "was scaled down by its pool"
        case "NodeLost":
            return "was lost with its node"
        case "HeartbeatTimeout":
            return "stopped heartbeating"
        case "ProcessExited":
            return "lost its worker process"
        case _:
            assert_never(reason)


def pod_on_node(pod: str | None, node: str | None) -> str:
    """`pod ml-abc12 on node worker-a` (the node left out when unknown)."""
    return f"pod {pod or '?'}" + (f" on node {node}" if node else "")


def loss_detail(w_pod: str | None, reason: str, message: str) -> str:
    """`: <message>` to add after a loss phrase, or "" when the message says nothing
    more: empty, the bare reason, or the pool's own sentence about the same pod
    ("pod X on node Y was deleted" after "pod X on node Y was deleted")."""
    if not message or message == reason or message.startswith(f"pod {w_pod or '?'}"):
        return ""
    return f": {message}"
