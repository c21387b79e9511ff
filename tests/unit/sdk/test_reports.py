"""Splitting a refused report keeps every item, once, in order."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from worker_runtime.reports import describe_report, split_report

runs = st.sampled_from(["r1", "r2", "r3"])
commands = st.lists(st.tuples(runs, st.integers(1, 50)), max_size=12)


def report(
    completions: list[int], heartbeats: list[int], cmds: list[tuple[str, int]]
) -> dict[str, Any]:
    workflows: list[dict[str, Any]] = []
    for run_id, seq in cmds:
        if not workflows or workflows[-1]["run_id"] != run_id:
            workflows.append(
                {"run_id": run_id, "workflow_task_id": f"{run_id}/wf/1", "commands": []}
            )
        workflows[-1]["commands"].append({"type": "start_timer", "seq": seq})
    return {
        "completions": [{"task_id": f"t{i}", "ok": True} for i in completions],
        "heartbeats": [{"task_id": f"h{i}", "details": i} for i in heartbeats],
        "workflows": workflows,
        "max_tasks": 3,
    }


def flatten(body: dict[str, Any]) -> list[Any]:
    items: list[Any] = [c["task_id"] for c in body["completions"]]
    items += [h["task_id"] for h in body["heartbeats"]]
    items += [(w["run_id"], c["seq"]) for w in body["workflows"] for c in w["commands"]]
    return items


def per_run(body: dict[str, Any]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for w in body["workflows"]:
        out.setdefault(w["run_id"], []).extend(c["seq"] for c in w["commands"])
    return out


@given(st.lists(st.integers(0, 99), max_size=6), st.lists(st.integers(0, 99), max_size=4), commands)
def test_halves_carry_every_item_once_and_in_order(
    completions: list[int], heartbeats: list[int], cmds: list[tuple[str, int]]
) -> None:
    body = report(completions, heartbeats, cmds)
    halves = split_report(body)
    if len(flatten(body)) < 2:
        assert halves is None
        return
    assert halves is not None
    first, second = halves
    assert flatten(first)
    assert flatten(second)
    merged = {**per_run(first)}
    for run_id, seqs in per_run(second).items():
        merged.setdefault(run_id, []).extend(seqs)
    assert merged == per_run(body)  # each run's commands keep their order
    assert sorted(map(str, flatten(first) + flatten(second))) == sorted(map(str, flatten(body)))
    assert first["max_tasks"] == second["max_tasks"] == 3


def test_describe_names_what_is_dropped() -> None:
    body = report([7], [], [("r2", 4)])
    assert describe_report(body) == "a report of t7, r2 command start_timer"


def test_describe_counts_a_run_s_commands_by_type() -> None:
    body = report([1, 2], [3], [("r1", 1), ("r1", 2), ("r1", 3), ("r2", 1)])
    assert describe_report(body) == (
        "a report of t1, t2, h3, r1 3 commands start_timer, r2 command start_timer"
    )
