"""Turn protocol views into what the CLI prints: kubectl-style tables and JSON.

Everything here is a pure function of its inputs (the current time is passed in),
so the tests render fixtures and compare text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tether_types import views
from worker_runtime.protocol import (
    ActivityView,
    AttemptView,
    ErrorInfo,
    HistoryEventModel,
    RunView,
    ScheduleView,
    SessionView,
    WorkerView,
    WorkflowList,
)

"""Phases a run never leaves."""

PHASE_STYLES = {
    "Pending": "yellow",
    "Running": "cyan",
    "Succeeded": "green",
    "Failed": "red",
    "Cancelled": "magenta",
    "Open": "cyan",
    "Broken": "red",
    "Closed": "dim",
    "Scheduled": "yellow",
    "Backoff": "yellow",
    "Completed": "green",
}

NONE = "<none>"
"""What kubectl prints for an empty cell."""

STICKY_WORKER_COLUMN = "STICKY-WORKER"
"""The one name of the worker a run is stuck to, in every table (`Sticky worker:` in describe)."""


# --------------------------------------------------------------------------- scalars


def to_json(model: BaseModel) -> str:
    """The JSON a script reads from `-o json`: the protocol model, indented."""
    return model.model_dump_json(indent=2)


def compact_json(value: Any, limit: int | None = None) -> str:
    """One-line JSON for a table cell, shortened to `limit` characters."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=False, default=str)
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 3, 0)] + "..."
    return text


def human_duration(seconds: float | None) -> str:
    """A kubectl-style age: `450ms`, `12s`, `3m20s`, `2h5m`, `4d`."""
    if seconds is None:
        return NONE
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 120:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if minutes < 10 and secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m" if hours < 8 and minutes else f"{hours}h"
    return f"{hours // 24}d"


def styled(value: str) -> Text:
    """A phase or state name, coloured the same way everywhere."""
    return Text(value, style=PHASE_STYLES.get(value, ""))


def cell(value: object) -> str:
    """A table cell: `<none>` for missing values."""
    if value is None or value == "":
        return NONE
    return str(value)


# --------------------------------------------------------------------------- runs


"""Activity states that are done: it will not run again."""


def progress_counts(run: RunView) -> tuple[int, int]:
    """(done, total) over what the run has scheduled so far: activities and child runs."""
    return views.progress_counts(run.model_dump(include={"activities", "children"}))


def run_progress(run: RunView) -> str:
    """`done/total` of the activities and child runs scheduled so far."""
    done, total = progress_counts(run)
    return f"{done}/{total}"


def progress_detail(run: RunView) -> str:
    """`run_progress` with each state counted: `2/3 scheduled steps done (2 completed, 1 running)`.

    A step is an activity or a child run; the total grows as the workflow schedules more.
    """
    states: dict[str, int] = {}
    for state in [a.state for a in run.activities] + [c.phase for c in run.children]:
        label = "completed" if state in {"Completed", "Succeeded"} else state.lower()
        states[label] = states.get(label, 0) + 1
    counts = ", ".join(f"{n} {label}" for label, n in states.items())
    return f"{run_progress(run)} scheduled steps done" + (f" ({counts})" if counts else "")


def sticky_worker(run: RunView) -> str | None:
    """The worker a run is stuck to now: its open session's, else its last session's."""
    open_sessions = [s for s in run.sessions if s.state == "Open" and s.worker]
    if open_sessions:
        return open_sessions[-1].worker
    bound = [s for s in run.sessions if s.worker]
    if bound:
        return bound[-1].worker
    return None


def current_session(run: RunView) -> SessionView | None:
    """The session a run is using now (the last open one), if any."""
    open_sessions = [s for s in run.sessions if s.state == "Open"]
    return open_sessions[-1] if open_sessions else None


def run_duration(run: RunView, now: float) -> float:
    """Seconds from creation to the end (or to `now` while the run is live)."""
    end = run.finished_at if run.finished_at is not None else now
    return end - run.created_at


