"""The SQLite tier: history in one file, so `tether dev --db PATH` survives a restart.

Calls run on the event loop's thread: a commit in WAL mode with `synchronous=NORMAL`
takes tens of microseconds, less than handing it to a thread would. A commit survives
the process being killed; after a power cut the last few may be lost (the OS had not
flushed them), which is the trade Temporal's `--db-filename` dev server makes too.
Every append is one transaction, so a crash leaves whole batches.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tether_operator.store.errors import PayloadMissing, StoreError
from tether_operator.store.events import JSON, decode_batches, payload_id
from tether_operator.store.fencing import Fence
from tether_operator.store.protocol import Event
from tether_operator.store.roots import Owned, Roots
from tether_operator.store.schema import MIGRATIONS, too_new

__all__ = ["SqliteStore"]


class SqliteStore(Owned):
    """History in the SQLite database at `path` (`HistoryStore`); durable."""

    durable = True
    kind = "sqlite"

    def __init__(self, path: str | Path, fence: Fence | None = None) -> None:
        self.path = Path(path)
        self._fence = fence if fence is not None else Fence()
        self._db: sqlite3.Connection | None = None
        self._roots = Roots()

    async def open(self) -> None:
        if self._db is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            self._db = db
            with self._transaction() as tx:
                tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
                row = tx.execute("SELECT version FROM schema_version").fetchone()
                version = int(row[0]) if row else 0
                if version > len(MIGRATIONS):
                    raise too_new(version, str(self.path))
                for statements in MIGRATIONS[version:]:
                    for statement in statements:
                        tx.execute(statement)
                if row is None:
                    tx.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS),))
                else:
                    tx.execute("UPDATE schema_version SET version = ?", (len(MIGRATIONS),))
        except sqlite3.Error as exc:
            raise StoreError("", f"cannot open the history database {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db
        if db is None:
            raise StoreError("", f"the history database {self.path} is not open")
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def append(self, run_id: str, events: list[Event]) -> None:
        if not events:
            return
        self._fence.check(run_id)
        self._roots.check(run_id)
        epoch = self._fence.epoch
        uid = self._roots.uids.get(run_id)
        with self._transaction() as tx:
            row = tx.execute(
                "SELECT uid, epoch, length FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is None:
                tx.execute(
                    "INSERT INTO runs (run_id, root, uid) VALUES (?, ?, ?)",
                    (run_id, self._roots.root(run_id), uid),
                )
                stored_epoch, length = 0, 0
            else:
                stored_uid, stored_epoch, length = row
                if uid is not None and stored_uid != uid:
                    self._drop(tx, [run_id])  # an old run of the same name
                    tx.execute(
                        "INSERT INTO runs (run_id, root, uid, epoch) VALUES (?, ?, ?, ?)",
                        (run_id, self._roots.root(run_id), uid, stored_epoch),
                    )
                    length = 0
            if epoch is not None and stored_epoch > epoch:
                raise self._fence.claimed_by_newer(run_id, stored_epoch)
            body = JSON.encode(events)
            tx.execute(
                "INSERT INTO batches (run_id, start, body) VALUES (?, ?, ?)",
                (run_id, length, body),
            )
            self.bytes_written += len(body)
            tx.execute(
                "UPDATE runs SET length = ?, epoch = ? WHERE run_id = ?",
                (length + len(events), max(stored_epoch, epoch or 0), run_id),
            )

    async def load(self, run_id: str) -> list[Event]:
        epoch = self._fence.epoch
        with self._transaction() as tx:
            row = tx.execute(
                "SELECT uid, epoch, root FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            uid = self._roots.uids.get(run_id)
            if row is None or (uid is not None and row[0] != uid):
                return []
            if epoch is not None:
                if row[1] > epoch:
                    raise self._fence.claimed_by_newer(run_id, row[1])
                tx.execute("UPDATE runs SET epoch = ? WHERE run_id = ?", (epoch, run_id))
            batches = tx.execute(
                "SELECT start, body FROM batches WHERE run_id = ? ORDER BY start", (run_id,)
            ).fetchall()
        self._roots.learn(run_id, row[2])
        return decode_batches(run_id, batches)

    async def run_ids(self) -> list[str]:
        with self._transaction() as tx:
            rows = tx.execute("SELECT run_id, root FROM runs ORDER BY run_id").fetchall()
        for run_id, root in rows:
            self._roots.learn(run_id, root)
        return [run_id for run_id, _ in rows]

    async def delete(self, run_id: str) -> None:
        with self._transaction() as tx:
            children = [
                r for (r,) in tx.execute("SELECT run_id FROM runs WHERE root = ?", (run_id,))
            ]
            gone = {run_id, *children, *self._roots.children(run_id)}
            self._drop(tx, list(gone))
        self._roots.deleted(gone)
        self.forget(run_id)

    @staticmethod
    def _drop(tx: sqlite3.Connection, run_ids: list[str]) -> None:
        for table in ("batches", "payloads", "runs"):
            tx.executemany(f"DELETE FROM {table} WHERE run_id = ?", [(r,) for r in run_ids])

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        text = JSON.encode(value)
        key = payload_id(text)
        with self._transaction() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO payloads (run_id, id, body) VALUES (?, ?, ?)",
                (run_id, key, text),
            )
        return {"id": key, "bytes": len(text)}

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        db = self._db
        assert db is not None, "open() first"
        row = db.execute(
            "SELECT body FROM payloads WHERE run_id = ? AND id = ?", (run_id, str(ref.get("id")))
        ).fetchone()
        if row is None:
            raise PayloadMissing(
                run_id, f"payload {ref.get('id')} of run {run_id} is not in {self.path}"
            )
        return json.loads(row[0])

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        return None
