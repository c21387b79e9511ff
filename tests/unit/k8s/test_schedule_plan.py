"""What a WorkflowSchedule does at an instant (`k8s.schedules.plan`): every spec field acts,
and acting again on the same state starts nothing twice."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether_operator.engine.schedules import run_name
from tether_operator.k8s.resources.specs import WorkflowScheduleSpec
from tether_operator.k8s.schedules.plan import (
    RunInfo,
    ScheduleState,
    plan,
    trigger_run_name,
)


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("UTC")).timestamp()


def spec(**fields: Any) -> WorkflowScheduleSpec:
    return WorkflowScheduleSpec.model_validate(
        {"schedules": ["*/5 * * * *"], "workflowRef": {"name": "report"}, **fields}
    )


CREATED = at("2026-12-07T10:01:00")


def state(**fields: Any) -> ScheduleState:
    return ScheduleState(**{"name": "nightly", "created": CREATED, "generation": 1, **fields})


def slot_run(slot: str, phase: str | None = "Running", finished: str | None = None) -> RunInfo:
    t = at(slot)
    return RunInfo(
        name=run_name("nightly", t),
        created=t,
        phase=phase,  # type: ignore[arg-type]
        slot=t,
        finished=at(finished) if finished else None,
    )


def test_a_due_slot_starts_one_run_named_by_its_time() -> None:
    p = plan(spec(), state(), [], at("2026-12-07T10:05:00.2"))
    assert [(r.name, r.slot) for r in p.create] == [("nightly-29943965", at("2026-12-07T10:05"))]
    assert p.status["lastScheduleTime"] == "2026-12-07T10:05:00Z"
    assert p.status["nextScheduleTime"] == "2026-12-07T10:10:00Z"
    assert p.status["lastSlotTime"] == "2026-12-07T10:05:00Z"
    assert p.status["activeCount"] == 1
    assert p.wake_at == at("2026-12-07T10:10")


def test_nothing_is_due_before_the_first_slot() -> None:
    p = plan(spec(), state(), [], at("2026-12-07T10:04:59"))
    assert p.create == []
    assert p.status["lastSlotTime"] is None
    assert p.status["nextScheduleTime"] == "2026-12-07T10:05:00Z"


def test_a_slot_acted_on_is_never_started_again() -> None:
    now = at("2026-12-07T10:05:01")
    first = plan(spec(), state(), [], now)
    # The status write was lost (a new leader): the run exists, so nothing is created.
    again = plan(spec(), state(), [slot_run("2026-12-07T10:05")], now)
    assert len(first.create) == 1
    assert again.create == []
    # The status was written: the slot is behind lastSlotTime.
    later = plan(spec(), state(last_slot=at("2026-12-07T10:05")), [], now)
    assert later.create == []


def test_time_zone_reads_the_expressions_in_wall_time() -> None:
    berlin = spec(schedules=["0 2 * * *"], timeZone="Europe/Berlin")
    p = plan(berlin, state(created=at("2026-12-07T00:00")), [], at("2026-12-08T01:00:01"))
    assert p.create[0].slot == at("2026-12-08T01:00")  # 02:00 in Berlin is 01:00 UTC


def test_forbid_skips_a_slot_while_a_run_is_active_and_says_so() -> None:
    running = slot_run("2026-12-07T10:05")
    p = plan(
        spec(concurrencyPolicy="Forbid"),
        state(last_slot=at("2026-12-07T10:05")),
        [running],
        at("2026-12-07T10:10:00.5"),
    )
    assert p.create == []
    assert p.status["lastSlotTime"] == "2026-12-07T10:10:00Z"  # skipped, not retried
    [(kind, reason, message)] = p.events
    assert (kind, reason) == ("Warning", "SkippedForbid")
    assert running.name in message
    assert "10:10:00" in message


def test_forbid_starts_when_the_earlier_run_finished() -> None:
    done = slot_run("2026-12-07T10:05", "Succeeded", "2026-12-07T10:06")
    p = plan(
        spec(concurrencyPolicy="Forbid"),
        state(last_slot=at("2026-12-07T10:05")),
        [done],
        at("2026-12-07T10:10:01"),
    )
    assert len(p.create) == 1


def test_allow_starts_beside_an_active_run() -> None:
    p = plan(
        spec(),
        state(last_slot=at("2026-12-07T10:05")),
        [slot_run("2026-12-07T10:05")],
        at("2026-12-07T10:10:01"),
    )
    assert len(p.create) == 1
    assert p.status["activeCount"] == 2


def test_replace_cancels_the_active_run_and_starts_the_new_one() -> None:
    old = slot_run("2026-12-07T10:05")
    p = plan(
        spec(concurrencyPolicy="Replace"),
        state(last_slot=at("2026-12-07T10:05")),
        [old],
        at("2026-12-07T10:10:01"),
    )
    assert p.cancel == [old.name]
    assert len(p.create) == 1
    assert [a["name"] for a in p.status["active"]] == [p.create[0].name]  # type: ignore[attr-defined]
    assert ("Normal", "Replaced") in [(k, r) for k, r, _ in p.events]


def test_suspend_starts_nothing_and_skips_the_times_it_covers() -> None:
    p = plan(spec(suspend=True), state(), [], at("2026-12-07T10:21"))
    assert p.create == []
    assert p.events == []
    assert p.status["lastSlotTime"] == "2026-12-07T10:20:00Z"  # not caught up on resume
    assert p.status["nextScheduleTime"] is None
    resumed = plan(spec(), state(last_slot=at("2026-12-07T10:20")), [], at("2026-12-07T10:22"))
    assert resumed.create == []
    suspended = {c["type"]: c["status"] for c in p.status["conditions"]}  # type: ignore[attr-defined]
    assert suspended["Suspended"] == "True"


def test_starting_deadline_and_catch_up_after_downtime() -> None:
    down = state(last_slot=at("2026-12-07T10:05"))
    now = at("2026-12-07T10:31:00")  # 10:10 .. 10:30 were missed
    none = plan(spec(startingDeadlineSeconds=30), down, [], now)
    assert none.create == []
    assert [r for _, r, _ in none.events] == ["MissedSchedule"]
    last = plan(spec(startingDeadlineSeconds=30, catchUpPolicy="Last"), down, [], now)
    assert [r.slot for r in last.create] == [at("2026-12-07T10:30")]
    every = plan(spec(startingDeadlineSeconds=30, catchUpPolicy="All", maxCatchUp=3), down, [], now)
    assert [r.slot for r in every.create] == [
        at("2026-12-07T10:20"),
        at("2026-12-07T10:25"),
        at("2026-12-07T10:30"),
    ]
    on_time = plan(spec(startingDeadlineSeconds=90), down, [], now)
    assert [r.slot for r in on_time.create] == [at("2026-12-07T10:30")]
    no_deadline = plan(spec(), down, [], now)  # the latest starts however late, as CronJob
    assert [r.slot for r in no_deadline.create] == [at("2026-12-07T10:30")]


def test_a_trigger_starts_one_run_even_when_suspended_or_forbidden() -> None:
    active = slot_run("2026-12-07T10:05")
    s = spec(suspend=True, concurrencyPolicy="Forbid")
    p = plan(s, state(trigger="2026-12-07T10:07:00Z"), [active], at("2026-12-07T10:07"))
    assert [r.name for r in p.create] == [trigger_run_name("nightly", "2026-12-07T10:07:00Z")]
    assert p.create[0].slot is None
    assert p.status["lastTrigger"] == "2026-12-07T10:07:00Z"
    seen = state(trigger="2026-12-07T10:07:00Z", last_trigger="2026-12-07T10:07:00Z")
    assert plan(s, seen, [active], at("2026-12-07T10:08")).create == []
    lost_status = state(trigger="2026-12-07T10:07:00Z")  # the run exists: not twice
    made = RunInfo(p.create[0].name, at("2026-12-07T10:07"), "Running")
    assert plan(s, lost_status, [active, made], at("2026-12-07T10:08")).create == []


def test_history_limits_delete_the_oldest_finished_runs() -> None:
    runs = [
        slot_run(f"2026-12-07T1{h}:00", phase, f"2026-12-07T1{h}:01")
        for h, phase in enumerate(["Succeeded", "Failed", "Succeeded", "Cancelled", "Succeeded"])
    ]
    p = plan(
        spec(successfulRunsHistoryLimit=2, failedRunsHistoryLimit=1),
        state(created=at("2026-12-07T09:00"), last_slot=at("2026-12-07T14:00")),
        runs,
        at("2026-12-07T14:01"),
    )
    assert p.delete == sorted([runs[0].name, runs[1].name])
    keep_none = plan(
        spec(successfulRunsHistoryLimit=0, failedRunsHistoryLimit=0),
        state(created=at("2026-12-07T09:00"), last_slot=at("2026-12-07T14:00")),
        [*runs, slot_run("2026-12-07T14:00")],
        at("2026-12-07T14:01"),
    )
    assert len(keep_none.delete) == 5  # never the active one


def test_a_bad_expression_the_schema_lets_through_is_reported_not_raised() -> None:
    p = plan(spec(schedules=["0 0 31 2 *"]), state(), [], at("2026-12-07T11:00"))
    ready = {c["type"]: c for c in p.status["conditions"]}["Ready"]  # type: ignore[attr-defined]
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSchedule")
    assert "never happens" in ready["message"]
    assert p.create == []


def test_the_last_run_and_success_are_shown() -> None:
    done = slot_run("2026-12-07T10:05", "Succeeded", "2026-12-07T10:06")
    p = plan(spec(), state(last_slot=at("2026-12-07T10:05")), [done], at("2026-12-07T10:07"))
    assert (p.status["lastRun"], p.status["lastRunPhase"]) == (done.name, "Succeeded")
    assert p.status["lastSuccessfulTime"] == "2026-12-07T10:06:00Z"


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace"])
@settings(max_examples=30, deadline=None)
@given(steps=st.lists(st.integers(1, 900), min_size=1, max_size=25))
def test_driven_by_any_ticks_no_slot_starts_twice(policy: str, steps: list[int]) -> None:
    """Tick at arbitrary moments, applying each plan as the controller would (runs
    finish after 4 minutes): no slot or run name is started twice, in slot order."""
    s = spec(concurrencyPolicy=policy, schedules=["*/3 * * * *"])
    st_ = state()
    runs: dict[str, RunInfo] = {}
    now = CREATED
    made: list[float] = []
    for step in steps:
        now += step
        runs = {
            n: (
                RunInfo(r.name, r.created, "Succeeded", r.slot, r.created + 240)
                if r.active and now - r.created >= 240
                else r
            )
            for n, r in runs.items()
        }
        p = plan(s, st_, list(runs.values()), now)
        for name in p.cancel:
            r = runs[name]
            runs[name] = RunInfo(r.name, r.created, "Cancelled", r.slot, now)
        for new in p.create:
            assert new.name not in runs
            runs[new.name] = RunInfo(new.name, now, None, new.slot)
            made.append(new.slot or 0.0)
        for name in p.delete:
            del runs[name]
        last = p.status["lastSlotTime"]
        st_ = ScheduleState("nightly", CREATED, 1, at(str(last).replace("Z", "")) if last else None)
    assert len(made) == len(set(made))
    assert made == sorted(made)
