"""The `tether` command line: argument parsing and the one place errors become exit codes."""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import NoReturn

import httpx

from tether_operator.cli import commands
from tether_operator.cli.client import DEFAULT_SERVER, CliError, SchedulerClient
from tether_operator.cli.forward import KUBE_SERVER, LeaderForward
from tether_operator.cli.output import Output
from tether_operator.cli.ui import DEFAULT_UI_PORT, serve_ui
from tether_operator.k8s.api.client import kubeconfig_namespace

SERVER_ENV = "TETHER_SERVER"
"""Environment variable naming the scheduler URL (overridden by `--server`)."""
TOKEN_ENV = "TETHER_TOKEN"
"""Environment variable holding the bearer token to send (overridden by `--token`)."""
OPERATOR_NS_ENV = "TETHER_OPERATOR_NAMESPACE"
"""Environment variable naming the operator's namespace for `--server kube`."""
NAMESPACE_ENV = "TETHER_NAMESPACE"
"""Environment variable naming the runs' namespace (overridden by `-n`)."""

Command = Callable[[argparse.Namespace, SchedulerClient, Output], int]

RUN_WORDS = ("run", "runs")
"""How a command names runs: either spelling works everywhere."""
WORKER_WORDS = ("worker", "workers")
"""How a command names workers: either spelling works everywhere."""
WORKFLOW_WORDS = ("workflow", "workflows")
SCHEDULE_WORDS = ("schedule", "schedules")
"""How `get` names workflows: either spelling works."""

EPILOG = """\
examples:
  tether dev examples/ml_inference.py --workers 3
  tether run ml-inference --input '{"batch": [{"x": 1}, {"x": 2}]}' --wait
  tether get runs
  tether describe run RUN_ID
  tether wait run RUN_ID --timeout 60
  tether ui RUN_ID                      # the run's timeline in a browser
"""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one `error:` line and exit code 1, and never
    shows a token it was given."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {redact(message)} (see `{self.prog} --help`)\n")
        raise SystemExit(1)


_TOKEN_ARG = re.compile(r"(--token(?:=|\s+))\S+")


def redact(text: str) -> str:
    """`text` with the value of any `--token` replaced (a usage error echoes argv)."""
    return _TOKEN_ARG.sub(r"\1<redacted>", text)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port")
    return value


def _port_or_off(text: str) -> int:
    return 0 if text.strip() == "0" else _port(text)


def tether_version() -> str:
    """The installed version of the `tether` distribution."""
    try:
        return version("tether")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _server_flag(parser: argparse.ArgumentParser, default: str | None) -> None:
    """`--server URL`, `--token TOKEN` and `-n NAMESPACE`, accepted before and after
    the subcommand.

    After the subcommand their defaults are SUPPRESS, so they only override the
    top-level values when they are actually given.
    """
    top = default is not None
    parser.add_argument(
        "--server",
        metavar="URL",
        default=default if top else argparse.SUPPRESS,
        help=f"scheduler URL (env {SERVER_ENV}; default {DEFAULT_SERVER}), or `kube`: the "
        "leading operator through the kubeconfig (a kubectl port-forward that follows it)",
    )
    parser.add_argument(
        "--operator-namespace",
        metavar="NS",
        default=(os.environ.get(OPERATOR_NS_ENV) or "tether-system") if top else argparse.SUPPRESS,
        help=f"with --server kube: the operator's namespace (env {OPERATOR_NS_ENV}; "
        "default tether-system)",
    )
    parser.add_argument(
        "--token",
        default=(os.environ.get(TOKEN_ENV) or None) if top else argparse.SUPPRESS,
        help=f"bearer token for a scheduler that checks one (env {TOKEN_ENV}), e.g. "
        "$(kubectl create token SA --audience tether.dev/scheduler)",
    )
    parser.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help=f"on Kubernetes, the namespace of the runs (env {NAMESPACE_ENV}; default the "
        "kubeconfig's current one, as kubectl; dev mode has one and ignores it)",
    )


def _output_flag(parser: argparse.ArgumentParser, choices: Sequence[str]) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=list(choices),
        default="table",
        help=f"output format ({'|'.join(choices)}; default table)",
    )


