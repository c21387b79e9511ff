"""Pure rendering helpers: durations, progress, the sticky worker column, JSON cells."""

from __future__ import annotations

import pytest

from tests.unit.cli.conftest import make_run
from tether_operator.cli.render import (
    compact_json,
    human_duration,
    progress_line,
    run_progress,
    sticky_worker,
)
from worker_runtime.protocol import SessionView


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "<none>"),
        (-3, "0ms"),
        (0.25, "250ms"),
        (2.5, "2.5s"),
        (45, "45s"),
        (150, "2m30s"),
        (1800, "30m"),
        (3 * 3600 + 60, "3h1m"),
        (10 * 3600, "10h"),
        (3 * 86400, "3d"),
    ],
)
def test_human_duration(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_progress_counts_completed_activities() -> None:
    assert run_progress(make_run("Running")) == "2/3"
    assert run_progress(make_run("Pending", activities=[])) == "0/0"


def test_sticky_worker_prefers_the_open_session() -> None:
    sessions = [
        SessionView(id="a", strategy="SOFT", state="Closed", worker="w1"),
        SessionView(id="b", strategy="HARD", state="Open", worker="w2"),
        SessionView(id="c", strategy="SOFT", state="Broken", worker="w3"),
    ]
    assert sticky_worker(make_run("Running", sessions=sessions)) == "w2"
    assert sticky_worker(make_run("Running", sessions=sessions[::2])) == "w3"
    assert sticky_worker(make_run("Running", sessions=[])) is None


def test_compact_json_truncates() -> None:
    assert compact_json({"a": [1, 2]}) == '{"a":[1,2]}'
    assert compact_json("x" * 50, limit=10) == '"xxxxxx...'


def test_progress_line_names_worker_session_and_breakage() -> None:
    sessions = [
        SessionView(
            id="run-1/s1",
            strategy="HARD",
            state="Broken",
            worker="dev-worker-2",
            reason="ProcessExited",
        ),
        SessionView(id="run-1/s2", strategy="SOFT", state="Open", worker="dev-worker-3"),
    ]
    line = progress_line(make_run("Running", sessions=sessions), 3.0).plain
    assert "Running" in line
    assert "activities 2/3" in line
    assert "worker dev-worker-3" in line
    assert "session run-1/s2 (SOFT)" in line
    assert "broken: ProcessExited" in line
