"""The conformance suite's tiers that need no cluster: memory, SQLite, Postgres."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg

from tether_operator.store import Fence, HistoryStore
from tether_operator.store.memory import MemoryBacking, MemoryStore
from tether_operator.store.postgres import PostgresStore
from tether_operator.store.sqlite import SqliteStore

SECOND_BATCH = (
    "DELETE FROM batches WHERE run_id = {p} AND start = "
    "(SELECT start FROM batches WHERE run_id = {p} ORDER BY start LIMIT 1 OFFSET 1)"
)
"""Removes a run's second batch (`{p}`: the dialect's placeholder for the run id)."""


class _Opened:
    """Keeps every store a tier opened, to close them after the test."""

    def __init__(self) -> None:
        self.opened: list[HistoryStore] = []

    async def _open(self, store: HistoryStore) -> HistoryStore:
        await store.open()
        self.opened.append(store)
        return store

    async def close(self) -> None:
        for store in self.opened:
            await store.close()

    async def run(self, name: str) -> str:
        return f"conformance.{name}"


class MemoryTier(_Opened):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.backing = MemoryBacking()

    async def store(self, fence: Fence | None = None) -> HistoryStore:
        return await self._open(MemoryStore(self.backing, fence))

    async def gap(self, store: HistoryStore, run_id: str) -> bool:
        return False  # a list in memory has no gaps


class SqliteTier(_Opened):
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    async def store(self, fence: Fence | None = None) -> HistoryStore:
        return await self._open(SqliteStore(self.path, fence))

    async def gap(self, store: HistoryStore, run_id: str) -> bool:
        with sqlite3.connect(self.path) as db:
            db.execute(SECOND_BATCH.format(p="?"), (run_id, run_id))
        return True


class PostgresTier(_Opened):
    name = "postgres"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.dsn = dsn

    async def store(self, fence: Fence | None = None) -> HistoryStore:
        return await self._open(PostgresStore(self.dsn, fence))

    async def gap(self, store: HistoryStore, run_id: str) -> bool:
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(SECOND_BATCH.format(p="$1"), run_id)
        finally:
            await conn.close()
        return True