def _table(*columns: str) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        wraps = column in {"ERROR", "RESULT", "DETAILS", "REASON"}
        table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
    return table


def runs_table(runs: Sequence[RunView], now: float, *, wide: bool = False) -> Table:
    """`tether get runs`: NAME WORKFLOW PHASE STICKY-WORKER PROGRESS AGE (+ wide columns).

    Every header is one word, so `awk` and `cut` see one field per column.
    """
    columns = ["NAME", "WORKFLOW", "PHASE", STICKY_WORKER_COLUMN, "PROGRESS", "AGE"]
    if wide:
        columns += ["STRATEGY", "WORKFLOW-WORKER", "SESSIONS", "DURATION", "PARENT"]
    table = _table(*columns)
    for run in sorted(runs, key=lambda r: r.created_at):
        row: list[str | Text] = [
            run.run_id,
            run.workflow,
            styled(run.phase),
            cell(sticky_worker(run)),
            run_progress(run),
            human_duration(now - run.created_at),
        ]
        if wide:
            row += [
                cell(run.sticky),
                cell(run.worker),
                ",".join(f"{s.state}" for s in run.sessions) or NONE,
                human_duration(run_duration(run, now)),
                cell(run.parent_run_id),
            ]
        table.add_row(*row)
    return table


def workers_table(workers: Sequence[WorkerView]) -> Table:
    """`tether get workers`: one row per registered worker."""
    table = _table(
        "NAME", "NODE", "STATUS", "RUNNING", "SESSIONS", "WORKFLOWS", "ACTIVITIES", "REASON"
    )
    for worker in sorted(workers, key=lambda w: w.worker_id):
        table.add_row(
            worker.worker_id,
            cell(worker.node),
            Text("Ready", style="green") if worker.alive else Text("Lost", style="red"),
            f"{worker.running}/{worker.slots}",
            f"{len(worker.sessions)}/{worker.session_capacity}",
            cell(",".join(worker.workflows)),
            str(len(worker.activities)),
            cell(worker.lost_reason),
        )
    return table


def workflows_table(registered: WorkflowList) -> Table:
    """`tether get workflows`: one row per registered workflow (schemas: `-o json`)."""
    table = _table("NAME", "STICKY", "WORKERS", "PARAMETERS")
    for wf in registered.workflows:
        schema = wf.input_schema
        params = NONE if schema is None else ",".join(schema.get("properties") or {}) or "-"
        table.add_row(wf.name, cell(wf.sticky), cell(",".join(wf.workers)), params)
    return table


def schedules_table(schedules: Sequence[ScheduleView]) -> Table:
    """`tether get schedules`: the columns of `kubectl get workflowschedules`."""
    table = _table("NAMESPACE", "NAME", "SCHEDULE", "WORKFLOW", "SUSPEND", "ACTIVE", "LAST", "NEXT")
    for s in schedules:
        table.add_row(
            s.namespace,
            s.name,
            "; ".join(s.schedules) + ("" if s.time_zone == "UTC" else f" ({s.time_zone})"),
            s.workflow,
            str(s.suspend).lower(),
            str(len(s.active)),
            cell(s.last_run and f"{s.last_run} ({s.last_run_phase or 'Pending'})"),
            cell(s.next_schedule_time or (s.message and f"! {s.message}")),
        )
    return table


def _error_line(error: ErrorInfo | None) -> str:
    if error is None:
        return ""
    reason = f" [{error.reason}]" if error.reason else ""
    return f"{error.type}: {error.message}{reason}"


TRACEBACK_LINES = 3
"""How many lines of the innermost traceback frame `describe` shows under an error."""


