"""`python -m tests.integration.restart.scheduler --port N --store DIR`: the real scheduler
service and HTTP server over the SQLite tier (`DIR/history.db`, as `tether dev --db`
keeps it), recovering every stored run at start-up."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from tether_operator.scheduler import SchedulerService, serve
from tether_operator.store.sqlite import SqliteStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    url = f"http://127.0.0.1:{args.port}"
    service = SchedulerService(store=SqliteStore(args.store / "history.db"), scheduler_url=url)
    asyncio.run(serve("127.0.0.1", args.port, service))


if __name__ == "__main__":
    main()
