"""Dev mode's building blocks that need no processes: worker identities, exits, start-up errors."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.unit.cli.conftest import Result
from tether_operator.dev.workers import describe_exit, worker_specs


def test_workers_alternate_between_two_pretend_nodes(tmp_path: Path) -> None:
    specs = worker_specs(tmp_path / "flows.py", 3, "http://127.0.0.1:7233", 8, 4)
    assert [(s.worker_id, s.node) for s in specs] == [
        ("dev-worker-1", "dev-node-a"),
        ("dev-worker-2", "dev-node-b"),
        ("dev-worker-3", "dev-node-a"),
    ]


def test_worker_environment_and_command(tmp_path: Path) -> None:
    spec = worker_specs(tmp_path / "flows.py", 2, "http://127.0.0.1:9999", 3, 2)[1]
    env = spec.env()
    assert env["TETHER_SCHEDULER_URL"] == "http://127.0.0.1:9999"
    assert env["TETHER_WORKER_ID"] == env["TETHER_POD_NAME"] == "dev-worker-2"
    assert env["TETHER_NODE_NAME"] == "dev-node-b"
    assert (env["TETHER_SLOTS"], env["TETHER_SESSION_CAPACITY"]) == ("3", "2")
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path)
    assert spec.argv() == [sys.executable, "-m", "worker_runtime", str(tmp_path / "flows.py")]
    assert env["TETHER_LOG_FORMAT"] == "text"
    as_json = worker_specs(tmp_path / "flows.py", 1, "http://127.0.0.1:9999", 3, 2, "json")[0]
    assert as_json.env()["TETHER_LOG_FORMAT"] == "json"  # `tether dev --log-format json`


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_dev_with_a_missing_file_is_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    result = cli("dev", str(tmp_path / "missing.py"))
    assert result.code == 1
    assert result.err == f"error: workflow file {str(tmp_path / 'missing.py')!r} not found\n"


def test_dev_on_a_busy_port_is_one_line(cli: Callable[..., Result], tmp_path: Path) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text("")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("dev", str(flows), "--port", str(port))
    assert result.code == 1
    assert result.err.startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_dev_parser_accepts_worker_counts(workers: str) -> None:
    from tether_operator.cli import build_parser

    assert build_parser().parse_args(["dev", "f.py", "--workers", workers]).workers == int(workers)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if dev mode starts a worker process."""

    async def spawn(spec: object) -> None:
        raise AssertionError(f"a worker was started: {spec}")

    monkeypatch.setattr("tether_operator.dev.supervisor.spawn", spawn)


BAD_FILES = {
    "syntax": (
        "import worker_runtime as workflows\n\ndef broken(:\n    pass\n",
        ["line 3", "def broken(:", "SyntaxError: invalid syntax"],
    ),
    "import": (
        "import worker_runtime as workflows\nimport numpyy_not_installed\n",
        [
            "Traceback (most recent call last):",
            ", line 2, in <module>",
            "import numpyy_not_installed",
            "ModuleNotFoundError: No module named 'numpyy_not_installed'",
        ],
    ),
    "raises": (
        "import os\n"
        "print('hello from import')\n"
        "raise RuntimeError('no config for ' + os.environ['TETHER_WORKER_ID'])\n",
        ["RuntimeError: no config for dev-worker-1"],
    ),
    "exits": ("import sys\nsys.exit(3)\n", ["sys.exit(3)", "SystemExit: 3"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_dev_with_a_file_that_does_not_import_exits_with_its_error(
    kind: str, cli: Callable[..., Result], tmp_path: Path, no_workers: None
) -> None:
    source, expected = BAD_FILES[kind]
    flows = tmp_path / "flows.py"
    flows.write_text(source)
    result = cli("dev", str(flows), "--port", str(_free_port()))
    assert result.code == 1
    assert result.err.startswith(
        f"error: {flows} failed to import; no worker was started. "
        "Fix it and run `tether dev` again:\n"
    )
    for text in expected:
        assert text in result.err
    assert "worker_runtime" not in result.err  # only the user's own frames
    assert "hello from import" not in result.err + result.out
    assert result.out == ""  # no header: nothing was started


def test_dev_with_a_file_that_kills_its_process_says_so(
    cli: Callable[..., Result], tmp_path: Path, no_workers: None
) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text("import os, sys\nprint('bye', file=sys.stderr)\nos._exit(7)\n")
    result = cli("dev", str(flows), "--port", str(_free_port()))
    assert result.code == 1
    assert result.err == (
        f"error: importing {flows} stopped the Python process (exit code 7); "
        "no worker was started:\nbye\n"
    )


def test_dev_with_a_file_that_defines_nothing_to_run_is_one_line(
    cli: Callable[..., Result], tmp_path: Path, no_workers: None
) -> None:
    flows = tmp_path / "flows.py"
    flows.write_text("import worker_runtime as workflows\n\nANSWER = 42\n")
    result = cli("dev", str(flows), "--port", str(_free_port()))
    assert result.code == 1
    assert result.err.startswith(
        f"error: {flows} defines no workflows or activities; no worker was started. "
        "Decorate a class with @workflows.workflow.define"
    )
    assert result.err.count("\n") == 1


def test_the_file_check_lists_what_the_file_defines(tmp_path: Path) -> None:
    from tether_operator.dev.preflight import check_file

    flows = tmp_path / "flows.py"
    flows.write_text(
        "import worker_runtime as workflows\n"
        "@workflows.activity\n"
        "async def step() -> int:\n"
        "    return 1\n"
        "@workflows.workflow.define(name='steps')\n"
        "class Steps:\n"
        "    @workflows.workflow.entrypoint\n"
        "    async def execute(self) -> int:\n"
        "        return await step()\n"
    )
    spec = worker_specs(flows, 1, "http://127.0.0.1:7233", 8, 4)[0]
    contents = check_file(spec, "flows.py")
    assert (contents.workflows, contents.activities) == (["steps"], ["step"])
    assert contents.summary() == "workflows: steps; activities: step"


def test_the_header_suggests_a_workflow_of_the_file(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from tether_operator.dev.console import header

    specs = worker_specs(tmp_path / "flows.py", 1, "http://127.0.0.1:7233", 8, 4)
    out = io.StringIO()
    Console(file=out, width=200).print(
        header("http://127.0.0.1:7233", "flows.py", [(specs[0], 42)], True, "steps")
    )
    assert "tether run steps --input '{...}' --wait" in out.getvalue()
