"""Pure rendering helpers: durations, progress, the sticky worker column, attempts, JSON."""

from __future__ import annotations

import io

import pytest
from rich.console import RenderableType

from tests.unit.cli.conftest import make_run
from tether_operator.cli.output import Output, make_console
from tether_operator.cli.render import (
    compact_json,
    describe_run,
    human_duration,
    progress_detail,
    progress_line,
    run_progress,
    sticky_worker,
    traceback_tail,
)
from worker_runtime.protocol import ActivityView, AttemptView, ChildView, ErrorInfo, SessionView


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
        SessionView(
            id="run-1/s2", strategy="SOFT", state="Open", worker="dev-worker-3", pod="pod-3"
        ),
    ]
    line = progress_line(make_run("Running", sessions=sessions), 3.0).plain
    assert "Running" in line
    assert "steps done 2/3" in line
    assert "worker dev-worker-3" in line
    assert "session run-1/s2 (SOFT) on pod pod-3" in line
    assert "broken: ProcessExited" in line


def test_progress_line_names_the_activity_running_now() -> None:
    run = make_run("Running")
    run.activities[-1].state = "Running"
    run.activities[-1].attempt = 2
    line = progress_line(run, 1.0).plain
    assert f"now {run.activities[-1].name} #{run.activities[-1].seq}, attempt 2" in line


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/venv/worker_runtime/activities.py", line 80, in run\n'
    "    return await fn(*args)\n"
    '  File "/app/flows.py", line 9, in predict\n'
    '    raise ValueError("bad input x=3")\n'
    "ValueError: bad input x=3\n"
)


def _retried_activity(now: float) -> ActivityView:
    """`predict` failed once with a ValueError, timed out once, then completed elsewhere."""
    return ActivityView(
        seq=2,
        name="predict",
        state="Completed",
        attempt=3,
        worker="dev-worker-2",
        scheduled_at=now - 30,
        started_at=now - 20,
        finished_at=now - 19,
        attempts=[
            AttemptView(
                attempt=1,
                state="Failed",
                worker="dev-worker-1",
                node="dev-node-a",
                started_at=now - 29.5,
                finished_at=now - 29,
                error=ErrorInfo(type="ValueError", message="bad input x=3", traceback=TRACEBACK),
                retry_at=now - 28,
            ),
            AttemptView(
                attempt=2,
                state="Failed",
                worker="dev-worker-1",
                node="dev-node-a",
                started_at=now - 28,
                finished_at=now - 25,
                error=ErrorInfo(
                    type="HeartbeatTimeout",
                    reason="HeartbeatTimeout",
                    message="no heartbeat for 2s",
                ),
            ),
            AttemptView(
                attempt=3,
                state="Completed",
                worker="dev-worker-2",
                node="dev-node-b",
                started_at=now - 20,
                finished_at=now - 19,
            ),
        ],
    )


def _plain(renderable: RenderableType) -> list[str]:
    out = io.StringIO()
    Output(out=make_console(out), err=make_console(io.StringIO())).print(renderable)
    return out.getvalue().splitlines()


def test_traceback_tail_is_the_innermost_frame() -> None:
    assert traceback_tail(TRACEBACK) == [
        '  File "/app/flows.py", line 9, in predict',
        '    raise ValueError("bad input x=3")',
    ]
    assert traceback_tail(None) == []
    assert traceback_tail("no frames here") == []


def test_describe_shows_every_attempt_with_its_error() -> None:
    run = make_run("Running", activities=[_retried_activity(1000.0)], created_at=970.0)
    lines = _plain(describe_run(run, 1000.0))
    start = lines.index("Attempts:")
    header, first, frame, code, timed_out, last = lines[start + 1 : start + 7]
    assert header.split() == [
        "SEQ",
        "ACTIVITY",
        "ATTEMPT",
        "STATE",
        "WORKER",
        "NODE",
        "STARTED",
        "DURATION",
        "ERROR",
    ]
    assert first.split()[:8] == [
        "2",
        "predict",
        "1",
        "Failed",
        "dev-worker-1",
        "dev-node-a",
        "+500ms",
        "500ms",
    ]
    assert first.endswith("ValueError: bad input x=3")
    assert frame.strip() == 'File "/app/flows.py", line 9, in predict'
    assert code.strip() == 'raise ValueError("bad input x=3")'
    assert timed_out.split()[:4] == ["2", "predict", "2", "Failed"]
    assert timed_out.endswith("HeartbeatTimeout: no heartbeat for 2s [HeartbeatTimeout]")
    assert last.split()[:4] == ["2", "predict", "3", "Completed"]
    assert last.endswith("<none>")


def test_describe_progress_counts_what_was_scheduled() -> None:
    run = make_run("Running")
    assert "Progress:         2/3 scheduled steps done (2 completed, 1 running)" in _plain(
        describe_run(run, run.created_at)
    )


def test_progress_counts_failed_activities_and_child_runs_as_done() -> None:
    failed = make_run("Failed").activities[0].model_copy(update={"state": "Failed"})
    children = [
        ChildView(seq=5, run_id="c1", workflow="child", phase="Succeeded"),
        ChildView(seq=6, run_id="c2", workflow="child", phase="Running"),
    ]
    run = make_run("Running", activities=[failed], children=children)
    assert run_progress(run) == "2/3"
    assert progress_detail(run) == "2/3 scheduled steps done (1 failed, 1 completed, 1 running)"


def test_describe_names_the_strategy_of_sessions_the_code_opened() -> None:
    soft = [SessionView(id="a", strategy="SOFT", state="Closed", worker="w1")]
    lines = _plain(describe_run(make_run("Succeeded", sessions=soft, sticky=None), 1000.0))
    (line,) = [x for x in lines if x.startswith("Sticky strategy:")]
    assert line.split(":", 1)[1].strip() == "SOFT (opened by the workflow code)"
    lines = _plain(describe_run(make_run("Succeeded", sessions=[], sticky=None), 1000.0))
    (line,) = [x for x in lines if x.startswith("Sticky strategy:")]
    assert line.split(":", 1)[1].strip() == "<none>"
