"""Argument parsing of `tether`: defaults, normalisation, one-line usage errors."""

from __future__ import annotations

import pytest

from tether_operator.cli import build_parser, main


def test_dev_defaults() -> None:
    args = build_parser().parse_args(["dev", "flows.py"])
    assert (args.file, args.workers, args.port, args.host) == ("flows.py", 3, 7233, "127.0.0.1")
    assert (args.slots, args.session_capacity, args.no_restart) == (8, 4, False)


def test_run_options_are_normalised() -> None:
    args = build_parser().parse_args(
        [
            "run",
            "ml-inference",
            "--sticky",
            "hard",
            "--schedule-timeout",
            "2.5",
            "--wait",
            "-o",
            "json",
        ]
    )
    assert args.sticky == "HARD"
    assert args.schedule_timeout == 2.5
    assert args.wait is True
    assert args.output == "json"


def test_server_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_SERVER", "http://scheduler:9000")
    assert build_parser().parse_args(["get", "runs"]).server == "http://scheduler:9000"
    args = build_parser().parse_args(["--server", "http://other:1", "get", "runs"])
    assert args.server == "http://other:1"


@pytest.mark.parametrize(
    "argv",
    [
        ["run"],
        ["run", "wf", "--input", "{}", "--input-file", "x.json"],
        ["run", "wf", "--sticky", "sometimes"],
        ["run", "wf", "--timeout", "-1"],
        ["dev", "flows.py", "--workers", "0"],
        ["get", "pods"],
        ["describe", "run"],
    ],
)
def test_usage_errors_are_one_line_and_exit_1(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 0
    assert "tether dev" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"tether {version('tether')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "run", "r1"],
        ["get", "runs", "r1"],
        ["describe", "run", "r1"],
        ["describe", "runs", "r1"],
        ["cancel", "runs", "r1"],
        ["history", "runs", "r1"],
        ["wait", "runs", "r1"],
    ],
)
def test_run_and_runs_are_accepted_everywhere(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.resource, args.name) == (argv[1], "r1")


@pytest.mark.parametrize("word", ["worker", "workers"])
def test_worker_and_workers_are_accepted(word: str) -> None:
    assert build_parser().parse_args(["get", word]).resource == word


@pytest.mark.parametrize(
    "argv",
    [
        ["get", "runs", "--server", "http://after:1"],
        ["describe", "run", "r1", "--server", "http://after:1"],
        ["cancel", "run", "r1", "--server", "http://after:1"],
        ["history", "run", "r1", "--server", "http://after:1"],
        ["wait", "run", "r1", "--server", "http://after:1"],
        ["run", "wf", "--server", "http://after:1"],
        ["--server", "http://before:1", "get", "runs", "--server", "http://after:1"],
    ],
)
def test_server_is_accepted_after_the_subcommand(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_SERVER", raising=False)
    assert build_parser().parse_args(argv).server == "http://after:1"


def test_server_before_the_subcommand_is_not_reset_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_SERVER", "http://env:1")
    assert build_parser().parse_args(["--server", "http://b:1", "get", "runs"]).server == (
        "http://b:1"
    )
    assert build_parser().parse_args(["get", "runs"]).server == "http://env:1"


def test_timeout_without_wait_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "wf", "--timeout", "5"])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err == (
        "error: tether run: --timeout only applies with --wait; add --wait or drop --timeout"
        " (see `tether --help`)\n"
    )
