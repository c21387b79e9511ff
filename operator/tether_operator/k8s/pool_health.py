"""What the WorkerPool controller last saw of each pool, for the runs that wait on one.

The pool controller says which pools exist and why one cannot start a worker (a pod's
`ErrImagePull`, `CrashLoopBackOff`, a refused template); the WorkflowRun controller
reads it to tell a Pending run why it waits, and listens for changes to tell it again.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["PoolHealth", "PoolKey"]

PoolKey = tuple[str, str]
"""(namespace, WorkerPool name)."""


class PoolHealth:
    """Pools by key: "" when healthy, else why they cannot start a worker."""

    def __init__(self) -> None:
        self._pools: dict[PoolKey, str] = {}
        self._listeners: list[Callable[[], None]] = []

    def seen(self, key: PoolKey, trouble: str = "") -> None:
        """Pool `key` exists; `trouble` says why it cannot start a worker ("" if not)."""
        if self._pools.get(key) != trouble:
            self._pools[key] = trouble
            self._changed()

    def gone(self, key: PoolKey) -> None:
        """Pool `key` was deleted."""
        if self._pools.pop(key, None) is not None:
            self._changed()

    def exists(self, key: PoolKey) -> bool:
        return key in self._pools

    def trouble(self, key: PoolKey) -> str:
        """Why pool `key` cannot start a worker; "" if nothing is known against it."""
        return self._pools.get(key, "")

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` after any change."""
        self._listeners.append(listener)

    def _changed(self) -> None:
        for listener in self._listeners:
            listener()
