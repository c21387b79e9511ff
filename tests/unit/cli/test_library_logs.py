"""`tether operator --log-level=DEBUG` debugs Tether, not its libraries' every request."""

from __future__ import annotations

import logging

import pytest

from tether_operator.cli.main import LIBRARY_LOGGERS, quiet_libraries


@pytest.fixture(autouse=True)
def _restore() -> object:
    levels = {name: logging.getLogger(name).level for name in (*LIBRARY_LOGGERS, "")}
    yield None
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_library_loggers_stay_at_warning_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    logging.getLogger().setLevel(logging.DEBUG)
    quiet_libraries()
    assert {logging.getLogger(n).getEffectiveLevel() for n in LIBRARY_LOGGERS} == {logging.WARNING}
    assert not logging.getLogger("httpcore.connection").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("tether.operator").isEnabledFor(logging.DEBUG)
    monkeypatch.setenv("TETHER_LIBRARY_LOG_LEVEL", "debug")
    quiet_libraries()
    assert logging.getLogger("httpcore.connection").isEnabledFor(logging.DEBUG)
