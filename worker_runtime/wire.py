"""The wire vocabulary both sides of the purity wall share: names, shapes and defaults.

The engine (pure, no pydantic) and the SDK (pydantic models in `protocol.py`) import
this module, so a message shape, a default or a reason is written once. It imports
nothing but the standard library's typing.
"""

from __future__ import annotations

from typing import Literal, TypeGuard, assert_never, get_args

LossReason = Literal[
    "ProcessExited", "HeartbeatTimeout", "PodDeleted", "Evicted", "ScaledDown", "NodeLost"
]
"""Why a worker was declared lost (a `WorkerLostRequest.reason`, a session's break reason)."""

LOSS_REASONS: tuple[LossReason, ...] = get_args(LossReason)


def is_loss_reason(reason: str) -> TypeGuard[LossReason]:
    """True if `reason` is one of `LOSS_REASONS`."""
    return reason in LOSS_REASONS


def is_permanent_loss(reason: LossReason) -> bool:
    """True if the worker's pod is gone for good, so a HARD session cannot wait for it."""
    match reason:
        case "PodDeleted" | "Evicted" | "ScaledDown":
            return True
        case "ProcessExited" | "HeartbeatTimeout" | "NodeLost":
            return False
        case _:
            assert_never(reason)
