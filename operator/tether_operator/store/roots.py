"""Which root run owns each child run, and which runs were deleted, for the tiers that
keep no owner objects."""

from __future__ import annotations

from collections.abc import Iterable

from tether_operator.store.errors import RunGone

__all__ = ["Owned", "Roots"]


class Roots:
    """Child run → root run, learned from `child_started` and from stored rows; and the
    runs deleted in this process, whose history is not written again until bound anew."""

    def __init__(self) -> None:
        self._root: dict[str, str] = {}
        self._deleted: set[str] = set()
        self.uids: dict[str, str] = {}
        """The owning object's uid of each bound run (`HistoryStore.bind`)."""

    def child_started(self, run_id: str, parent_run_id: str) -> None:
        self._root[run_id] = self.root(parent_run_id)

    def learn(self, run_id: str, root: str) -> None:
        """A stored row says `run_id` belongs to `root`."""
        if root != run_id:
            self._root[run_id] = root

    def root(self, run_id: str) -> str:
        return self._root.get(run_id, run_id)

    def children(self, root: str) -> list[str]:
        return [child for child, owner in self._root.items() if owner == root]

    def forget(self, run_id: str) -> list[str]:
        """Forget `run_id` and its children (roots and uids); the ids forgotten."""
        gone = [run_id, *self.children(run_id)]
        for rid in gone:
            self._root.pop(rid, None)
            self.uids.pop(rid, None)
        return gone

    def deleted(self, run_ids: Iterable[str]) -> None:
        """These runs' history was deleted: appends to them raise `RunGone`."""
        self._deleted.update(run_ids)

    def bind(self, run_id: str, uid: str) -> None:
        """The run's owner is `uid`; a run bound anew may be written again if deleted."""
        self.uids[run_id] = uid
        self._deleted.discard(run_id)

    def check(self, run_id: str) -> None:
        """Raise `RunGone` if the run (or its root) was deleted."""
        if self._deleted and (run_id in self._deleted or self.root(run_id) in self._deleted):
            raise RunGone(run_id, f"run {run_id} was deleted: its history is not written again")


class Owned:
    """The ownership half of `HistoryStore` for the tiers that keep it in `Roots`."""

    _roots: Roots
    bytes_written: int = 0

    def forget(self, run_id: str) -> None:
        self._roots.forget(run_id)

    def bind(self, run_id: str, uid: str) -> None:
        self._roots.bind(run_id, uid)

    def child_started(self, run_id: str, parent_run_id: str) -> None:
        self._roots.child_started(run_id, parent_run_id)

    def root(self, run_id: str) -> str:
        return self._roots.root(run_id)
