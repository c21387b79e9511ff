"""Fencing: a deposed leader's writes cannot reach a run's history.

Leader election alone does not stop an old leader that was paused (GC, a frozen
node, a partition) from writing after a standby took over. Every store checks two
things before and during every history write:

- locally, `Fence.check`: this process still leads (its last Lease renewal is
  younger than the renew deadline) and nothing was fenced yet;
- in the store, the epoch (the Lease's `leaseTransitions`): `load` claims a run for
  this process's epoch, and an append is conditional on no newer epoch having claimed
  it. The API-server tier tests an annotation on the run's newest history segment in
  the same patch (`k8s/store/history.py`); the SQL tiers update the run's row
  `WHERE epoch <= $epoch` in the append's transaction.

The first refused write trips the fence: `Fenced` is raised to the writer (it is not
`permanent`, so nothing waiting on that history is acknowledged) and `fenced()`
raises in the operator, which stops at once and exits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from tether_operator.store.errors import Fenced

__all__ = ["Fence", "Fenced"]


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

    def claimed_by_newer(self, run_id: str, stored: int | None = None) -> Fenced:
        """Trip on a run whose stored claim (epoch `stored`, if known) is newer than this
        process's epoch; the error to raise."""
        by = f"epoch {stored}" if stored is not None else "an epoch"
        return self.trip(
            Fenced(
                run_id,
                f"run {run_id} is claimed by {by} newer than this operator's {self.epoch}: "
                "history is not written any more",
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
