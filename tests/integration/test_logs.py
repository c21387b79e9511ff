"""JSON log lines carry the run, activity, attempt and worker they are about."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import worker_runtime as workflows
from worker_runtime import activity, run_sticky_worker_session
from worker_runtime.logs import JsonFormatter, log_format
from worker_runtime.testing import WorkflowEnvironment
from worker_runtime.workflow import entrypoint

user_log = logging.getLogger("tests.user-code")


@activity()
async def shout(word: str) -> str:
    user_log.warning("shouting %s", word)
    return word.upper()


@workflows.workflow.define(name="shouter")
class Shouter:
    @entrypoint
    async def execute(self, word: str) -> str:
        user_log.warning("workflow code speaks")
        async with run_sticky_worker_session():
            return await shout(word)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter({"worker": "from-the-process", "node": "ignored"}))
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_a_user_log_line_in_an_activity_carries_its_context() -> None:
    lines = Lines()
    user_log.addHandler(lines)
    try:
        async with WorkflowEnvironment([Shouter], [shout]) as env:
            assert await env.execute(Shouter, "hey") == "HEY"
    finally:
        user_log.removeHandler(lines)
    in_activity = next(line for line in lines.lines if line["message"] == "shouting hey")
    assert in_activity["activity"] == "shout"
    assert in_activity["workflow"] == "shouter"
    assert in_activity["attempt"] == 1
    assert str(in_activity["run"]).startswith("shouter-")
    assert in_activity["session"]
    assert in_activity["worker"] != "from-the-process"  # the attempt's worker wins
    assert in_activity["level"] == "WARNING"
    assert in_activity["logger"] == "tests.user-code"
    in_workflow = next(line for line in lines.lines if line["message"] == "workflow code speaks")
    assert in_workflow["run"] == in_activity["run"]
    assert "activity" not in in_workflow
    assert "node" not in in_workflow  # only the documented fields


def test_outside_any_run_a_line_has_the_process_fields_and_its_own_extra() -> None:
    record = logging.LogRecord("tether.scheduler", logging.INFO, __file__, 1, "hi", None, None)
    record.run = "r-1"
    line = json.loads(JsonFormatter({"worker": "w-1"}).format(record))
    assert (line["run"], line["worker"], line["message"]) == ("r-1", "w-1", "hi")
    assert "activity" not in line


def test_the_format_comes_from_the_flag_else_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TETHER_LOG_FORMAT", raising=False)
    assert log_format() == "text"
    monkeypatch.setenv("TETHER_LOG_FORMAT", "JSON")
    assert log_format() == "json"
    assert log_format("text") == "text"
    with pytest.raises(ValueError, match="use text or json"):
        log_format("yaml")


def test_a_worker_refuses_an_unknown_log_format(tmp_path: Path) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "worker_runtime", "--log-format", "yaml", str(flows)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "log format 'yaml': use text or json" in done.stderr


def test_the_operator_refuses_an_unknown_log_format_from_the_environment() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tether_operator.cli", "operator"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TETHER_LOG_FORMAT": "yaml"},
    )
    assert done.returncode != 0
    assert "log format 'yaml': use text or json" in done.stderr
