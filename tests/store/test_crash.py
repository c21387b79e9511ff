"""A writer killed at any point of an append loses no acknowledged batch and leaves no
part of one: reopened, the store holds whole batches 0..m-1, every acknowledged one among
them, and at most the one in flight besides."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.store.crash_writer import RUN, batch
from tests.store.postgres_server import PostgresServer
from tether_operator.store import HistoryStore
from tether_operator.store.postgres import PostgresStore
from tether_operator.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]


def writer(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.store.crash_writer", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )


def acknowledged(output: str) -> int:
    """How many batches the writer saw acknowledged (they are consecutive)."""
    acks = [int(line.split()[1]) for line in output.splitlines() if line.startswith("ack ")]
    return acks[-1] + 1 if acks else 0


async def stored_batches(store: HistoryStore) -> int:
    """How many whole batches the run holds; fails on a partial or out-of-order one."""
    await store.open()
    try:
        events = await store.load(RUN)
    finally:
        await store.close()
    expected: list[dict[str, Any]] = []
    k = 0
    while len(expected) < len(events):
        expected += batch(k)
        k += 1
    assert events == expected, "only whole batches, in order"
    return k


def check(stored: int, acked_before: int, acked: int) -> None:
    assert stored >= acked, f"an acknowledged batch is lost: {stored} stored, {acked} acked"
    assert stored <= max(acked, acked_before) + 1, f"{stored} stored, {acked} acked"


async def test_sqlite_writer_killed_before_every_statement(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    acked_total = 0
    # Opening takes about a dozen statements and an append five or six: 60 points
    # cover the open and every statement of several appends, the first one included.
    for point in range(1, 61):
        proc = writer("sqlite", str(db), "--crash-at", str(point))
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 137, f"point {point}: the writer was not crashed ({out!r})"
        acked = acknowledged(out)
        stored = await stored_batches(SqliteStore(db))
        check(stored, acked_total, max(acked, acked_total))
        acked_total = max(acked_total, stored)
    assert acked_total >= 5, "the crashes reached appends past the first"


async def test_postgres_writer_sigkilled_mid_run(postgres_dsn: str) -> None:
    rng = random.Random(7)
    acked_total = 0
    for _ in range(8):
        proc = writer("postgres", postgres_dsn)
        await asyncio.sleep(rng.uniform(0.3, 0.9))
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=30)
        acked = acknowledged(out)
        stored = await stored_batches(PostgresStore(postgres_dsn))
        check(stored, acked_total, max(acked, acked_total))
        acked_total = stored
    assert acked_total > 20


async def test_postgres_server_killed_mid_append_loses_nothing_acknowledged(
    postgres_server: PostgresServer, postgres_dsn: str
) -> None:
    """The database stops at once (a deleted pod) while a writer appends; after the
    restart the writer's store reconnects and the run continues with no batch lost
    or doubled."""
    store = PostgresStore(postgres_dsn)
    await store.open()
    acked = 0
    try:

        async def append_all() -> None:
            nonlocal acked
            for k in range(10_000):
                while True:
                    try:
                        await store.append(RUN, batch(k))
                        break
                    except Exception:  # unavailable while the server is down: retry
                        await asyncio.sleep(0.05)
                acked = k + 1
                if acked >= 400:
                    return

        task = asyncio.create_task(append_all())
        await asyncio.sleep(0.3)
        postgres_server.kill()
        await asyncio.sleep(0.5)
        postgres_server.start()
        await asyncio.wait_for(task, 60)
    finally:
        await store.close()
    assert await stored_batches(PostgresStore(postgres_dsn)) == acked == 400
