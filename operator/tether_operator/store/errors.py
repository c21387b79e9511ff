"""What a history store raises. `permanent` and `expected` tell the history writer
whether to retry a run's append and how loudly to log the failure."""

from __future__ import annotations

__all__ = [
    "Fenced",
    "HistoryCorrupt",
    "PayloadMissing",
    "RunGone",
    "StoreError",
    "StoreUnavailable",
]


class StoreError(Exception):
    """A store cannot do what was asked; the message names what to look at.

    The history writer retries a failed append unless the error is `permanent`, and
    logs it as information rather than an error when it is `expected` (a user's
    deletion caused it).
    """

    permanent: bool = False
    """True when a retry of the same call cannot succeed."""
    expected: bool = False
    """True when a user's deletion caused it (logged as information, not as an error)."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class StoreUnavailable(StoreError):
    """The store's server cannot be reached or refused the login: retried with backoff,
    and the message says which address or credential to check."""


class RunGone(StoreError):
    """The run that owns the history was deleted (or replaced by a new one of the same
    name): its history cannot be written any more."""

    permanent = True
    expected = True


class HistoryCorrupt(StoreError):
    """The stored history of a run has a gap or an unreadable part: the message says
    which stored object or row to look at."""

    permanent = True


class PayloadMissing(StoreError):
    """A history event refers to a payload that is missing or damaged."""

    permanent = True


class Fenced(StoreError):
    """A newer leader owns this run's history: this process must stop writing.

    Not `permanent`: the history writer keeps the events (and holds everything that
    waits for them) instead of dropping them; the operator exits.
    """
