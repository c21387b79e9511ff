"""Read-only views of runs, shaped like the protocol's RunView."""

from __future__ import annotations

from typing import cast

from tether_types.views import (
    AttemptViewData,
    RunViewData,
    SessionBindingData,
    SessionBreakData,
)

from .runs import ActivityRecord, Run

Attempt = AttemptViewData


def run_view(run: Run, runs: dict[str, Run]) -> RunViewData:
    """A run as clients see it: phase, result or error, activities, sessions, children."""
    attempts = activity_attempts(run)
    return {
        "run_id": run.run_id,
        "workflow": run.workflow,
        "phase": run.phase,
        "input": run.input,
        "result": run.result,
        "error": run.error,
        "sticky": run.sticky,
        "worker": run.worker,
        "parent_run_id": run.parent_run_id,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "activities": [
            {
                "seq": a.seq,
                "name": a.name,
                "state": _final_state(run, a),
                "attempt": a.attempt,
                "local": a.local,
                "worker": a.worker,
                "pod": a.pod,
                "node": a.node,
                "session": a.session_id,
                "cold_start": a.cold_start,
                "scheduled_at": a.scheduled_at,
                "started_at": a.started_at,
                "finished_at": a.finished_at,
                "error": a.error,
                "attempts": attempts.get(a.seq) or _local_attempts(a),
            }
            for a in sorted(run.activities.values(), key=lambda a: a.seq)
        ],
        "sessions": [
            {
                "id": s.id,
                "strategy": s.strategy,
                "state": s.state,
                "worker": s.worker,
                "pod": s.pod,
                "node": s.node,
                "reason": s.reason,
                "message": s.message,
                "broken_at": s.broken_at if s.state == "Broken" else None,
                "workers": list(s.workers),
                "breaks": [cast(SessionBreakData, dict(b)) for b in s.breaks],
                "bindings": [cast(SessionBindingData, dict(b)) for b in s.bindings],
            }
            for s in run.sessions.values()
        ],
        "children": [
            {
                "seq": c.seq,
                "run_id": c.run_id,
                "workflow": c.workflow,
                "phase": runs[c.run_id].phase
                if c.run_id in runs
                else ("Succeeded" if c.state == "Succeeded" else "Failed"),
            }
            for c in sorted(run.children.values(), key=lambda c: c.seq)
        ],
        "history_length": len(run.history),
    }


_UNFINISHED = frozenset({"Scheduled", "Running", "Backoff"})


def _final_state(run: Run, a: ActivityRecord) -> str:
    """An activity's state; in an ended run one still unfinished was cancelled with it
    (as its attempts are), so every activity of an ended run is in a final state."""
    if run.terminal and a.state in _UNFINISHED:
        return "Cancelled"
    return a.state


def activity_attempts(run: Run) -> dict[int, list[Attempt]]:
    """Every attempt of every remote activity, by seq, read from the run's history.

    An attempt still running when the run ended is shown `Cancelled` (ending a run
    cancels its running activities).
    """
    attempts: dict[int, list[Attempt]] = {}
    for ev in run.history:
        kind, d = ev["type"], ev["data"]
        if kind == "ActivityStarted":
            started = _new_attempt(d["attempt"])
            started["worker"] = d.get("worker")
            started["pod"] = d.get("pod")
            started["node"] = d.get("node")
            started["cold_start"] = bool(d.get("cold_start"))
            started["started_at"] = ev["time"]
            attempts.setdefault(d["seq"], []).append(started)
        elif kind in ("ActivityCompleted", "ActivityFailed"):
            attempt = _attempt(attempts.setdefault(d["seq"], []), d.get("attempt"))
            attempt["finished_at"] = ev["time"]
            if kind == "ActivityCompleted":
                attempt["state"] = "Completed"
            else:
                attempt["state"] = "Failed"
                attempt["error"] = d.get("error")
                attempt["retry_at"] = d.get("retry_at")
    if run.terminal:
        for listed in attempts.values():
            for attempt in listed:
                if attempt["state"] == "Running":
                    attempt["state"] = "Cancelled"
                    attempt["finished_at"] = run.finished_at
    return attempts


def _attempt(listed: list[Attempt], number: int | None) -> Attempt:
    """The attempt `number` (the latest one if unnumbered); created if it never started."""
    for attempt in reversed(listed):
        if number is None or attempt["attempt"] == number:
            return attempt
    created = _new_attempt(number or len(listed) + 1)
    listed.append(created)
    return created


def _new_attempt(number: int) -> Attempt:
    return {
        "attempt": number,
        "state": "Running",
        "worker": None,
        "pod": None,
        "node": None,
        "cold_start": False,
        "started_at": None,
        "finished_at": None,
        "error": None,
        "retry_at": None,
    }


def _local_attempts(a: ActivityRecord) -> list[Attempt]:
    """A local activity records only its outcome: one entry for its last attempt."""
    if not a.local:
        return []
    return [
        {
            "attempt": a.attempt,
            "state": a.state,
            "worker": a.worker,
            "pod": None,
            "node": None,
            "cold_start": False,
            "started_at": a.started_at,
            "finished_at": a.finished_at,
            "error": a.error,
            "retry_at": None,
        }
    ]
