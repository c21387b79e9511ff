"""A benchmark scheduler over a durable in-memory store:
`python -m bench.scheduler_main PORT WRITE_DELAY_S`.

The same service and HTTP server as `python -m tether_operator.scheduler`, but with
`DurableMemoryStore(write_delay=...)`, so deliveries and acknowledgements wait for
their history to be written as they do with the Kubernetes store; the delay stands in
for the store's round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from tether_operator.scheduler import SchedulerService, serve
from tether_operator.store.memory import DurableMemoryStore


def main() -> None:
    port, delay = int(sys.argv[1]), float(sys.argv[2])
    url = f"http://127.0.0.1:{port}"
    service = SchedulerService(store=DurableMemoryStore(write_delay=delay), scheduler_url=url)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:
            asyncio.run(serve("127.0.0.1", port, service))
        else:
            uvloop.run(serve("127.0.0.1", port, service))


if __name__ == "__main__":
    main()
