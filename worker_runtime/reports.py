"""Shaping reports: how a report the scheduler refused is split in order and named.

A report carries completions, activity heartbeats and workflow commands. When the
scheduler refuses one (too large, or one bad item), the worker bisects it, keeping
every run's commands in order, so at most the single offending item is dropped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any


def split_report(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Two reports that together say what `body` says, in the same order; None if atomic."""
    items: list[tuple[str, Any]] = [("completions", c) for c in body["completions"]]
    items += [("heartbeats", h) for h in body["heartbeats"]]
    for batch in body["workflows"]:
        items += [
            ("command", (batch["run_id"], batch["workflow_task_id"], c)) for c in batch["commands"]
        ]
    if len(items) < 2:
        return None
    middle = len(items) // 2
    return report_of(items[:middle], body), report_of(items[middle:], body)


def describe_report(body: dict[str, Any]) -> str:
    """Names what a report carries, for the one log line that drops it: every task id,
    and each run's commands counted by type."""
    ids = [c["task_id"] for c in body["completions"]] + [h["task_id"] for h in body["heartbeats"]]
    for w in body["workflows"]:
        counts = Counter(str(c.get("type")) for c in w["commands"])
        for kind, n in counts.items():
            ids.append(
                f"{w['run_id']} command {kind}" if n == 1 else f"{w['run_id']} {n} commands {kind}"
            )
    return "a report of " + (", ".join(ids) or "nothing")


def report_of(items: list[tuple[str, Any]], like: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "completions": [],
        "heartbeats": [],
        "workflows": [],
        "max_tasks": like["max_tasks"],
    }
    by_task: dict[tuple[str, str], list[Any]] = {}
    for kind, item in items:
        if kind == "command":
            run_id, task_id, command = item
            if (run_id, task_id) not in by_task:
                by_task[(run_id, task_id)] = []
                report["workflows"].append(
                    {
                        "run_id": run_id,
                        "workflow_task_id": task_id,
                        "commands": by_task[(run_id, task_id)],
                    }
                )
            by_task[(run_id, task_id)].append(command)
        else:
            report[kind].append(item)
    return report
