"""Read-only views of runs, shaped like the protocol's RunView."""

from __future__ import annotations

from typing import Any

from .runs import Run


def run_view(run: Run, runs: dict[str, Run]) -> dict[str, Any]:
    """A run as clients see it: phase, result or error, activities, sessions, children."""
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
                "state": a.state,
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
                "workers": list(s.workers),
                "breaks": [dict(b) for b in s.breaks],
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
