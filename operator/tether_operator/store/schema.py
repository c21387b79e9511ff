"""The SQL tiers' schema, as numbered migrations (SQLite and Postgres both run these).

A store applies the migrations it knows above the database's `schema_version` at
`open`, in one transaction. A database whose version is above the newest this code
knows was migrated by a newer operator: `open` refuses it with `SchemaTooNew`, so an
older operator never writes history it cannot read (roll the newer one out again,
or restore the database). A version never changes once released; a change is a new one.
"""

from __future__ import annotations

from tether_operator.store.errors import StoreError

__all__ = ["MIGRATIONS", "SchemaTooNew", "too_new"]

MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            root TEXT NOT NULL,
            uid TEXT,
            epoch BIGINT NOT NULL DEFAULT 0,
            length BIGINT NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX runs_root ON runs (root)",
        """CREATE TABLE batches (
            run_id TEXT NOT NULL,
            start BIGINT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (run_id, start)
        )""",
        """CREATE TABLE payloads (
            run_id TEXT NOT NULL,
            id TEXT NOT NULL,
            body TEXT NOT NULL,
            PRIMARY KEY (run_id, id)
        )""",
    ],
]
"""Migration N (from 1) is `MIGRATIONS[N - 1]`: statements run in order."""


class SchemaTooNew(StoreError):
    """The database was migrated by a newer version of Tether."""

    permanent = True


def too_new(version: int, where: str) -> SchemaTooNew:
    return SchemaTooNew(
        "",
        f"the history database {where} has schema version {version}, newer than the "
        f"{len(MIGRATIONS)} this operator knows: a newer Tether migrated it. Run that "
        "version (or newer), or restore the database from before the upgrade",
    )
