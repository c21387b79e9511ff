"""`make demo` (scripts/demo.sh) prints commands a user can paste back, quotes kept."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

DEMO = Path(__file__).parents[3] / "scripts" / "demo.sh"


def _shell_quote(*args: str) -> str:
    """What the demo prints for a command run with these arguments."""
    done = subprocess.run(
        ["bash", "-c", 'source "$1"; shift; shell_quote "$@"', "bash", str(DEMO), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["tether", "get", "workers"],
        ["tether", "run", "ml-inference", "--input", '{"batch": [{"x": 1}, {"x": 2}]}', "--wait"],
        ["tether", "run", "wf", "--input", "it's $HOME `x` \\ !"],
        ["tether", "run", "wf", "--id", ""],
        ["kill", "-KILL", "4242"],
    ],
)
def test_printed_commands_parse_back_to_the_same_arguments(argv: list[str]) -> None:
    assert shlex.split(_shell_quote(*argv)) == argv


def test_json_input_is_printed_in_single_quotes() -> None:
    assert _shell_quote("tether", "run", "wf", "--input", '{"n": 3}', "--wait") == (
        "tether run wf --input '{\"n\": 3}' --wait"
    )


def test_sourcing_the_script_runs_nothing() -> None:
    done = subprocess.run(
        ["bash", "-c", 'source "$1"; echo "sourced, dev mode pid: [$DEV_PID]"', "bash", str(DEMO)],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    assert (done.stdout, done.stderr) == ("sourced, dev mode pid: []\n", "")


def test_the_script_is_valid_bash_and_shellcheck_clean() -> None:
    subprocess.run(["bash", "-n", str(DEMO)], check=True, timeout=10)
    shellcheck = shutil.which("shellcheck")
    if shellcheck is not None:  # not every machine has it; bash -n above always runs
        done = subprocess.run(
            [shellcheck, str(DEMO)], capture_output=True, text=True, check=False, timeout=60
        )
        assert done.returncode == 0, done.stdout
