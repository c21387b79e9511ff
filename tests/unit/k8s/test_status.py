"""WorkflowRun status from the engine's run view: phases, conditions, size limits."""

from __future__ import annotations

import json
from typing import Any

from tether_operator.k8s.resources.conditions import merge_conditions, rfc3339
from tether_operator.k8s.resources.specs import WorkflowRunStatus
from tether_operator.k8s.runs.status import (
    INLINE_RESULT_BYTES,
    pending_status,
    rejected_status,
    result_too_large,
    run_status,
    select_activities,
    view_of_object,
)
from worker_runtime.protocol import RunView

T0 = 1_800_000_000.0


def activity(seq: int, state: str = "Completed", **extra: Any) -> dict[str, Any]:
    return {
        "seq": seq,
        "name": "predict",
        "state": state,
        "attempt": 1,
        "worker": "pod-a",
        "pod": "pod-a",
        "node": "node-1",
        "session": "ns.r/s1",
        "scheduled_at": T0 + seq,
        "started_at": T0 + seq + 0.25,
        "finished_at": T0 + seq + 0.5 if state in ("Completed", "Failed") else None,
        "error": None,
        "attempts": [],
        **extra,
    }


def view(phase: str = "Running", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "run_id": "ns.r",
        "workflow": "ml-inference",
        "phase": phase,
        "input": None,
        "result": None,
        "error": None,
        "sticky": None,
        "worker": "pod-w",
        "parent_run_id": None,
        "created_at": T0,
        "finished_at": T0 + 9 if phase in ("Succeeded", "Failed", "Cancelled") else None,
        "activities": [activity(1), activity(2, "Running")],
        "sessions": [],
        "children": [],
        "history_length": 7,
    }
    base.update(extra)
    RunView.model_validate(base)  # the fixtures are shaped like the engine's views
    return base


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def valid(status: dict[str, Any]) -> WorkflowRunStatus:
    """The status fits the CRD's model (None means "delete this key" in the patch)."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return WorkflowRunStatus.model_validate(strip(status))


def test_a_running_run_is_accepted_and_not_yet_succeeded() -> None:
    status = run_status(view(), generation=3, now=T0 + 1)
    valid(status)
    conds = conditions(status)
    assert status["phase"] == "Running"
    assert status["progress"] == "1/2"
    assert status["workerPod"] == "pod-w"
    assert status["startTime"] == "2027-01-15T08:00:00Z"
    assert status["completionTime"] is None
    assert conds["Accepted"]["status"] == "True"
    assert conds["Succeeded"]["status"] == "Unknown"
    assert conds["Failed"]["status"] == "False"
    assert all(c["observedGeneration"] == 3 for c in status["conditions"])
    assert status["activities"][0]["startTime"] == "2027-01-15T08:00:01.250Z"


def test_a_succeeded_run_carries_its_result_and_the_succeeded_condition() -> None:
    done = view("Succeeded", result={"y": [1, 2]}, activities=[activity(1), activity(2)])
    status = run_status(done, generation=1, now=T0 + 10)
    valid(status)
    assert status["result"] == {"y": [1, 2]}
    assert status["resultRef"] is None
    assert status["progress"] == "2/2"
    assert status["completionTime"] == rfc3339(T0 + 9)
    assert conditions(status)["Succeeded"]["status"] == "True"
    assert conditions(status)["Failed"]["status"] == "False"


def test_a_large_result_stays_out_of_the_status_and_says_where_it_is() -> None:
    big = "x" * (INLINE_RESULT_BYTES + 1)
    done = view("Succeeded", result=big)
    assert result_too_large(done)
    status = run_status(
        done, generation=1, now=T0, result_ref={"configMap": "r-pabc-0", "chunks": 1}
    )
    valid(status)
    assert status["result"] is None
    assert status["resultRef"] == {
        "configMap": "r-pabc-0",
        "chunks": 1,
        "bytes": INLINE_RESULT_BYTES + 3,
    }
    without_ref = run_status(done, generation=1, now=T0)
    assert without_ref["resultRef"] == {"bytes": INLINE_RESULT_BYTES + 3}


def test_a_failed_run_names_its_reason_in_both_conditions() -> None:
    error = {"type": "SessionBroken", "message": "pod p was deleted", "reason": "SessionBroken"}
    status = run_status(view("Failed", error=error), generation=2, now=T0)
    valid(status)
    conds = conditions(status)
    assert status["phase"] == "Failed"
    assert status["error"] == error
    assert conds["Failed"] | {"lastTransitionTime": None} == {
        "type": "Failed",
        "status": "True",
        "reason": "SessionBroken",
        "message": "pod p was deleted",
        "observedGeneration": 2,
        "lastTransitionTime": None,
    }
    assert conds["Succeeded"]["status"] == "False"


def test_an_error_without_a_reason_uses_its_type_as_a_camel_case_reason() -> None:
    error = {"type": "ValueError", "message": "bad", "reason": None}
    status = run_status(view("Failed", error=error), generation=1, now=T0)
    assert conditions(status)["Failed"]["reason"] == "ValueError"


def test_a_cancelled_run_is_neither_succeeded_nor_failed() -> None:
    status = run_status(view("Cancelled"), generation=1, now=T0)
    valid(status)
    conds = conditions(status)
    assert (conds["Succeeded"]["status"], conds["Failed"]["status"]) == ("False", "False")
    assert conds["Cancelled"]["status"] == "True"


def test_last_transition_time_is_kept_while_a_condition_status_stays() -> None:
    first = run_status(view(), generation=1, now=T0)
    again = run_status(view(), generation=1, previous_conditions=first["conditions"], now=T0 + 60)
    assert again["conditions"] == first["conditions"]
    finished = run_status(
        view("Succeeded", result=1),
        generation=1,
        previous_conditions=again["conditions"],
        now=T0 + 120,
    )
    conds, before = conditions(finished), conditions(first)
    assert conds["Accepted"]["lastTransitionTime"] == before["Accepted"]["lastTransitionTime"]
    assert conds["Failed"]["lastTransitionTime"] == before["Failed"]["lastTransitionTime"]
    assert conds["Succeeded"]["lastTransitionTime"] == rfc3339(T0 + 120)


def test_conditions_no_longer_computed_are_kept() -> None:
    old = [{"type": "SessionBroken", "status": "True", "reason": "PodDeleted", "message": ""}]
    merged = merge_conditions([], old, T0)
    assert merged == old


def test_a_broken_session_sets_session_broken_and_a_rebind_clears_it() -> None:
    broken = {
        "id": "ns.r/s1",
        "strategy": "SOFT",
        "state": "Broken",
        "worker": None,
        "pod": "pod-a",
        "node": "node-1",
        "reason": "PodDeleted",
        "message": "pod pod-a was deleted",
        "workers": ["pod-a"],
        "breaks": [{"worker": "pod-a", "reason": "PodDeleted", "message": "", "time": T0}],
    }
    status = run_status(view(sessions=[broken]), generation=1, now=T0)
    valid(status)
    cond = conditions(status)["SessionBroken"]
    assert (cond["status"], cond["reason"]) == ("True", "PodDeleted")
    assert status["sessions"][0]["state"] == "Broken"
    rebound = {**broken, "state": "Open", "pod": "pod-b", "worker": "pod-b"}
    later = run_status(
        view(sessions=[rebound]), generation=1, previous_conditions=status["conditions"], now=T0
    )
    cond = conditions(later)["SessionBroken"]
    assert (cond["status"], cond["reason"]) == ("False", "SessionRebound")
    assert later["workerPod"] == "pod-b"


def test_a_session_shows_when_it_broke_and_every_binding() -> None:
    broken = {
        "id": "ns.r/s1",
        "strategy": "SOFT",
        "state": "Broken",
        "worker": "pod-a",
        "pod": "pod-a",
        "node": "node-1",
        "reason": "PodDeleted",
        "message": "pod pod-a on node node-1 was deleted",
        "broken_at": T0 + 1.5,
        "workers": ["pod-b", "pod-a"],
        "breaks": [],
        "bindings": [
            {
                "worker": "pod-b",
                "pod": "pod-b",
                "node": "node-2",
                "bound_at": T0,
                "ended_at": T0 + 0.25,
                "reason": "HeartbeatTimeout",
            },
            {
                "worker": "pod-a",
                "pod": "pod-a",
                "node": "node-1",
                "bound_at": T0 + 0.25,
                "ended_at": T0 + 1.5,
                "reason": "PodDeleted",
            },
        ],
    }
    status = run_status(view(sessions=[broken]), generation=1, now=T0)
    valid(status)
    session = status["sessions"][0]
    assert session["brokenAt"] == rfc3339(T0 + 1.5, millis=True)
    assert session["brokenAt"].endswith(".500Z")
    assert session["bindings"] == [
        {
            "pod": "pod-b",
            "node": "node-2",
            "boundAt": rfc3339(T0, millis=True),
            "endedAt": rfc3339(T0 + 0.25, millis=True),
            "reason": "HeartbeatTimeout",
        },
        {
            "pod": "pod-a",
            "node": "node-1",
            "boundAt": rfc3339(T0 + 0.25, millis=True),
            "endedAt": rfc3339(T0 + 1.5, millis=True),
            "reason": "PodDeleted",
        },
    ]


def test_a_long_run_lists_at_most_fifty_activities_keeping_the_failed_ones() -> None:
    records = [activity(seq) for seq in range(1, 1001)]
    records[4] = activity(5, "Failed", error={"type": "E", "message": "m", "reason": None})
    status = run_status(view(activities=records), generation=1, now=T0)
    valid(status)
    seqs = [a["seq"] for a in status["activities"]]
    assert len(seqs) == 50
    assert seqs[0] == 5
    assert seqs[1:] == list(range(952, 1001))
    assert status["activitiesOmitted"] == 950
    assert status["progress"] == "1000/1000"
    assert len(json.dumps(status)) < 20_000  # a 1,000-activity run keeps a small status


def test_select_activities_keeps_everything_under_the_limit() -> None:
    records = [activity(seq) for seq in range(1, 4)]
    assert select_activities(records, 3) == (records, 0)


def test_pending_status_says_the_workflow_is_not_registered() -> None:
    status = pending_status("ml-inference", generation=1, now=T0)
    valid(status)
    assert status["phase"] == "Pending"
    accepted = conditions(status)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "WorkflowNotRegistered")
    assert "ml-inference" in accepted["message"]
    assert conditions(status)["Succeeded"]["status"] == "Unknown"


def test_the_view_of_a_waiting_run_says_why_it_waits() -> None:
    """What `kubectl get wfr` shows in its condition, the API (and the UI) say too."""
    body = {
        "metadata": {"namespace": "ns", "name": "r1", "creationTimestamp": rfc3339(T0)},
        "spec": {"workflowRef": {"name": "ml-inference"}},
        "status": pending_status("ml-inference", generation=1, now=T0),
    }
    view = view_of_object(body)
    RunView.model_validate(view)
    assert view["phase"] == "Pending"
    assert view["message"] is not None
    assert "no worker has registered workflow 'ml-inference'" in view["message"]
    body["status"] = {**body["status"], "phase": "Running"}
    assert view_of_object(body)["message"] is None


def test_rejected_status_fails_the_run_naming_the_field() -> None:
    previous = pending_status("w", generation=1, now=T0)["conditions"]
    status = rejected_status(
        "InvalidInput",
        "spec.input.batch: 'x' is not of type 'array'",
        generation=1,
        previous_conditions=previous,
        now=T0 + 5,
    )
    valid(status)
    conds = conditions(status)
    assert status["phase"] == "Failed"
    assert (conds["Failed"]["status"], conds["Failed"]["reason"]) == ("True", "InvalidInput")
    assert "spec.input.batch" in conds["Failed"]["message"]
    assert conds["Accepted"]["lastTransitionTime"] == rfc3339(T0)  # False before and after
    assert status["error"]["reason"] == "InvalidInput"
    assert status["completionTime"] == rfc3339(T0 + 5)


def binding(pod: str, start: float, reason: str | None = None) -> dict[str, Any]:
    ended = start + 1 if reason else None
    return {
        "worker": pod,
        "pod": pod,
        "node": "n",
        "bound_at": start,
        "ended_at": ended,
        "reason": reason,
    }


def test_a_failed_hard_run_says_its_session_broke_not_that_it_was_rebound() -> None:
    session = {
        "id": "ns.r/s1",
        "strategy": "HARD",
        "state": "Closed",  # closed when the run ended
        "worker": "pod-a",
        "pod": "pod-a",
        "node": "n",
        "reason": None,
        "message": None,
        "workers": ["pod-a"],
        "breaks": [{"worker": "pod-a", "reason": "PodDeleted", "message": "", "time": T0}],
        "bindings": [binding("pod-a", T0, "PodDeleted")],
    }
    error = {"type": "SessionBroken", "message": "pod pod-a was deleted", "reason": "SessionBroken"}
    status = run_status(view("Failed", sessions=[session], error=error), generation=1, now=T0)
    cond = conditions(status)["SessionBroken"]
    assert (cond["status"], cond["reason"]) == ("True", "PodDeleted")
    assert "None" not in cond["message"]
    rebound = {
        **session,
        "state": "Open",
        "pod": "pod-b",
        "reason": None,
        "bindings": [binding("pod-a", T0, "PodDeleted"), binding("pod-b", T0 + 5)],
    }
    cond = conditions(run_status(view(sessions=[rebound]), generation=1, now=T0))["SessionBroken"]
    assert (cond["status"], cond["reason"]) == ("False", "SessionRebound")
    assert cond["message"] == "session ns.r/s1 is bound again to pod pod-b (last break: PodDeleted)"


def test_phase_and_conditions_tell_one_story() -> None:
    pending = conditions(run_status(view("Pending", activities=[]), generation=1, now=T0))
    assert (pending["Succeeded"]["status"], pending["Succeeded"]["reason"]) == (
        "Unknown",
        "Pending",
    )
    running = conditions(run_status(view("Running"), generation=1, now=T0))
    assert running["Succeeded"]["reason"] == "Running"
    done = conditions(run_status(view("Succeeded"), generation=1, now=T0))
    assert (done["Failed"]["status"], done["Failed"]["reason"]) == ("False", "RunSucceeded")
    assert done["Failed"]["message"] == "run of workflow 'ml-inference' succeeded"


def test_the_worker_pod_is_the_sessions_pod_else_the_latest_attempts() -> None:
    def attempt(pod: str, started: float) -> dict[str, Any]:
        return {
            "attempt": 1,
            "state": "Completed",
            "worker": pod,
            "pod": pod,
            "node": "n",
            "cold_start": False,
            "started_at": started,
            "finished_at": started + 1,
            "error": None,
            "retry_at": None,
        }

    plain = [
        activity(1, session=None, attempts=[attempt("pod-a", T0 + 1)]),
        activity(2, session=None, attempts=[attempt("pod-c", T0 + 3)]),
        activity(3, session=None, attempts=[attempt("pod-b", T0 + 2)]),
    ]
    status = run_status(view("Succeeded", activities=plain), generation=1, now=T0)
    assert status["workerPod"] == "pod-c", "the pod of the latest attempt, not the workflow's"
    assert run_status(view(activities=[]), generation=1, now=T0)["workerPod"] == "pod-w"
