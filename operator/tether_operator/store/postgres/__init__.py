"""The Postgres tier: history in a database, one transaction per group commit.

Appends that arrive while a commit is in flight wait and go together in the next one:
one statement (`GROUP_APPEND`) claims each run's row and adds its batch, for every run
in the group, so the database sees one round trip however many runs are busy. The row
update is conditional on the epoch (`WHERE $epoch IS NULL OR runs.epoch <= $epoch`): a
run a newer leader claimed returns no row, and its append raises `Fenced`.

A batch's position is the run's length this process knows (it loaded the run or
created it), and a batch already at that position is left as it is: an append retried
after a lost connection (committed or not) writes the batch once.

Connection trouble raises `StoreUnavailable` (retried by the history writer with
backoff); `open` checks the DSN, then migrates the schema under an advisory lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl as ssl_module
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from tether_operator.store.errors import (
    HistoryCorrupt,
    PayloadMissing,
    StoreError,
    StoreUnavailable,
)
from tether_operator.store.events import JSON, decode_batches, payload_id
from tether_operator.store.fencing import Fence
from tether_operator.store.protocol import Event
from tether_operator.store.roots import Owned, Roots
from tether_operator.store.schema import MIGRATIONS, too_new

__all__ = ["PostgresStore", "redact"]

logger = logging.getLogger("tether.store")

MIGRATION_LOCK = 7_233_001
"""The advisory lock two operators starting at once take around the migrations."""

GROUP_APPEND = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                         $6::text[]) AS t(run_id, root, uid, start, n, body)
), claimed AS (
    INSERT INTO runs AS r (run_id, root, uid, epoch, length)
    SELECT run_id, root, uid, COALESCE($7::bigint, 0), start + n FROM input
    ON CONFLICT (run_id) DO UPDATE
        SET length = GREATEST(r.length, excluded.length),
            epoch = GREATEST(r.epoch, excluded.epoch)
        WHERE $7::bigint IS NULL OR r.epoch <= $7::bigint
    RETURNING r.run_id, r.length
), written AS (
    INSERT INTO batches (run_id, start, body)
    SELECT i.run_id, i.start, i.body FROM claimed c JOIN input i USING (run_id)
    ON CONFLICT (run_id, start) DO NOTHING
)
SELECT run_id, length FROM claimed
"""

if TYPE_CHECKING:
    _Conn = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]

_CONNECTION_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


