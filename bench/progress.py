"""Progress of a benchmark suite: which bench of how many runs now, and how long each took.

On a terminal each bench's line also says how long the suite has run; piped, the same
lines go out (a log of a long run in CI is worth having), each one whole.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["run_benches"]


def run_benches(
    names: Sequence[str],
    benches: Mapping[str, Callable[[bool], dict[str, Any]]],
    quick: bool,
    into: dict[str, Any],
) -> None:
    """Run `names` in order, each result into `into[name]`, saying where the suite is."""
    began = time.monotonic()
    for i, name in enumerate(names, 1):
        started = time.monotonic()
        print(f"[{i}/{len(names)}] {name} ...", flush=True)
        into[name] = benches[name](quick)
        took = time.monotonic() - started
        total = time.monotonic() - began
        print(json.dumps(into[name], indent=2), flush=True)
        left = f", {len(names) - i} to go" if i < len(names) else ""
        print(f"[{i}/{len(names)}] {name} done in {took:.1f} s ({total:.0f} s in all{left})",
              file=sys.stdout, flush=True)  # fmt: skip
