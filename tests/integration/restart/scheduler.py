"""`python -m tests.integration.restart.scheduler --port N --store DIR`: the real scheduler
service and HTTP server over a `FileRunStore`, recovering every stored run at start-up."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from tether_operator.scheduler import SchedulerService, serve

from .file_store import FileRunStore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    url = f"http://127.0.0.1:{args.port}"
    service = SchedulerService(store=FileRunStore(args.store), scheduler_url=url)
    asyncio.run(serve("127.0.0.1", args.port, service))


if __name__ == "__main__":
    main()