def traceback_tail(traceback: str | None, limit: int = TRACEBACK_LINES) -> list[str]:
    """The innermost frame of a formatted traceback (`File ..., line N` and its code)."""
    if not traceback:
        return []
    lines = traceback.rstrip().splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith('  File "')]
    if not starts:
        return []
    frame: list[str] = []
    for line in lines[starts[-1] :]:
        if frame and not line.startswith(" "):
            break  # the exception line itself: already on the error line
        frame.append(line.rstrip())
    return frame[:limit]


def attempt_error(error: ErrorInfo | None) -> str:
    """An attempt's error: `Type: message [Reason]`, then its innermost traceback lines."""
    if error is None:
        return ""
    return "\n".join([_error_line(error), *traceback_tail(error.traceback)])


def activities_table(activities: Sequence[ActivityView]) -> Table:
    """The activities of `tether describe run`."""
    table = _table(
        "SEQ",
        "NAME",
        "STATE",
        "ATTEMPT",
        "WORKER",
        "NODE",
        "SESSION",
        "COLD START",
        "DURATION",
        "ERROR",
    )
    for activity in activities:
        duration: float | None = None
        if activity.started_at is not None and activity.finished_at is not None:
            duration = activity.finished_at - activity.started_at
        table.add_row(
            str(activity.seq),
            activity.name + (" (local)" if activity.local else ""),
            styled(activity.state),
            str(activity.attempt),
            cell(activity.worker),
            cell(activity.node),
            cell(activity.session),
            "yes" if activity.cold_start else "no",
            human_duration(duration) if duration is not None else NONE,
            _error_line(activity.error) or NONE,
        )
    return table


def attempts_table(activities: Sequence[ActivityView], started: float) -> Table:
    """Every attempt of every activity, with its error; times are relative to `started`."""
    table = _table(
        "SEQ", "ACTIVITY", "ATTEMPT", "STATE", "WORKER", "NODE", "STARTED", "DURATION", "ERROR"
    )
    for activity in activities:
        for attempt in activity.attempts:
            table.add_row(
                str(activity.seq),
                activity.name + (" (local)" if activity.local else ""),
                str(attempt.attempt),
                styled(attempt.state),
                cell(attempt.worker),
                cell(attempt.node),
                _since(attempt.started_at, started),
                _attempt_duration(attempt),
                attempt_error(attempt.error) or NONE,
            )
    return table


def _since(moment: float | None, started: float) -> str:
    return NONE if moment is None else f"+{human_duration(moment - started)}"


def _attempt_duration(attempt: AttemptView) -> str:
    if attempt.started_at is None or attempt.finished_at is None:
        return NONE
    return human_duration(attempt.finished_at - attempt.started_at)


def sessions_table(sessions: Sequence[SessionView]) -> Table:
    """The sessions of `tether describe run`, with every worker each one was bound to."""
    table = _table("ID", "STRATEGY", "STATE", "WORKER", "NODE", "REASON", "WORKERS")
    for session in sessions:
        reason = session.reason or ""
        if session.message:
            reason = f"{reason}: {session.message}" if reason else session.message
        if not reason and session.breaks:  # rebound since: say it broke, and why
            last = session.breaks[-1]
            reason = f"{last.reason} on {last.worker} (rebound)"
        table.add_row(
            session.id,
            session.strategy,
            styled(session.state),
            cell(session.worker),
            cell(session.node),
            cell(reason),
            " -> ".join(session.workers) or NONE,
        )
    return table


