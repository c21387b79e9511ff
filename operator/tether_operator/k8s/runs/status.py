"""A WorkflowRun's status, computed from the engine's view of the run. Pure: no I/O.

`run_status` maps a `RunView` dict onto the `WorkflowRunStatus` shape (camelCase,
ready for a merge patch on `/status`); `pending_status` and `rejected_status` are
the statuses of a run the engine does not hold (waiting for a worker, or refused).
Conditions follow the Kubernetes conventions: `lastTransitionTime` moves only when a
condition's `status` changes, and every condition carries `observedGeneration`.

Kept small on purpose: at most `MAX_ACTIVITY_RECORDS` activity records (every
failed one, then the most recent, with `activitiesOmitted` counting the rest), and
a result over `INLINE_RESULT_BYTES` of JSON is not copied: `resultRef` says where it is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tether_operator.k8s.resources.conditions import (
    Condition,
    condition,
    merge_conditions,
    rfc3339,
    seconds_of,
)
from tether_operator.k8s.resources.naming import run_id_for
from tether_types.views import (
    TERMINAL_PHASES,
    ActivityViewData,
    RunViewData,
    SessionViewData,
    progress_counts,
)

__all__ = [
    "INLINE_RESULT_BYTES",
    "MAX_ACTIVITY_RECORDS",
    "TERMINAL_PHASES",
    "pending_status",
    "rejected_status",
    "result_too_large",
    "run_status",
]

INLINE_RESULT_BYTES = 16 * 1024
"""A result whose JSON is larger than this stays out of status (see `resultRef`)."""
MAX_ACTIVITY_RECORDS = 50
"""Most activity records a status lists; the rest are counted in `activitiesOmitted`."""
MAX_SESSION_BINDINGS = 20
"""Most bindings a session's status lists: the latest (the status stays small)."""

Status = dict[str, Any]


