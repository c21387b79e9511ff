"""The `tether` subcommands that talk to a running scheduler (everything but `dev`).

Each command takes the parsed arguments, a `SchedulerClient` and an `Output`,
and returns the process exit code; failures are raised as `CliError`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError
from rich.live import Live
from rich.text import Text

from tether_operator.cli.client import CliError, SchedulerClient
from tether_operator.cli.output import Output
from tether_operator.cli.render import (
    describe_run,
    history_table,
    progress_line,
    run_summary,
    runs_table,
    schedules_table,
    to_json,
    workers_table,
    workflows_table,
)
from tether_types.views import TERMINAL_PHASES
from worker_runtime.protocol import RunView, ScheduleView, StartRunRequest

T = TypeVar("T")

WAIT_POLL_SECONDS = 0.5
"""How long one long-poll of `/wait` lasts, i.e. how often the live view refreshes."""


def exit_code_for(run: RunView) -> int:
    """0 when the run succeeded, 1 when it failed or was cancelled (or is not finished)."""
    return 0 if run.phase == "Succeeded" else 1


def read_input(args: argparse.Namespace) -> Any:
    """The run input from `--input JSON` or `--input-file PATH` (`-` is stdin)."""
    if args.input is not None:
        try:
            return json.loads(args.input)
        except json.JSONDecodeError as exc:
            raise CliError(f"--input is not valid JSON: {exc}") from None
    if args.input_file is not None:
        path = str(args.input_file)
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read --input-file {path}: {exc.strerror or exc}") from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"--input-file {path} is not valid JSON: {exc}") from None
    return None


def by_id(args: argparse.Namespace, fetch: Callable[[str], T]) -> T:
    """`fetch(args.name)`. On Kubernetes a run's id is `<namespace>.<name>`: an id without
    a dot that is not found (or is refused: it names a run of the operator's namespace)
    is looked for again in the namespace (-n, else the kubeconfig's), as kubectl finds a
    WorkflowRun by its name; the first error is reported if that fails too."""
    try:
        return fetch(args.name)
    except CliError as exc:
        namespace = getattr(args, "namespace", None)
        if exc.status not in (403, 404) or not namespace or "." in args.name:
            raise
        try:
            return fetch(f"{namespace}.{args.name}")
        except CliError as again:
            if again.status == 404:
                raise exc from None
            raise


def find_run(client: SchedulerClient, args: argparse.Namespace) -> RunView:
    """The run `args.name` names (`by_id`)."""
    return by_id(args, client.get_run)


def build_start_request(args: argparse.Namespace) -> StartRunRequest:
    """Validate the `tether run` arguments into the wire request, with CLI-worded errors."""
    fields: dict[str, Any] = {"workflow": args.workflow, "input": read_input(args)}
    if getattr(args, "namespace", None):
        fields["namespace"] = args.namespace
    if args.id is not None:
        fields["run_id"] = args.id
    if args.sticky is not None:
        fields["sticky"] = args.sticky
    if args.schedule_timeout is not None:
        fields["schedule_timeout"] = args.schedule_timeout
    try:
        return StartRunRequest.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        flags = {"run_id": "--id", "schedule_timeout": "--schedule-timeout", "namespace": "-n"}
        flag = flags.get(where, where)
        raise CliError(f"invalid {flag}: {first['msg']}") from None


def cmd_run(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether run WORKFLOW`: start a run; with `--wait`, follow it to the end."""
    request = build_start_request(args)
    run = client.start_run(request)
    if not args.wait:
        if args.output == "json":
            output.json(to_json(run))
        else:
            output.print(f"run/{run.run_id} created (workflow {run.workflow})")
            output.err.print(
                f"follow it with: tether get run {run.run_id}   |   "
                f"tether describe run {run.run_id}",
                style="dim",
            )
        return 0
    try:
        run = wait_for_run(client, run, args.timeout, output, live=args.output != "json")
    except KeyboardInterrupt:
        raise CliError(
            f"stopped waiting; run {run.run_id!r} keeps running"
            f" (`tether cancel run {run.run_id}` stops it)"
        ) from None
    if args.output == "json":
        output.json(to_json(run))
    else:
        output.print(run_summary(run, time.time()))
    if run.phase not in TERMINAL_PHASES:
        raise CliError(
            f"run {run.run_id!r} did not finish within {args.timeout:g}s (phase {run.phase});"
            f" it keeps running — see `tether describe run {run.run_id}`"
        )
    return exit_code_for(run)


class _LiveProgress:
    """The live line of `--wait`: the latest view, with the elapsed time ticking."""

    def __init__(self, run: RunView, started: float) -> None:
        self.run = run
        self.started = started

    def __rich__(self) -> Text:
        return progress_line(self.run, time.monotonic() - self.started)


def wait_for_run(
    client: SchedulerClient,
    run: RunView,
    timeout: float | None,
    output: Output,
    *,
    live: bool,
) -> RunView:
    """Long-poll `/wait` until the run is terminal or `timeout` passes; show progress live."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    show_live = live and output.err.is_terminal

    def step(current: RunView) -> RunView:
        wait = WAIT_POLL_SECONDS
        if deadline is not None:
            wait = max(min(wait, deadline - time.monotonic()), 0.0)
        return client.wait_run(current.run_id, wait)

    def done(current: RunView) -> bool:
        if current.phase in TERMINAL_PHASES:
            return True
        return deadline is not None and time.monotonic() >= deadline

    if not show_live:
        while not done(run):
            run = step(run)
        return run
    view = _LiveProgress(run, started)
    with Live(view, console=output.err, transient=True, refresh_per_second=8):
        while not done(run):
            run = view.run = step(run)
    return run


def cmd_wait(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether wait run ID`: follow an existing run to the end; exit 0 only if it succeeded."""
    run = wait_for_run(
        client, find_run(client, args), args.timeout, output, live=args.output != "json"
    )
    if args.output == "json":
        output.json(to_json(run))
    else:
        output.print(run_summary(run, time.time()))
    if run.phase not in TERMINAL_PHASES:
        raise CliError(
            f"run {run.run_id!r} did not finish within {args.timeout:g}s (phase {run.phase})"
        )
    return exit_code_for(run)


def cmd_get(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether get runs|run ID|workers|workflows`."""
    now = time.time()
    if args.resource in {"workflows", "workflow"}:
        registered = client.list_workflows()
        if args.name:
            registered.workflows = [w for w in registered.workflows if w.name == args.name]
            if not registered.workflows:
                raise CliError(f'workflow "{args.name}" is not registered')
        if args.output == "json":
            output.json(to_json(registered.workflows[0] if args.name else registered))
        elif not registered.workflows:
            output.err.print("No workflows registered.")
        else:
            output.print(workflows_table(registered))
        return 0
    if args.resource in {"schedules", "schedule"}:
        schedules = client.list_schedules()
        if args.name:
            schedules.schedules = [find_schedule(client, args)]
        if args.output == "json":
            output.json(to_json(schedules.schedules[0] if args.name else schedules))
        elif not schedules.schedules:
            output.err.print(
                "No schedules. On Kubernetes: kubectl apply a WorkflowSchedule; in dev mode: "
                'declare one in code, @workflow.define(schedule="*/5 * * * *").'
            )
        else:
            output.print(schedules_table(schedules.schedules))
        return 0
    if args.resource in {"workers", "worker"}:
        workers = client.list_workers()
        if args.name:
            workers.workers = [w for w in workers.workers if w.worker_id == args.name]
            if not workers.workers:
                raise CliError(f'worker "{args.name}" not found')
        if args.output == "json":
            output.json(to_json(workers))
        elif not workers.workers:
            output.err.print("No workers registered.")
        else:
            output.print(workers_table(workers.workers))
        return 0
    if args.name:
        run = find_run(client, args)
        if args.output == "json":
            output.json(to_json(run))
        else:
            output.print(runs_table([run], now, wide=args.output == "wide"))
        return 0
    runs = client.list_runs()
    if args.output == "json":
        output.json(to_json(runs))
    elif not runs.runs:
        output.err.print("No runs found.")
    else:
        output.print(runs_table(runs.runs, now, wide=args.output == "wide"))
    return 0


def find_schedule(client: SchedulerClient, args: argparse.Namespace) -> ScheduleView:
    """The schedule `args.name`: in the namespace (-n, else the kubeconfig's) when it has
    one of that name, else the only one of that name (dev mode has its own namespace)."""
    found = [s for s in client.list_schedules().schedules if s.name == args.name]
    here = [s for s in found if s.namespace == getattr(args, "namespace", None)]
    if here or len(found) == 1:
        return (here or found)[0]
    if not found:
        raise CliError(f'schedule "{args.name}" not found (tether get schedules lists them)')
    where = ", ".join(sorted(s.namespace for s in found))
    raise CliError(f'schedule "{args.name}" is in several namespaces ({where}): pick one with -n')


def cmd_schedule(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether schedule trigger|suspend|resume NAME`."""
    schedule = find_schedule(client, args)
    if args.action == "trigger":
        run = client.trigger_schedule(schedule.namespace, schedule.name)
        if args.output == "json":
            output.json(to_json(run))
        else:
            output.print(f"schedule {schedule.name} triggered: run {run.run_id} started")
        return 0
    view = client.suspend_schedule(schedule.namespace, schedule.name, args.action == "suspend")
    if args.output == "json":
        output.json(to_json(view))
    else:
        output.print(f"schedule {view.name} {'suspended' if view.suspend else 'resumed'}")
    return 0


def cmd_describe(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether describe run ID`: everything about one run."""
    run = find_run(client, args)
    if args.output == "json":
        output.json(to_json(run))
    else:
        output.print(describe_run(run, time.time()))
    return 0


def cmd_cancel(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether cancel run ID`; a run that already finished is left alone, and says so."""
    run = find_run(client, args)
    already = run.phase in TERMINAL_PHASES
    if not already:
        run = client.cancel_run(run.run_id)
        # It may have finished on its own between the two calls.
        already = run.phase in TERMINAL_PHASES - {"Cancelled"}
    if args.output == "json":
        output.json(to_json(run))
    elif already:
        output.print(f"run/{run.run_id} already finished (phase {run.phase}); nothing to cancel")
    else:
        output.print(f"run/{run.run_id} cancel requested (phase {run.phase})")
    return 0


def cmd_history(args: argparse.Namespace, client: SchedulerClient, output: Output) -> int:
    """`tether history run ID`: the recorded events of a run."""
    history = by_id(args, client.history)
    if args.output == "json":
        output.json(to_json(history))
    elif not history.events:
        output.err.print(f"run {history.run_id} has no history yet.")
    else:
        output.print(history_table(history.events))
    return 0