def build_parser() -> ArgumentParser:
    """The full `tether` argument parser."""
    parser = ArgumentParser(
        prog="tether",
        description="Tether: durable Python workflows with sticky worker sessions.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"tether {tether_version()}")
    _server_flag(parser, os.environ.get(SERVER_ENV, DEFAULT_SERVER))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)

    dev = sub.add_parser(
        "dev",
        help="run a scheduler and local workers for a workflow file",
        description=(
            "Start a scheduler in this process and N worker processes running FILE. "
            "Workers alternate between two pretend nodes, dev-node-a and dev-node-b, so "
            "node preference on session rebinds is visible. A worker that exits is "
            "reported lost at once and restarted with the same id (like a container "
            "restart in the same pod). Ctrl-C stops everything."
        ),
    )
    dev.add_argument("file", metavar="FILE", help="Python file defining workflows and activities")
    dev.add_argument("--workers", type=_positive_int, default=3, help="worker processes (3)")
    dev.add_argument("--port", type=_port, default=7233, help="scheduler port (7233)")
    dev.add_argument("--host", default="127.0.0.1", help="scheduler address (127.0.0.1)")
    dev.add_argument(
        "--metrics-port",
        type=_port_or_off,
        default=9090,
        help="Prometheus /metrics port (9090; 0: off)",
    )
    dev.add_argument("--slots", type=_positive_int, default=8, help="activities per worker (8)")
    dev.add_argument(
        "--session-capacity", type=_positive_int, default=4, help="sessions per worker (4)"
    )
    dev.add_argument("--no-restart", action="store_true", help="do not restart workers that exit")
    dev.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="text (the console) or json: the scheduler's and workers' logs as JSON lines",
    )
    dev.add_argument(
        "--db",
        metavar="PATH",
        help="keep run history in this SQLite file: runs survive a restart of dev mode "
        "and go on where they were (default: in memory, gone when dev mode stops)",
    )

    op = sub.add_parser(
        "operator",
        help="run the Kubernetes operator: kopf watches and the scheduler in one process",
        description=(
            "Watch WorkflowRuns, Workflows and WorkerPools and serve the scheduler's HTTP "
            "API for workers. Uses the in-cluster service account, else KUBECONFIG. "
            "SIGTERM stops it cleanly."
        ),
    )
    op.add_argument("--host", default="0.0.0.0", help="scheduler address (0.0.0.0)")
    op.add_argument("--port", type=_port, default=7233, help="scheduler port (7233)")
    op.add_argument(
        "--metrics-port",
        type=_port_or_off,
        default=9090,
        help="Prometheus /metrics port (9090; 0: off)",
    )
    op.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch this namespace (repeatable; default $TETHER_WATCH_NAMESPACES, else all)",
    )
    op.add_argument(
        "--scheduler-url",
        help="the URL worker pods reach the scheduler at (default $TETHER_SCHEDULER_URL)",
    )
    op.add_argument(
        "--store",
        choices=["kubernetes", "postgres", "memory"],
        default=os.environ.get("TETHER_STORE", "kubernetes"),
        help="where run history lives: kubernetes (ConfigMaps, default, or $TETHER_STORE), "
        "postgres (the database $TETHER_STORE_DSN names) or memory (lost on exit)",
    )
    op.add_argument(
        "--auth",
        choices=["tokenreview", "none"],
        help="who may call the scheduler: tokenreview (bearer tokens checked with the API "
        "server; default, or $TETHER_AUTH) or none (anyone who reaches the port)",
    )
    op.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="wait for the leader-election Lease before serving (default $TETHER_LEADER_ELECT, "
        "else off: one operator)",
    )
    op.add_argument(
        "--lease-name",
        help="the Lease of leader election, in the operator's namespace "
        "(default $TETHER_LEASE_NAME, else tether)",
    )
    op.add_argument("--log-level", default="INFO", help="log level (INFO)")
    op.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="text, or json: one object per line with the run a line is about "
        "(default: $TETHER_LOG_FORMAT, else text)",
    )

    run = sub.add_parser("run", help="start a workflow run (and optionally wait for it)")
    run.add_argument("workflow", metavar="WORKFLOW", help="registered workflow name")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--input", help="run input as JSON")
    source.add_argument(
        "--input-file", metavar="PATH", help="read the JSON input from PATH (- is stdin)"
    )
    run.add_argument("--id", help="run id (default: generated)")
    run.add_argument(
        "--sticky", type=str.upper, choices=["SOFT", "HARD"], help="override the sticky strategy"
    )
    run.add_argument(
        "--schedule-timeout",
        type=_positive_float,
        metavar="S",
        help="how long a HARD session waits for its lost worker (seconds)",
    )
    run.add_argument("--wait", action="store_true", help="follow the run until it ends")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="with --wait: give up waiting after S seconds (the run keeps going)",
    )
    _output_flag(run, ["table", "json"])
    _server_flag(run, None)
    run.set_defaults(handler=commands.cmd_run)

    get = sub.add_parser(
        "get", help="list runs, workers or workflows, or show one run, worker or workflow"
    )
    get.add_argument(
        "resource",
        choices=[*RUN_WORDS, *WORKER_WORDS, *WORKFLOW_WORDS, *SCHEDULE_WORDS],
        metavar="RESOURCE",
        help="runs (or run) | workers (or worker) | workflows (or workflow) | schedules "
        "(or schedule)",
    )
    get.add_argument("name", nargs="?", metavar="NAME", help="one run (or worker) by name")
    _output_flag(get, ["table", "json", "wide"])
    _server_flag(get, None)
    get.set_defaults(handler=commands.cmd_get)

    for name, help_text, handler in (
        ("describe", "show a run's activities, sessions and children", commands.cmd_describe),
        ("cancel", "cancel a run", commands.cmd_cancel),
        ("history", "show a run's recorded history events", commands.cmd_history),
    ):
        command = sub.add_parser(name, help=help_text)
        command.add_argument("resource", choices=RUN_WORDS, metavar="run")
        command.add_argument("name", metavar="ID", help="run id")
        _output_flag(command, ["table", "json"])
        _server_flag(command, None)
        command.set_defaults(handler=handler)

    schedule = sub.add_parser(
        "schedule",
        help="start a schedule's run now, or suspend or resume the schedule",
        description=(
            "trigger starts one run of the schedule at once, whatever its concurrency "
            "policy and even while it is suspended (on Kubernetes it sets the schedule's "
            "tether.dev/trigger annotation, as `kubectl annotate wfs NAME "
            "tether.dev/trigger=$(date +%%s) --overwrite` does). suspend and resume set "
            "spec.suspend."
        ),
    )
    schedule.add_argument(
        "action",
        choices=["trigger", "suspend", "resume"],
        metavar="ACTION",
        help="trigger | suspend | resume",
    )
    schedule.add_argument(
        "name",
        metavar="NAME",
        help="the schedule (a WorkflowSchedule, or in dev mode the workflow that declares it)",
    )
    _output_flag(schedule, ["table", "json"])
    _server_flag(schedule, None)
    schedule.set_defaults(handler=commands.cmd_schedule)

    wait = sub.add_parser("wait", help="wait for a run to end (exit 0 if it succeeded)")
    wait.add_argument("resource", choices=RUN_WORDS, metavar="run")
    wait.add_argument("name", metavar="ID", help="run id")
    wait.add_argument(
        "--timeout", type=_positive_float, metavar="S", help="give up after S seconds"
    )
    _output_flag(wait, ["table", "json"])
    _server_flag(wait, None)
    wait.set_defaults(handler=commands.cmd_wait)

    ui = sub.add_parser(
        "ui",
        help="open the run timeline page in a browser",
        description=(
            "Open the scheduler's run page (/ui/): runs, a run's timeline per pod with its "
            "sessions and breaks, and the workers. With --server kube, port-forward to the "
            "leading operator and keep following it until Ctrl-C. A --token (or "
            "TETHER_TOKEN) is handed to the page."
        ),
    )
    ui.add_argument("run_id", nargs="?", metavar="RUN_ID", help="open this run's page")
    ui.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_UI_PORT,
        help=f"with --server kube: the local port ({DEFAULT_UI_PORT})",
    )
    ui.add_argument("--no-open", action="store_true", help="print the address only")
    _server_flag(ui, None)
    return parser


