"""Which worker gets a task: pure functions over worker states.

Rules (DESIGN.md, sticky sessions):
- a task of an open, bound session goes only to that session's worker;
- a new session binds to a worker with a free session slot;
- a SOFT session that lost its worker rebinds, preferring a worker on the same node;
- a HARD session waits for its own worker to come back.
"""

from __future__ import annotations

from collections.abc import Iterable

from .workers import WorkerState


def pick_new_binding(
    candidates: Iterable[WorkerState], prefer_node: str | None = None
) -> WorkerState | None:
    """The best worker for a new or rebinding session: same node, then least loaded."""
    best: WorkerState | None = None
    best_key: tuple[int, int, int, str] | None = None
    for w in candidates:
        if w.free_sessions <= 0:
            continue
        key = (
            0 if prefer_node and w.node == prefer_node else 1,
            len(w.sessions),
            len(w.running),
            w.worker_id,
        )
        if best_key is None or key < best_key:
            best, best_key = w, key
    return best


def pick_least_loaded(candidates: Iterable[WorkerState]) -> WorkerState | None:
    """The worker with the most free slots (ties: fewest sessions, then id)."""
    best: WorkerState | None = None
    best_key: tuple[int, int, str] | None = None
    for w in candidates:
        key = (-w.free_slots, len(w.sessions), w.worker_id)
        if best_key is None or key < best_key:
            best, best_key = w, key
    return best
