from __future__ import annotations

import pytest

from .fakes import FakeScheduler


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()
