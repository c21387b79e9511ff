"""Which root run owns each child run, for the tiers that keep no owner objects."""

from __future__ import annotations

__all__ = ["Roots"]


class Roots:
    """Child run → root run, learned from `child_started` and from stored rows."""

    def __init__(self) -> None:
        self._root: dict[str, str] = {}

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
        """Forget `run_id` and its children; the ids forgotten."""
        gone = [run_id, *self.children(run_id)]
        for rid in gone:
            self._root.pop(rid, None)
        return gone
