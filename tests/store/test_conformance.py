"""Every case of the history-store contract on every tier that needs no cluster."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.store.conformance import CASES, Case
from tests.store.tiers import MemoryTier, PostgresTier, SqliteTier

TIERS = ["memory", "sqlite", "postgres"]


@pytest.fixture(params=TIERS)
async def tier(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    made: MemoryTier | SqliteTier | PostgresTier
    if request.param == "memory":
        made = MemoryTier()
    elif request.param == "sqlite":
        made = SqliteTier(tmp_path / "history.db")
    else:
        made = PostgresTier(request.getfixturevalue("postgres_dsn"))
    yield made
    await made.close()


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
async def test_conformance(tier: Any, case: Case) -> None:
    await case(tier)
