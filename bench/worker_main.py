"""A benchmark worker process: `python -m bench.worker_main ROLE WORKER_ID URL [SLOTS] [CAP]`.

ROLE is `workflows` (workflow code only), `activities` (activities only) or `all`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from worker_runtime import run_worker

from .workloads import ALL_ACTIVITIES, ALL_WORKFLOWS


def main() -> None:
    role, worker_id, url = sys.argv[1:4]
    slots = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    capacity = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    wfs = ALL_WORKFLOWS if role in ("workflows", "all") else []
    acts = ALL_ACTIVITIES if role in ("activities", "all") else []
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_worker(
                wfs,
                activities=acts,
                scheduler_url=url,
                worker_id=worker_id,
                slots=slots,
                session_capacity=capacity,
            )
        )


if __name__ == "__main__":
    main()
