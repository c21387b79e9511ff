"""The history-store seam: what the scheduler and the operator need of durable history.

A run's truth is its history (a list of `{type, time, data}` events). The scheduler
appends the events the engine emits and, on start-up, reloads every run to rebuild
the engine's state. Each tier is one package implementing `HistoryStore`:
`store.memory` (dev mode and tests), `store.sqlite` (`tether dev --db`),
`k8s.store` (the API server: ConfigMaps owned by the WorkflowRun) and
`store.postgres`. `tests/store/` holds the conformance suite every tier passes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

__all__ = ["Event", "HistoryStore"]

Event = dict[str, Any]
"""One history event: `{"type": ..., "time": ..., "data": {...}}`."""


@runtime_checkable
class HistoryStore(Protocol):
    """Append-only history per run, with claims, payloads and child ownership.

    Order: `load` returns exactly the events `append` was called with, in append
    order, with no gap; an append either lands whole or not at all (a crash in the
    middle of one leaves the history as it was before it).

    Fencing: a store built with a `Fence` that has an epoch claims a run for that
    epoch in `load`; an `append` after a newer epoch claimed the run raises `Fenced`
    and writes nothing.
    """

    durable: bool
    """True if appended history outlives the scheduler process: then nothing is
    acknowledged or dispatched before the history behind it is appended."""

    kind: str
    """The tier: `memory`, `sqlite`, `postgres` or `apiserver` (a metrics label)."""

    @property
    def bytes_written(self) -> int:
        """Bytes of history JSON this process appended so far (a metrics counter)."""

    async def open(self) -> None:
        """Connect and prepare (create or migrate tables); called once before use."""

    async def close(self) -> None:
        """Release connections; the store is not used afterwards."""

    async def append(self, run_id: str, events: list[Event]) -> None:
        """Add `events` after the run's existing events (creating the run if new)."""

    async def load(self, run_id: str) -> list[Event]:
        """Every event of the run, in append order; [] if the run is unknown. Claims the
        run for this store's epoch when fenced."""

    async def run_ids(self) -> list[str]:
        """Every run with a stored history (child runs included)."""

    async def delete(self, run_id: str) -> None:
        """Delete the run's history, and its child runs' for a root run (no error if
        it is unknown). Appends to them then raise `RunGone` until the run is bound
        anew (`bind`): a cancellation written late cannot bring a deleted run back."""

    def forget(self, run_id: str) -> None:
        """Drop what this process keeps in memory of the run and its child runs; their
        history stays stored."""

    def bind(self, run_id: str, uid: str) -> None:
        """The run's owning object (a WorkflowRun's uid): a different uid than before
        means a new run of the same name, and the old one's history is not its own."""

    def child_started(self, run_id: str, parent_run_id: str) -> None:
        """Child run `run_id` of `parent_run_id` started (before its first append): it
        belongs to the parent's root, is listed and deleted with it."""

    def root(self, run_id: str) -> str:
        """The root run that owns `run_id`: a child's root, else the run itself."""

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        """Store a large JSON value for the run; a small reference for `get_payload`."""

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        """The value `put_payload` returned `ref` for; `PayloadMissing` if it is gone."""

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        """Keep a run's large result where a reader outside the operator finds it; the
        fields of `status.resultRef` that say where, or None if this tier keeps none."""
