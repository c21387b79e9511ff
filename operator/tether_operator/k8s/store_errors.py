"""Errors of the Kubernetes run store, public so the history writer can tell them apart.

`permanent` says whether retrying the same call can ever succeed: the history writer
(which cannot import this layer) reads the attribute to stop retrying a run whose
WorkflowRun is gone instead of looping forever. `expected` says the failure follows
from what a user did (deleting the run, or its namespace): nothing is wrong.
"""

from __future__ import annotations

__all__ = ["HistoryCorrupt", "PayloadMissing", "RunGone", "StoreError"]


class StoreError(Exception):
    """The Kubernetes store cannot do what was asked; the message names the objects."""

    permanent: bool = False
    """True when a retry of the same call cannot succeed."""
    expected: bool = False
    """True when a user's deletion caused it (logged as information, not as an error)."""

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class RunGone(StoreError):
    """The WorkflowRun that owns the history was deleted (or replaced by a new object
    of the same name): its history cannot be written any more."""

    permanent = True
    expected = True


class HistoryCorrupt(StoreError):
    """The stored history of a run has a gap, or a segment vanished while its run
    still exists: the message says which objects to look at."""

    permanent = True


class PayloadMissing(StoreError):
    """A history event refers to a payload ConfigMap that is missing or damaged."""

    permanent = True
