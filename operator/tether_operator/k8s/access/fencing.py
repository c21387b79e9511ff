"""Fencing: a deposed leader's writes cannot reach a run's history.

Leader election alone does not stop an old leader that was paused (GC, a frozen
node, a partition) from writing after a standby took over. The run store checks two
things before and during every history write:

- locally, `Fence.check`: this process still leads (its last Lease renewal is
  younger than the renew deadline) and nothing was fenced yet;
- at the apiserver, the epoch: every history segment carries the annotation
  `tether.dev/epoch=<leaseTransitions>` of the leader that last claimed it, and an
  append is a JSON patch whose first op `test`s that annotation, so the apiserver
  refuses the whole patch (422) once a newer leader stamped its epoch there
  (`store/history.py` says how segments are sealed and claimed).

The first refused write trips the fence: `Fenced` is raised to the writer (it is not
`permanent`, so nothing waiting on that history is acknowledged) and `fenced()`
raises in the operator, which stops at once and exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tether_operator.scheduler.store import StoreError

__all__ = ["EPOCH_ANNOTATION", "SEALED_ANNOTATION", "Fence", "Fenced"]

EPOCH_ANNOTATION = "tether.dev/epoch"
"""On a history segment: the epoch (Lease `leaseTransitions`) of its writer."""
SEALED_ANNOTATION = "tether.dev/sealed"
"""On a history segment: full; the run's history goes on in the next segment."""


class Fenced(StoreError):
    """A newer leader owns this run's history: this process must stop writing.

    Not `permanent`: the history writer keeps the events (and holds everything that
    waits for them) instead of dropping them; the operator exits.
    """


class Fence:
    """This process's epoch and whether it may still write history.

    `epoch` None (leader election off) disables fencing: the store writes as a
    single operator always did.
    """

    def __init__(self, epoch: int | None = None) -> None:
        self.epoch = epoch
        self._leading: Callable[[], bool] = lambda: True
        self._confirm: Callable[[], Awaitable[bool]] | None = None
        self._tripped = asyncio.Event()
        self.error: Fenced | None = None

    def guard(
        self, leading: Callable[[], bool], confirm: Callable[[], Awaitable[bool]] | None = None
    ) -> None:
        """Ask `leading()` before every write; `confirm()` reads the Lease (see `confirm`)."""
        self._leading = leading
        self._confirm = confirm

    @property
    def tripped(self) -> bool:
        return self.error is not None

    def trip(self, error: Fenced) -> Fenced:
        """Record the first fenced write (later ones keep the first error); returns it."""
        if self.error is None:
            self.error = error
            self._tripped.set()
        return self.error

    def check(self, run_id: str) -> None:
        """Raise `Fenced` unless this process may write the run's history now."""
        if self.error is not None:
            raise Fenced(run_id, f"history of run {run_id} is fenced: {self.error}")
        if self.epoch is not None and not self._leading():
            raise self.trip(
                Fenced(
                    run_id,
                    f"epoch {self.epoch} no longer leads (its Lease renewal is past the "
                    "renew deadline): history is not written any more",
                )
            )

    async def confirm(self) -> bool:
        """True if the Lease says this process still leads with `epoch` (a fresh read);
        False without a Lease to ask: a higher epoch then always wins."""
        if self._confirm is None:
            return False
        return await self._confirm()

    async def fenced(self) -> None:
        """Wait until a write was fenced, then raise that `Fenced` error."""
        await self._tripped.wait()
        assert self.error is not None
        raise self.error