def _error(error: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return None
    return {
        "type": str(error.get("type") or "Error"),
        "message": str(error.get("message") or ""),
        "reason": error.get("reason"),
    }


def _reason(error: Mapping[str, Any] | None, default: str) -> str:
    """A CamelCase condition reason from an error (its reason, else its type)."""
    for candidate in ((error or {}).get("reason"), (error or {}).get("type")):
        text = "".join(ch for ch in str(candidate or "") if ch.isalnum() or ch == "_")
        if text and text[0].isalpha():
            return text
    return default


def _activity(a: ActivityViewData) -> dict[str, Any]:
    return {
        "seq": a["seq"],
        "name": a["name"],
        "state": a["state"],
        "attempt": max(int(a.get("attempt") or 1), 1),
        "pod": a.get("pod"),
        "node": a.get("node"),
        "session": a.get("session"),
        "scheduledTime": rfc3339(a.get("scheduled_at"), millis=True),
        "startTime": rfc3339(a.get("started_at"), millis=True),
        "completionTime": rfc3339(a.get("finished_at"), millis=True),
        "error": _error(a.get("error")),
    }


def select_activities(
    activities: Sequence[ActivityViewData], limit: int = MAX_ACTIVITY_RECORDS
) -> tuple[list[ActivityViewData], int]:
    """Which activity records a status lists, in seq order, and how many it leaves out.

    Failed ones first (they explain a failure), then the most recent.
    """
    if len(activities) <= limit:
        return list(activities), 0
    failed = [a for a in activities if a["state"] == "Failed"][-limit:]
    chosen = {a["seq"] for a in failed}
    for a in reversed(activities):
        if len(chosen) >= limit:
            break
        chosen.add(a["seq"])
    kept = sorted((a for a in activities if a["seq"] in chosen), key=lambda a: a["seq"])
    return kept, len(activities) - len(kept)


def _progress(view: RunViewData) -> str:
    done, total = progress_counts(view)
    return f"{done}/{total}"


def _session(s: SessionViewData) -> dict[str, Any]:
    """A session's status entry: where it is bound, whether it broke, its bindings."""
    bindings = list(s.get("bindings") or ())[-MAX_SESSION_BINDINGS:]
    return {
        "id": s["id"],
        "strategy": s["strategy"],
        "state": s["state"],
        "pod": s.get("pod"),
        "node": s.get("node"),
        "reason": s.get("reason"),
        "message": s.get("message"),
        "brokenAt": rfc3339(s.get("broken_at"), millis=True),
        "bindings": [
            {
                "pod": b.get("pod") or b.get("worker"),
                "node": b.get("node"),
                "boundAt": rfc3339(b.get("bound_at"), millis=True),
                "endedAt": rfc3339(b.get("ended_at"), millis=True),
                "reason": b.get("reason"),
            }
            for b in bindings
        ],
    }


def _worker_pod(view: RunViewData) -> str | None:
    """The WORKER-POD column: the pod the run's open sticky session is bound to, else
    the pod of its latest activity attempt, else the pod running its workflow code."""
    for session in reversed(view.get("sessions", ())):
        if session.get("state") == "Open" and session.get("pod"):
            return str(session["pod"])
    latest: tuple[float, str] | None = None
    for activity in view.get("activities", ()):
        for attempt in activity.get("attempts") or ():
            pod, started = attempt.get("pod"), attempt.get("started_at")
            if pod and started is not None and (latest is None or started >= latest[0]):
                latest = (started, str(pod))
    if latest is not None:
        return latest[1]
    worker = view.get("worker")
    return str(worker) if worker else None


def _last_break(session: SessionViewData) -> str | None:
    """Why the session's latest binding that ended in a loss ended."""
    for binding in reversed(session.get("bindings") or ()):
        if binding.get("reason"):
            return str(binding["reason"])
    reason = session.get("reason")
    return str(reason) if reason else None


def _rebound(session: SessionViewData) -> bool:
    """Whether a session that broke was bound again afterwards: it is bound now, or
    its latest binding did not itself end in a loss."""
    if session.get("state") == "Open":
        return True
    bindings: Sequence[Mapping[str, Any]] = session.get("bindings") or []
    return bool(bindings) and not bindings[-1].get("reason")


def _run_conditions(view: RunViewData, generation: int | None) -> list[Condition]:
    phase, error = view["phase"], view.get("error")
    run = f"run of workflow {view['workflow']!r}"
    conds = [condition("Accepted", "True", "RunStarted", f"{run} started", generation)]
    if phase == "Succeeded":
        message = f"{run} succeeded"
        conds.append(condition("Succeeded", "True", "RunSucceeded", message, generation))
        conds.append(condition("Failed", "False", "RunSucceeded", message, generation))
    elif phase == "Failed":
        reason = _reason(error, "RunFailed")
        message = str((error or {}).get("message") or "the run failed")
        conds.append(condition("Succeeded", "False", reason, message, generation))
        conds.append(condition("Failed", "True", reason, message, generation))
    elif phase == "Cancelled":
        message = f"{run} was cancelled"
        conds.append(condition("Succeeded", "False", "RunCancelled", message, generation))
        conds.append(condition("Failed", "False", "RunCancelled", message, generation))
        conds.append(condition("Cancelled", "True", "RunCancelled", message, generation))
    elif phase == "Pending":
        message = f"{run} waits for a worker to take its workflow code"
        conds.append(condition("Succeeded", "Unknown", "Pending", message, generation))
        conds.append(condition("Failed", "False", "Pending", "", generation))
    else:
        conds.append(condition("Succeeded", "Unknown", "Running", f"{run} is running", generation))
        conds.append(condition("Failed", "False", "Running", "", generation))
    ever_broken = [s for s in view.get("sessions", ()) if s.get("breaks") or s.get("reason")]
    broken = [s for s in ever_broken if s.get("state") == "Broken" or not _rebound(s)]
    if broken:
        s = broken[-1]
        message = f"session {s['id']} lost its worker: {s.get('message') or _last_break(s)}"
        reason = _reason({"reason": _last_break(s)}, "SessionBroken")
        conds.append(condition("SessionBroken", "True", reason, message, generation))
    elif ever_broken:
        s = ever_broken[-1]
        last = _last_break(s)
        where = f" to pod {s['pod']}" if s.get("pod") else ""
        message = f"session {s['id']} is bound again{where}" + (
            f" (last break: {last})" if last else ""
        )
        conds.append(condition("SessionBroken", "False", "SessionRebound", message, generation))
    return conds


def run_status(
    view: RunViewData,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    now: float,
    result_ref: Mapping[str, Any] | None = None,
    inline_result_bytes: int = INLINE_RESULT_BYTES,
    max_activities: int = MAX_ACTIVITY_RECORDS,
    history: Condition | None = None,
) -> Status:
    """The status of a run the engine holds, from its view.

    `result_ref` (`configMap`, `chunks`) says where a result over `inline_result_bytes`
    is stored; without it such a result is left out and only its size is reported.
    `history` is the `HistoryStored` condition, once the run's history failed to be
    written.
    """
    activities, omitted = select_activities(view.get("activities", ()), max_activities)
    status: Status = {
        "observedGeneration": generation,
        "phase": view["phase"],
        "conditions": merge_conditions(
            [*_run_conditions(view, generation), *([history] if history else [])],
            previous_conditions,
            now,
        ),
        "workerPod": _worker_pod(view),
        "progress": _progress(view),
        "startTime": rfc3339(view.get("created_at")),
        "completionTime": rfc3339(view.get("finished_at")),
        "activities": [_activity(a) for a in activities],
        "activitiesOmitted": omitted,
        "sessions": [_session(s) for s in view.get("sessions", ())],
        "result": None,
        "resultRef": None,
        "error": _error(view.get("error")),
    }
    if view["phase"] == "Succeeded":
        encoded = json.dumps(view.get("result"), separators=(",", ":"))
        if len(encoded.encode()) <= inline_result_bytes:
            status["result"] = view.get("result")
        else:
            status["resultRef"] = {**(result_ref or {}), "bytes": len(encoded.encode())}
    return status


def result_too_large(view: RunViewData, inline_result_bytes: int = INLINE_RESULT_BYTES) -> bool:
    """Whether the run succeeded with a result that stays out of its status."""
    if view.get("phase") != "Succeeded":
        return False
    return len(json.dumps(view.get("result"), separators=(",", ":")).encode()) > inline_result_bytes


def _outside_engine(
    *,
    phase: str,
    conditions: list[Condition],
    previous_conditions: Sequence[Mapping[str, Any]],
    now: float,
    generation: int | None,
    error: dict[str, Any] | None = None,
) -> Status:
    return {
        "observedGeneration": generation,
        "phase": phase,
        "conditions": merge_conditions(conditions, previous_conditions, now),
        "workerPod": None,
        "progress": "0/0",
        "error": error,
    }


def pending_status(
    workflow: str,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    now: float,
    why: tuple[str, str] | None = None,
) -> Status:
    """A run waiting for a worker to register its workflow; `why` (reason, message)
    says what stands in the way when the operator knows (no such Workflow, a pool that
    cannot start)."""
    reason, message = why or (
        "WorkflowNotRegistered",
        f"no worker has registered workflow {workflow!r} yet: the run starts as soon as one does",
    )
    conds = [
        condition("Accepted", "False", reason, message, generation),
        condition("Succeeded", "Unknown", reason, message, generation),
        condition("Failed", "False", reason, "", generation),
    ]
    return _outside_engine(
        phase="Pending",
        conditions=conds,
        previous_conditions=previous_conditions,
        now=now,
        generation=generation,
    )


def rejected_status(
    reason: str,
    message: str,
    *,
    generation: int | None,
    previous_conditions: Sequence[Mapping[str, Any]] = (),
    now: float,
) -> Status:
    """A run refused before it started (bad input, bad spec): Failed, saying why."""
    conds = [
        condition("Accepted", "False", reason, message, generation),
        condition("Succeeded", "False", reason, message, generation),
        condition("Failed", "True", reason, message, generation),
    ]
    status = _outside_engine(
        phase="Failed",
        conditions=conds,
        previous_conditions=previous_conditions,
        now=now,
        generation=generation,
        error={"type": reason, "message": message, "reason": reason},
    )
    status["completionTime"] = rfc3339(now)
    return status


def view_of_object(body: Mapping[str, Any]) -> RunViewData:
    """The view of a WorkflowRun from what its object says: for runs the engine
    does not hold (waiting for their workflow, refused, or finished and forgotten), so a
    client sees every run kubectl shows. Activities come from its status records."""
    meta, spec = body.get("metadata") or {}, body.get("spec") or {}
    status = body.get("status") or {}
    created = seconds_of(meta.get("creationTimestamp")) or 0.0
    error = status.get("error")
    activities: list[ActivityViewData] = [
        {
            "seq": a["seq"],
            "name": a["name"],
            "state": a["state"],
            "attempt": a.get("attempt") or 1,
            "local": False,
            "cold_start": False,
            "attempts": [],
            "pod": a.get("pod"),
            "worker": a.get("pod"),
            "node": a.get("node"),
            "session": a.get("session"),
            "scheduled_at": seconds_of(a.get("scheduledTime")) or created,
            "started_at": seconds_of(a.get("startTime")),
            "finished_at": seconds_of(a.get("completionTime")),
            "error": a.get("error"),
        }
        for a in status.get("activities") or ()
    ]
    return {
        "run_id": run_id_for(meta.get("namespace", ""), meta.get("name", "")),
        "workflow": (spec.get("workflowRef") or {}).get("name", ""),
        "phase": status.get("phase") or "Pending",
        "input": spec.get("input"),
        "result": status.get("result"),
        "error": {k: error[k] for k in ("type", "message", "reason") if k in error}
        if error
        else None,
        "sticky": spec.get("sticky"),
        "worker": status.get("workerPod"),
        "parent_run_id": None,
        "created_at": created,
        "finished_at": seconds_of(status.get("completionTime")),
        "activities": activities,
        "sessions": [],
        "children": [],
        "history_length": 0,
        "message": _waiting_message(status),
    }


def _waiting_message(status: Mapping[str, Any]) -> str | None:
    """Why a run that has not started waits: its `Accepted=False` condition's message."""
    if status.get("phase", "Pending") != "Pending":
        return None
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Accepted" and cond.get("status") == "False":
            return str(cond.get("message") or cond.get("reason") or "") or None
    return None
