"""Errors of the Kubernetes run store: `StoreError`s (the scheduler's store seam) whose
`permanent` and `expected` tell the history writer to stop retrying a run whose
WorkflowRun is gone, and that a user's deletion is nothing wrong."""

from __future__ import annotations

from tether_operator.scheduler.store import StoreError

__all__ = ["HistoryCorrupt", "PayloadMissing", "RunGone", "StoreError"]


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
