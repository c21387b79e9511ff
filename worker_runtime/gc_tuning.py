"""Garbage-collector settings for a long-running Tether process (a worker, a scheduler).

Every task and report allocates hundreds of short-lived objects (JSON, pydantic models,
dicts). With CPython's default threshold the young generation is collected every 700
allocations, several times per activity; almost all of those objects are freed by
reference counting anyway. Measured in one sitting on this machine (`bench/results/
gc-tuning.md`): dev mode's throughput +34 %, the round trip's p50 -3 %.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

GEN0_THRESHOLD = 20_000
"""Allocations between two collections of the young generation (CPython's default: 700)."""

_tuned = False


def tune_gc() -> None:
    """Once per process: freeze what start-up made (modules, classes, the registry of
    workflows: never garbage), so no collection scans it again, and collect the young
    generation every `GEN0_THRESHOLD` allocations. Later calls do nothing."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
