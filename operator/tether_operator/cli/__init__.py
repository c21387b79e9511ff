"""The `tether` command line (`tether dev`, `tether run`, `tether get`, ...)."""

from tether_operator.cli.client import CliError, SchedulerClient
from tether_operator.cli.main import build_parser, main, run_command

__all__ = ["CliError", "SchedulerClient", "build_parser", "main", "run_command"]
