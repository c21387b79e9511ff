"""Loading a user's worker file and the `python -m worker_runtime` entry point."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from worker_runtime.__main__ import main
from worker_runtime.loader import discover, load_module

USER_FILE = """
import worker_runtime as workflows
from helper_mod import VALUE

@workflows.activity(name="renamed")
async def act(x: int) -> int:
    return x + VALUE

@workflows.workflow.define(name="user-wf")
class UserWorkflow:
    @workflows.workflow.entrypoint
    async def run(self) -> int:
        return await act(1)

class NotAWorkflow:
    pass
"""


def write_user_file(tmp_path: Path) -> Path:
    (tmp_path / "helper_mod.py").write_text("VALUE = 41\n")
    path = tmp_path / "my worker.py"
    path.write_text(USER_FILE)
    return path


def test_load_and_discover(tmp_path: Path) -> None:
    module = load_module(write_user_file(tmp_path))
    assert load_module(tmp_path / "my worker.py") is module  # stable name, loaded once
    workflows, activities = discover(module)
    assert [w.__name__ for w in workflows] == ["UserWorkflow"]
    assert [a.name for a in activities] == ["renamed"]


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/nonexistent/worker.py"]) == 2
    assert "no such Python file" in capsys.readouterr().err


def test_unreachable_scheduler_prints_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TETHER_CONNECT_TIMEOUT", "0.2")
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        assert main([str(write_user_file(tmp_path)), "--scheduler-url", url]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("worker_runtime: scheduler unreachable")
    assert "Traceback" not in err[0]


@pytest.mark.parametrize(
    ("source", "said"),
    [
        ("import worker_runtime\ndef broken(:\n    pass\n", "SyntaxError: invalid syntax"),
        ("import no_such_module_anywhere\n", "ModuleNotFoundError: No module named"),
        ("x = 1\nraise RuntimeError('no model file')\n", "RuntimeError: no model file"),
    ],
    ids=["syntax", "import", "raises"],
)
def test_a_file_that_cannot_load_says_why_in_one_line_to_kubernetes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
    said: str,
) -> None:
    flows = tmp_path / "flows_broken.py"
    flows.write_text(source)
    log = tmp_path / "termination-log"
    log.write_text("")  # the kubelet mounts it; the worker writes only if it exists
    monkeypatch.setenv("TETHER_TERMINATION_LOG", str(log))
    assert main([str(flows)]) == 3
    message = log.read_text()
    assert message.startswith(f"cannot load {flows}: {said}"), message
    assert f"({flows}, line " in message, "names the line of the user's file"
    assert "\n" not in message
    assert "Traceback" in capsys.readouterr().err, "the whole traceback goes to the log"


def test_signal_restarts_the_containers_worker_without_a_kill_binary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`kubectl exec POD -- python -m worker_runtime --signal TERM` (the image has no
    `kill`): the worker, PID 1 there, gets SIGTERM."""
    import subprocess
    import sys

    marker = tmp_path / "got"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            f"signal.signal(signal.SIGTERM, lambda *_: (open({str(marker)!r}, 'w').write('TERM'),"
            " sys.exit(0)))\n"
            "print('ready', flush=True)\n"
            "time.sleep(30)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        monkeypatch.setenv("TETHER_SIGNAL_PID", str(child.pid))
        assert main(["--signal", "TERM"]) == 0
        assert child.wait(10) == 0
        assert marker.read_text() == "TERM"
    finally:
        child.kill()
        child.communicate()
    assert main(["--signal", "NOPE"]) == 2
