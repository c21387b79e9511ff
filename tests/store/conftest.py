"""A Postgres server for the session (started once, removed at the end) and a fresh
database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.store.postgres_server import PostgresServer, binaries, remove, start_server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if binaries() is None:
        if os.environ.get("CI"):
            pytest.fail("Postgres is not installed: hack/install-deps installs it")
        pytest.skip("Postgres is not installed (hack/install-deps installs it)")
    server = start_server()
    yield server
    remove(server)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.psql(f"CREATE DATABASE {name}")
    return postgres_server.dsn(name)
