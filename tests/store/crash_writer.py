"""`python -m tests.store.crash_writer TIER TARGET [--crash-at N]`: append batches to
run `crash.run` until killed, printing `ack K` once batch K's append returned.

Batch K holds K % 3 + 1 events `{"type": "E", "time": K, "data": {"batch": K, "i": j}}`;
the writer continues after the batches already stored. With `--crash-at N` (SQLite) the
process exits without any cleanup just before the store's Nth SQL statement runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys

from tether_operator.store import HistoryStore
from tether_operator.store.postgres import PostgresStore
from tether_operator.store.sqlite import SqliteStore

RUN = "crash.run"


def batch(k: int) -> list[dict[str, object]]:
    return [{"type": "E", "time": float(k), "data": {"batch": k, "i": j}} for j in range(k % 3 + 1)]


def crash_at(db: sqlite3.Connection, n: int) -> None:
    count = 0

    def statement(_: str) -> None:
        nonlocal count
        count += 1
        if count == n:
            os._exit(137)

    db.set_trace_callback(statement)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tier", choices=["sqlite", "postgres"])
    parser.add_argument("target")
    parser.add_argument("--crash-at", type=int)
    parser.add_argument("--batches", type=int, default=1_000_000)
    args = parser.parse_args()
    store: HistoryStore
    if args.tier == "sqlite":
        store = SqliteStore(args.target)
        if args.crash_at is not None:
            original = sqlite3.connect

            def connect(*a: object, **kw: object) -> sqlite3.Connection:
                db = original(*a, **kw)  # type: ignore[arg-type]
                crash_at(db, args.crash_at)
                return db

            sqlite3.connect = connect  # type: ignore[assignment]
    else:
        store = PostgresStore(args.target)
    await store.open()
    stored = await store.load(RUN)
    first = stored[-1]["data"]["batch"] + 1 if stored else 0
    for k in range(first, args.batches):
        await store.append(RUN, batch(k))
        sys.stdout.write(f"ack {k}\n")
        sys.stdout.flush()
    await store.close()


if __name__ == "__main__":
    asyncio.run(main())
