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