def _dev(args: argparse.Namespace, output: Output) -> int:
    """`tether dev FILE`: imported lazily, it pulls in the scheduler, FastAPI and uvicorn."""
    from tether_operator.dev import DevError, DevOptions, run_dev

    options = DevOptions(
        file=args.file,
        workers=args.workers,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
        slots=args.slots,
        session_capacity=args.session_capacity,
        restart=not args.no_restart,
        db=args.db,
        log_format=args.log_format,
    )
    try:
        return run_dev(options, console=output.out)
    except DevError as exc:
        raise CliError(str(exc)) from None


LIBRARY_LOGGERS = ("httpx", "httpcore", "kopf", "asyncio", "uvicorn.access", "hpack")
"""Loggers of the libraries under the operator: a line per API call, per connection
and per handled event would drown what matters, whatever `--log-level` says."""


def quiet_libraries() -> None:
    """Keep `LIBRARY_LOGGERS` at `$TETHER_LIBRARY_LOG_LEVEL` (default WARNING)."""
    import logging
    import os

    level = os.environ.get("TETHER_LIBRARY_LOG_LEVEL", "WARNING").upper()
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _operator(args: argparse.Namespace) -> int:
    """`tether operator`: imported lazily, it pulls in kopf and the scheduler."""
    import asyncio

    from tether_operator.k8s.access.leader import LeadershipLost
    from tether_operator.k8s.api.client import KubeConfigError
    from tether_operator.k8s.context import OperatorSettings
    from tether_operator.k8s.operator import run_operator
    from tether_operator.store.fencing import Fenced
    from worker_runtime.logs import configure_logging, log_format

    try:
        fmt = log_format(args.log_format)
    except ValueError as exc:  # TETHER_LOG_FORMAT names no format
        raise CliError(str(exc)) from None
    configure_logging(args.log_level, fmt)
    quiet_libraries()
    try:
        settings = OperatorSettings(
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            store=args.store,
            **({"auth": args.auth} if args.auth else {}),
        )
    except ValueError as exc:  # TETHER_AUTH names no mode
        raise CliError(str(exc)) from None
    if settings.store == "postgres" and not settings.store_dsn:
        raise CliError(
            "--store postgres needs the database's DSN in TETHER_STORE_DSN "
            "(postgresql://USER:PASSWORD@HOST:5432/DB; the chart sets it from "
            "store.postgres.existingSecret)"
        )
    if args.namespaces:
        settings.namespaces = tuple(args.namespaces)
    if args.scheduler_url:
        settings.scheduler_url = args.scheduler_url
    if args.leader_elect is not None:
        settings.leader_elect = args.leader_elect
    if args.lease_name:
        settings.lease_name = args.lease_name
    try:
        asyncio.run(run_operator(settings))
    except KubeConfigError as exc:
        raise CliError(str(exc)) from None
    except (LeadershipLost, Fenced) as exc:
        # Exit non-zero: the container restarts and stands by for the Lease again.
        raise CliError(f"stopped: {exc}") from None
    return 0


