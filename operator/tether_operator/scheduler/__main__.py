"""`python -m tether_operator.scheduler --host 127.0.0.1 --port 7233`."""

from __future__ import annotations

import argparse
import asyncio
import logging

from tether_operator.scheduler.server import serve
from tether_operator.scheduler.service import SchedulerService


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tether_operator.scheduler")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7233)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    service = SchedulerService(
        namespace=args.namespace, scheduler_url=f"http://{args.host}:{args.port}"
    )
    coro = serve(args.host, args.port, service)
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


if __name__ == "__main__":
    main()