def _field_grid(rows: Sequence[tuple[str, str | Text]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def run_summary(run: RunView, now: float) -> Table:
    """The outcome of `tether run --wait`: phase, duration, result or error."""
    rows: list[tuple[str, str | Text]] = [
        ("Run:", run.run_id),
        ("Workflow:", run.workflow),
        ("Phase:", styled(run.phase)),
        ("Duration:", human_duration(run_duration(run, now))),
    ]
    if run.error is not None:
        rows.append(("Error:", Text(_error_line(run.error), style="red")))
    else:
        rows.append(("Result:", compact_json(run.result)))
    return _field_grid(rows)


def sticky_strategy(run: RunView) -> str | None:
    """The run's sticky strategy: its own, else that of the sessions its code opened."""
    if run.sticky:
        return run.sticky
    opened = sorted({s.strategy for s in run.sessions})
    return f"{', '.join(opened)} (opened by the workflow code)" if opened else None


def describe_run(run: RunView, now: float) -> RenderableType:
    """`tether describe run ID`: fields, then activities, sessions and children."""
    rows: list[tuple[str, str | Text]] = [
        ("Name:", run.run_id),
        ("Workflow:", run.workflow),
        ("Phase:", styled(run.phase)),
        ("Sticky strategy:", cell(sticky_strategy(run))),
        ("Sticky worker:", cell(sticky_worker(run))),
        ("Workflow worker:", cell(run.worker)),
        ("Parent:", cell(run.parent_run_id)),
        ("Age:", human_duration(now - run.created_at)),
        ("Duration:", human_duration(run_duration(run, now))),
        ("Progress:", progress_detail(run)),
        ("History events:", str(run.history_length)),
        ("Input:", compact_json(run.input, 300)),
    ]
    if run.phase == "Succeeded":
        rows.append(("Result:", compact_json(run.result, 500)))
    if run.error is not None:
        rows.append(("Error:", Text(_error_line(run.error), style="red")))
    parts: list[RenderableType] = [_field_grid(rows)]

    parts.append(Text("\nActivities:", style="bold"))
    parts.append(activities_table(run.activities) if run.activities else Text("  <none>"))
    if any(a.attempts for a in run.activities):
        parts.append(Text("\nAttempts:", style="bold"))
        parts.append(attempts_table(run.activities, run.created_at))
    parts.append(Text("\nSessions:", style="bold"))
    parts.append(sessions_table(run.sessions) if run.sessions else Text("  <none>"))
    parts.append(Text("\nChildren:", style="bold"))
    if run.children:
        children = _table("SEQ", "RUN", "WORKFLOW", "PHASE")
        for child in run.children:
            children.add_row(str(child.seq), child.run_id, child.workflow, styled(child.phase))
        parts.append(children)
    else:
        parts.append(Text("  <none>"))
    return Group(*parts)


def history_table(events: Sequence[HistoryEventModel]) -> Table:
    """`tether history run ID`: one row per event, times relative to the first."""
    table = _table("#", "TIME", "TYPE", "DETAILS")
    start = events[0].time if events else 0.0
    for index, event in enumerate(events, start=1):
        table.add_row(
            str(index),
            f"+{event.time - start:.3f}s",
            event.type,
            compact_json(event.data, 160) if event.data else "",
        )
    return table


def progress_line(run: RunView, elapsed: float) -> Text:
    """The live line of `tether run --wait` and `tether wait` (on a terminal only): phase,
    steps done/total, the activity running now, worker, session and its pod."""
    text = Text()
    text.append(f"{run.run_id} ", style="bold")
    text.append_text(styled(run.phase))
    text.append(f"  steps done {run_progress(run)}")
    running = [a for a in run.activities if a.state in ("Running", "Started")]
    if running:
        now = running[-1]
        retry = f", attempt {now.attempt}" if now.attempt > 1 else ""
        more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        text.append(f"  now {now.name} #{now.seq}{retry}{more}")
    session = current_session(run)
    worker = (session.worker if session else None) or run.worker
    if worker:
        text.append(f"  worker {worker}")
    if session is not None:
        where = f" on pod {session.pod}" if session.pod and session.pod != worker else ""
        text.append(f"  session {session.id} ({session.strategy}){where}")
    broken = [s for s in run.sessions if s.state == "Broken"]
    if broken:
        last = broken[-1]
        text.append(f"  broken: {last.reason or 'unknown'}", style="red")
    text.append(f"  {human_duration(elapsed)}", style="dim")
    return text