def run_command(
    argv: Sequence[str] | None = None,
    *,
    output: Output | None = None,
    transport: httpx.BaseTransport | None = None,
) -> int:
    """Parse `argv` and run the command; return the exit code (errors already printed).

    `transport` replaces the network in tests (an `httpx.MockTransport`).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run" and args.timeout is not None and not args.wait:
        parser.error("tether run: --timeout only applies with --wait; add --wait or drop --timeout")
    output = output or Output()
    try:
        if args.command is None:
            parser.print_help(sys.stdout)
            return 0
        if args.command == "dev":
            return _dev(args, output)
        if args.command == "operator":
            return _operator(args)
        if args.command == "ui":
            return serve_ui(
                args.server,
                output,
                run_id=args.run_id,
                token=args.token,
                operator_namespace=args.operator_namespace,
                port=args.port,
                open_browser=not args.no_open,
            )
        handler: Command = args.handler
        if getattr(args, "namespace", None) is None:
            args.namespace = os.environ.get(NAMESPACE_ENV) or kubeconfig_namespace()
        if args.server == KUBE_SERVER and transport is None:
            forward = LeaderForward(namespace=args.operator_namespace)
            try:
                server = forward.url()
                with SchedulerClient(server, token=args.token, follow=forward.url) as client:
                    return handler(args, client, output)
            finally:
                forward.close()
        with SchedulerClient(args.server, transport=transport, token=args.token) as client:
            return handler(args, client, output)
    except CliError as exc:
        output.err.file.write(f"error: {exc}\n")
        output.err.file.flush()
        return 1
    except KeyboardInterrupt:
        output.err.file.write("interrupted\n")
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: `tether ...`."""
    raise SystemExit(run_command(argv))
