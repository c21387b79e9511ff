"""What `tether dev` prints: the header, worker output, lifecycle lines and engine notices."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tether_operator.dev.workers import WorkerSpec
from tether_types.notices import Notice

WORKER_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")


def clock(now: float | None = None) -> str:
    """Local wall-clock time for a log line."""
    return time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))


def worker_colour(worker_id: str) -> str:
    """A stable colour per worker, so interleaved output stays readable."""
    suffix = worker_id.rsplit("-", 1)[-1]
    index = int(suffix) - 1 if suffix.isdigit() else sum(map(ord, worker_id))
    return WORKER_COLOURS[index % len(WORKER_COLOURS)]


def header(
    url: str,
    file: str,
    workers: Sequence[tuple[WorkerSpec, int | None]],
    restart: bool,
    workflow: str = "WORKFLOW",
) -> RenderableType:
    """The banner: scheduler URL, workers with pids and nodes, and what to run next.

    `workflow` names a workflow of the file, for the `tether run` hint.
    """
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("WORKER", "PID", "NODE", "SLOTS", "SESSIONS"):
        table.add_column(column)
    for spec, pid in workers:
        table.add_row(
            Text(spec.worker_id, style=worker_colour(spec.worker_id)),
            str(pid) if pid is not None else "-",
            spec.node,
            str(spec.slots),
            str(spec.session_capacity),
        )
    server_flag = "" if url == "http://127.0.0.1:7233" else f" --server {url}"
    hints = Text.assemble(
        ("Try:\n", "bold"),
        (f"  tether{server_flag} run {workflow} --input '{{...}}' --wait\n", ""),
        (f"  tether{server_flag} get runs\n", ""),
        (f"  tether{server_flag} describe run RUN_ID\n", ""),
        (f"  tether{server_flag} get workers\n", ""),
        (
            "Workers alternate between the pretend nodes dev-node-a and dev-node-b. "
            + (
                "A worker that exits is reported lost and restarted with the same id. "
                if restart
                else "Workers that exit are reported lost and not restarted (--no-restart). "
            )
            + "Ctrl-C stops everything.",
            "dim",
        ),
    )
    body = Group(
        Text.assemble(("Scheduler  ", "bold"), (url, "bold green")),
        Text.assemble(("Run page   ", "bold"), (f"{url}/ui/", "bold green")),
        Text.assemble(("Workflows  ", "bold"), file),
        Text(""),
        table,
        Text(""),
        hints,
    )
    return Panel(body, title="tether dev", title_align="left", border_style="blue", expand=False)


def worker_line(worker_id: str, line: str, *, stderr: bool) -> Text:
    """One line of a worker's output, prefixed with its id."""
    text = Text(f"{worker_id:>13} | ", style=worker_colour(worker_id))
    text.append(line, style="" if not stderr else "dim")
    return text


def event_line(message: str, *, level: str = "Normal", reason: str = "") -> Text:
    """A supervisor or engine event: time, level, reason, message."""
    text = Text(f"{clock()} ", style="dim")
    style = "bold red" if level == "Warning" else "bold"
    text.append(f"{reason or level:<16}", style=style)
    text.append(" ")
    text.append(message)
    return text


def notice_line(notice: Notice) -> Text:
    """An engine notice (session bound/broken, run succeeded/failed) as one line."""
    message = notice.message
    if notice.run_id and notice.run_id not in message:
        message = f"run/{notice.run_id}: {message}"
    return event_line(message, level=notice.level, reason=notice.reason)