def redact(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    if "://" not in dsn or "@" not in dsn:
        return dsn
    scheme, rest = dsn.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else dsn


@dataclass
class _Append:
    run_id: str
    events: list[Event]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PostgresStore(Owned):
    """History in the Postgres database `dsn` names (`HistoryStore`); durable."""

    durable = True
    kind = "postgres"

    def __init__(
        self,
        dsn: str,
        fence: Fence | None = None,
        *,
        ssl: ssl_module.SSLContext | None = None,
        pool_size: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        self.dsn = dsn
        self._fence = fence if fence is not None else Fence()
        self._ssl = ssl
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self._roots = Roots()
        self._checked: set[str] = set()
        """Runs whose stored uid this process compared with the bound one."""
        self._length: dict[str, int] = {}
        self._pending: list[_Append] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.commits = 0
        """Group commits made (each one statement, one round trip)."""

    # ------------------------------------------------------------------ lifecycle

    def _unavailable(self, run_id: str, exc: BaseException) -> StoreUnavailable:
        reason = str(exc) or type(exc).__name__
        return StoreUnavailable(
            run_id, f"the history database {redact(self.dsn)} is unavailable: {reason}"
        )

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                ssl=self._ssl,
                timeout=self._connect_timeout,
            )
        except asyncpg.InvalidPasswordError as exc:
            raise StoreError(
                "",
                f"the history database {redact(self.dsn)} refused the login: {exc} (check "
                "the DSN in TETHER_STORE_DSN, or the chart's store.postgres.existingSecret)",
            ) from exc
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise self._unavailable("", exc) from exc
        await self._migrate()
        self._committer = asyncio.get_running_loop().create_task(
            self._commit_loop(), name="tether-postgres-commits"
        )

    async def _migrate(self) -> None:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"
            )
            version = await conn.fetchval("SELECT version FROM schema_version")
            if version is not None and version > len(MIGRATIONS):
                raise too_new(version, redact(self.dsn))
            for number, statements in enumerate(MIGRATIONS[version or 0 :], (version or 0) + 1):
                for statement in statements:
                    await conn.execute(statement)
                logger.info("history database %s migrated to schema %d", redact(self.dsn), number)
            if version is None:
                await conn.execute("INSERT INTO schema_version VALUES ($1)", len(MIGRATIONS))
            elif version < len(MIGRATIONS):
                await conn.execute("UPDATE schema_version SET version = $1", len(MIGRATIONS))

    async def close(self) -> None:
        if self._committer is not None:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
            self._committer = None
        for item in self._pending:
            if not item.done.done():
                item.done.set_exception(StoreError(item.run_id, "the history store was closed"))
        self._pending.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # ------------------------------------------------------------------ append

    async def append(self, run_id: str, events: list[Event]) -> None:
        if not events:
            return
        self._fence.check(run_id)
        self._roots.check(run_id)
        if self._committer is None:
            raise StoreError(run_id, f"the history database {redact(self.dsn)} is not open")
        item = _Append(run_id, events)
        self._pending.append(item)
        self._wake.set()
        await item.done

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                group: list[_Append] = []
                later: list[_Append] = []
                seen: set[str] = set()
                for item in self._pending:
                    (later if item.run_id in seen else group).append(item)
                    seen.add(item.run_id)
                self._pending = later
                await self._commit(group)

    async def _commit(self, group: list[_Append]) -> None:
        try:
            stored = await self._write(group)
        except Exception as exc:
            error = exc if isinstance(exc, StoreError) else self._error(group[0].run_id, exc)
            for item in group:
                if not item.done.done():
                    item.done.set_exception(error)
            return
        self.commits += 1
        for item in group:
            if item.done.done():
                continue
            start = self._length.get(item.run_id, 0)
            length = stored.get(item.run_id)
            if length is None:
                item.done.set_exception(self._fence.claimed_by_newer(item.run_id))
            elif length != start + len(item.events):
                item.done.set_exception(
                    HistoryCorrupt(
                        item.run_id,
                        f"history of run {item.run_id} has {length} events in "
                        f"{redact(self.dsn)}, not the {start + len(item.events)} this "
                        "operator wrote: another writer appended to it",
                    )
                )
            else:
                self._length[item.run_id] = length
                item.done.set_result(None)

    def _error(self, run_id: str, exc: Exception) -> StoreError:
        if isinstance(exc, _CONNECTION_ERRORS):
            return self._unavailable(run_id, exc)
        return StoreError(run_id, f"history database {redact(self.dsn)}: {exc}")

    async def _write(self, group: list[_Append]) -> dict[str, int]:
        assert self._pool is not None
        async with self._pool.acquire() as conn:
            unchecked = [
                i.run_id
                for i in group
                if i.run_id in self._roots.uids and i.run_id not in self._checked
            ]
            if unchecked:
                await self._replace_old_runs(conn, unchecked)
            bodies = [JSON.encode(i.events) for i in group]
            rows = await conn.fetch(
                GROUP_APPEND,
                [i.run_id for i in group],
                [self._roots.root(i.run_id) for i in group],
                [self._roots.uids.get(i.run_id) for i in group],
                [self._length.get(i.run_id, 0) for i in group],
                [len(i.events) for i in group],
                bodies,
                self._fence.epoch,
            )
        self.bytes_written += sum(map(len, bodies))
        return {row["run_id"]: int(row["length"]) for row in rows}

    async def _replace_old_runs(self, conn: _Conn, run_ids: list[str]) -> None:
        """Delete the stored history of runs whose row belongs to an older owner of the
        same name (a WorkflowRun deleted and created again)."""
        rows = await conn.fetch("SELECT run_id, uid FROM runs WHERE run_id = ANY($1)", run_ids)
        old = [r["run_id"] for r in rows if r["uid"] != self._roots.uids[r["run_id"]]]
        if old:
            async with conn.transaction():
                await _drop(conn, old)
            for run_id in old:
                self._length.pop(run_id, None)
        self._checked.update(run_ids)

    # ------------------------------------------------------------------ reads

    async def load(self, run_id: str) -> list[Event]:
        assert self._pool is not None, "open() first"
        epoch = self._fence.epoch
        try:
            async with self._pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT uid, epoch, root FROM runs WHERE run_id = $1", run_id
                )
                uid = self._roots.uids.get(run_id)
                if row is None or (uid is not None and row["uid"] != uid):
                    self._length[run_id] = 0
                    return []
                if epoch is not None:
                    claimed = await conn.fetchval(
                        "UPDATE runs SET epoch = $2 WHERE run_id = $1 AND epoch <= $2 "
                        "RETURNING run_id",
                        run_id,
                        epoch,
                    )
                    if claimed is None:
                        raise self._fence.claimed_by_newer(run_id)
                batches = await conn.fetch(
                    "SELECT start, body FROM batches WHERE run_id = $1 ORDER BY start", run_id
                )
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(run_id, exc) from exc
        self._roots.learn(run_id, row["root"])
        self._checked.add(run_id)
        events = decode_batches(run_id, [(b["start"], b["body"]) for b in batches])
        self._length[run_id] = len(events)
        return events

    async def run_ids(self) -> list[str]:
        assert self._pool is not None, "open() first"
        try:
            rows = await self._pool.fetch("SELECT run_id, root FROM runs ORDER BY run_id")
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable("", exc) from exc
        for row in rows:
            self._roots.learn(row["run_id"], row["root"])
        return [row["run_id"] for row in rows]

    async def delete(self, run_id: str) -> None:
        assert self._pool is not None, "open() first"
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                children = await conn.fetch("SELECT run_id FROM runs WHERE root = $1", run_id)
                gone = {run_id, *(r["run_id"] for r in children), *self._roots.children(run_id)}
                await _drop(conn, list(gone))
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(run_id, exc) from exc
        self._roots.deleted(gone)
        self.forget(run_id)

    def forget(self, run_id: str) -> None:
        for rid in self._roots.forget(run_id):
            self._checked.discard(rid)
            self._length.pop(rid, None)

    def bind(self, run_id: str, uid: str) -> None:
        if self._roots.uids.get(run_id) != uid:
            self._checked.discard(run_id)
        super().bind(run_id, uid)

    # ------------------------------------------------------------------ payloads

    async def put_payload(self, run_id: str, value: Any) -> dict[str, Any]:
        assert self._pool is not None, "open() first"
        text = JSON.encode(value)
        key = payload_id(text)
        try:
            await self._pool.execute(
                "INSERT INTO payloads (run_id, id, body) VALUES ($1, $2, $3) "
                "ON CONFLICT DO NOTHING",
                run_id,
                key,
                text,
            )
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(run_id, exc) from exc
        return {"id": key, "bytes": len(text)}

    async def get_payload(self, run_id: str, ref: dict[str, Any]) -> Any:
        assert self._pool is not None, "open() first"
        try:
            body = await self._pool.fetchval(
                "SELECT body FROM payloads WHERE run_id = $1 AND id = $2",
                run_id,
                str(ref.get("id")),
            )
        except _CONNECTION_ERRORS as exc:
            raise self._unavailable(run_id, exc) from exc
        if body is None:
            raise PayloadMissing(run_id, f"payload {ref.get('id')} of run {run_id} is not stored")
        return json.loads(body)

    async def publish_result(self, run_id: str, value: Any) -> dict[str, Any] | None:
        return None


async def _drop(conn: _Conn, run_ids: list[str]) -> None:
    for table in ("batches", "payloads", "runs"):
        await conn.execute(f"DELETE FROM {table} WHERE run_id = ANY($1)", run_ids)
