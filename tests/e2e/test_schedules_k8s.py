"""WorkflowSchedules on the chart's operator (issue 20): runs start at their times, named
from them, owned and labelled; every spec field acts; the faults: the leader killed just
before a slot, the operator down across two slots, Forbid while a run is active.

The workflow is examples/nightly_report.py (its pool and Workflow from
examples/k8s/nightly-report.yaml); `settle_seconds` in the input makes a run last.
Slots a second apart use six-field expressions (a leading second); the fault tests
name one or two instants exactly (`at(...)`), so what is due is never a matter of luck.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.e2e.conftest import IMAGE, Install
from tests.e2e.kube import API_VERSION, Kube, Obj, documents, eventually
from tests.e2e.leadership import await_new_leader, crash, holder, leader
from tests.e2e.test_examples_k8s import manifest
from tether_operator.engine import Schedule, run_name
from tether_operator.k8s.resources.conditions import seconds_of

pytestmark = pytest.mark.timeout(600)

WORKFLOW = "nightly-report"


@pytest.fixture(scope="module")
def ns(tether: Install) -> Kube:
    """The schedules' namespace, serving nightly-report (not its WorkflowSchedule)."""
    ns = tether.workloads["schedules"]
    objs = [d for d in documents(manifest(f"{WORKFLOW}.yaml")) if d["kind"] != "WorkflowSchedule"]
    ns.apply(*objs)
    eventually(
        lambda: ns.jsonpath("wp", WORKFLOW, "{.status.readyReplicas}") == "1",
        timeout=120,
        what="the nightly-report pool ready",
    )
    assert IMAGE
    return ns


def schedule(name: str, schedules: list[str], **spec: Any) -> Obj:
    return {
        "apiVersion": API_VERSION,
        "kind": "WorkflowSchedule",
        "metadata": {"name": name},
        "spec": {"schedules": schedules, "workflowRef": {"name": WORKFLOW}, **spec},
    }


def at(*instants: float) -> str:
    """A six-field expression naming exactly these instants (UTC; all in one minute)."""
    whens = [datetime.fromtimestamp(t, UTC) for t in instants]
    first = whens[0]
    assert all(w.replace(second=0) == first.replace(second=0) for w in whens)
    seconds = ",".join(str(w.second) for w in whens)
    return f"{seconds} {first.minute} {first.hour} {first.day} {first.month} *"


def soonest(lead: float, span: float = 0.0) -> float:
    """The first whole second at least `lead` seconds away whose minute also holds the
    instant `span` seconds after it (so that `at` can name both)."""
    t = float(int(time.time() + lead) + 1)
    if int(t) // 60 != int(t + span) // 60:
        t = (int(t) // 60 + 1) * 60.0
    return t


def runs(ns: Kube, name: str) -> dict[str, Obj]:
    return {r["metadata"]["name"]: r for r in ns.list("wfr", f"tether.dev/schedule={name}")}


def events(ns: Kube, name: str, reason: str) -> list[Obj]:
    found = ns.list("events", None)
    return [
        e
        for e in found
        if e["involvedObject"].get("name") == name
        and e["involvedObject"].get("kind") == "WorkflowSchedule"
        and e["reason"] == reason
    ]


def phases(ns: Kube, name: str) -> dict[str, str | None]:
    """The phase of each run of schedule `name`, by run name."""
    return {n: (r.get("status") or {}).get("phase") for n, r in runs(ns, name).items()}


def seen(ns: Kube, *names: str) -> bool:
    """Whether the operator wrote every schedule's status (its next time)."""
    return all(ns.get("wfs", n).get("status", {}).get("nextScheduleTime") for n in names)


def slot_of(run: Obj) -> float:
    slot = seconds_of(run["metadata"]["annotations"]["tether.dev/scheduled-time"])
    assert slot is not None
    return slot


@pytest.fixture
def cleanup(ns: Kube) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        ns.delete("wfs", name, "--ignore-not-found", "--wait=false")


def test_a_schedule_starts_each_slot_once_on_time_owned_labelled_and_kept_to_its_limits(
    ns: Kube, cleanup: list[str]
) -> None:
    cleanup.append("every5")
    ns.apply(
        schedule(
            "every5",
            ["*/5 * * * * *"],
            input={"region": "us"},
            successfulRunsHistoryLimit=2,
            failedRunsHistoryLimit=0,
        )
    )
    started = eventually(
        lambda: len(events(ns, "every5", "Started")) >= 4 and events(ns, "every5", "Started"),
        timeout=60,
        what="four runs started",
    )
    assert started
    kept = eventually(
        lambda: (r := runs(ns, "every5")) and len(r) <= 3 and r, timeout=30, what="history kept"
    )
    owner = ns.get("wfs", "every5")
    for name, run in kept.items():
        slot = slot_of(run)
        assert name == run_name("every5", slot, seconds=True)
        assert slot % 5 == 0
        (ref,) = run["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["uid"], ref["controller"]) == (
            "WorkflowSchedule",
            owner["metadata"]["uid"],
            True,
        )
        created = seconds_of(run["metadata"]["creationTimestamp"])
        assert created is not None
        assert 0 <= created - int(slot) <= 2, "created within its slot's second (or the next)"
        assert run["spec"]["input"] == {"region": "us"}
    done = eventually(
        lambda: [n for n, p in phases(ns, "every5").items() if p == "Succeeded"],
        timeout=60,
        what="a run succeeded",
    )
    assert ns.get("wfr", done[0])["status"]["result"]["report"] == "us: 2 orders, 409.99 total"
    eventually(
        lambda: list(phases(ns, "every5").values()).count("Succeeded") == 2,
        timeout=30,
        what="successfulRunsHistoryLimit 2 kept",
    )

    status = ns.get("wfs", "every5")["status"]
    last, nxt = seconds_of(status["lastScheduleTime"]), seconds_of(status["nextScheduleTime"])
    assert last is not None
    assert nxt is not None
    assert nxt - last == 5
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Suspended": "False",
    }
    header, row = (line.split() for line in ns.run("get", "wfs", "every5").splitlines())
    assert header[:6] == ["NAME", "SCHEDULE", "WORKFLOW", "SUSPEND", "ACTIVE", "LAST"]
    assert row[:4] == ["every5", "*/5", "*", "*"] or row[0] == "every5"

    # Deleting the schedule deletes its runs (owned); orphaning keeps them.
    ns.run("patch", "wfs", "every5", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    remaining = set(runs(ns, "every5"))
    ns.run("delete", "wfs", "every5", "--cascade=orphan")
    time.sleep(3)
    assert remaining <= set(runs(ns, "every5")), "orphaned runs stay"
    for name in remaining:
        ns.delete("wfr", name, "--wait=false")


def test_deleting_a_schedule_deletes_its_runs(ns: Kube) -> None:
    ns.apply(schedule("gone", ["*/2 * * * * *"]))
    eventually(lambda: runs(ns, "gone"), timeout=30, what="a run")
    ns.delete("wfs", "gone")
    eventually(lambda: not runs(ns, "gone"), timeout=60, what="its runs garbage-collected")


def test_forbid_skips_a_slot_while_a_long_run_is_active_and_says_so(
    ns: Kube, cleanup: list[str]
) -> None:
    cleanup.append("forbid")
    ns.apply(
        schedule(
            "forbid",
            ["*/3 * * * * *"],
            input={"region": "eu", "settle_seconds": 10},
            concurrencyPolicy="Forbid",
        )
    )
    skipped = eventually(
        lambda: events(ns, "forbid", "SkippedForbid"), timeout=30, what="a SkippedForbid Event"
    )
    assert skipped[0]["type"] == "Warning"
    assert "concurrencyPolicy is Forbid" in skipped[0]["message"]
    ns.run("patch", "wfs", "forbid", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    made = runs(ns, "forbid")
    assert len(made) == 1, f"one run at a time: {sorted(made)}"
    status = ns.get("wfs", "forbid")["status"]
    assert status["activeCount"] == 1
    assert [a["name"] for a in status["active"]] == list(made)


def test_replace_cancels_the_active_run_and_starts_the_new_one(
    ns: Kube, cleanup: list[str]
) -> None:
    cleanup.append("replace")
    ns.apply(
        schedule(
            "replace",
            ["*/6 * * * * *"],
            input={"region": "eu", "settle_seconds": 60},
            concurrencyPolicy="Replace",
        )
    )

    eventually(
        lambda: "Cancelled" in phases(ns, "replace").values(),
        timeout=40,
        what="a run cancelled by the next slot",
    )
    ns.run("patch", "wfs", "replace", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    assert events(ns, "replace", "Replaced")
    active = [p for p in phases(ns, "replace").values() if p in (None, "Pending", "Running")]
    assert len(active) <= 1


def tether_cli(kube: Kube, ns: Kube, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "TETHER_TOKEN": token}
    env.pop("TETHER_SERVER", None)
    command = [sys.executable, "-m", "tether_operator.cli", "--server", "kube",
               "-n", str(ns.namespace), *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=90,
                          check=False)  # fmt: skip


def test_suspend_trigger_and_resume_with_kubectl_and_the_cli(
    ns: Kube, kube: Kube, cleanup: list[str]
) -> None:
    cleanup.append("paused")
    ns.apply(schedule("paused", ["*/2 * * * * *"], suspend=True))
    time.sleep(5)
    assert runs(ns, "paused") == {}, "a suspended schedule starts nothing"
    status = ns.get("wfs", "paused")["status"]
    assert "nextScheduleTime" not in status
    assert {c["type"]: c["status"] for c in status["conditions"]}["Suspended"] == "True"

    ns.run("annotate", "wfs", "paused", "tether.dev/trigger=one", "--overwrite")
    (triggered,) = eventually(lambda: list(runs(ns, "paused")), timeout=20, what="a triggered run")
    assert triggered.startswith("paused-t")
    assert "tether.dev/scheduled-time" not in (
        ns.get("wfr", triggered)["metadata"].get("annotations") or {}
    )

    ns.run("create", "serviceaccount", "scheduler-user")
    ns.run("create", "role", "viewer", "--verb=get,list",
           "--resource=workflowschedules.tether.dev")  # fmt: skip
    ns.run("create", "rolebinding", "viewer", "--role=viewer",
           f"--serviceaccount={ns.namespace}:scheduler-user")  # fmt: skip
    token = ns.run("create", "token", "scheduler-user", "--audience", "tether.dev/scheduler")
    token = token.strip()
    listed = tether_cli(kube, ns, token, "get", "schedules")
    assert listed.returncode == 0, listed.stderr
    assert "paused" in listed.stdout
    refused = tether_cli(kube, ns, token, "schedule", "trigger", "paused")
    assert refused.returncode == 1
    assert "may not patch workflowschedules" in refused.stderr

    ns.run("create", "role", "operator", "--verb=patch",
           "--resource=workflowschedules.tether.dev")  # fmt: skip
    ns.run("create", "role", "starter", "--verb=create", "--resource=workflowruns.tether.dev")
    for role in ("operator", "starter"):
        ns.run("create", "rolebinding", role, f"--role={role}",
               f"--serviceaccount={ns.namespace}:scheduler-user")  # fmt: skip
    cli = eventually(
        lambda: (
            (r := tether_cli(kube, ns, token, "schedule", "trigger", "paused")).returncode == 0
            and r
        ),
        timeout=30,
        what="the CLI trigger allowed",
    )
    assert "triggered: run " in cli.stdout
    assert ".paused-t" in cli.stdout
    eventually(lambda: len(runs(ns, "paused")) == 2, timeout=20, what="the CLI's run")

    resumed_at = time.time()
    resumed = tether_cli(kube, ns, token, "schedule", "resume", "paused")
    assert resumed.returncode == 0, resumed.stderr
    eventually(lambda: len(runs(ns, "paused")) >= 3, timeout=20, what="a run after resuming")
    ns.run("patch", "wfs", "paused", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    slots = [slot_of(r) for n, r in runs(ns, "paused").items() if not n.startswith("paused-t")]
    assert slots
    assert min(slots) >= resumed_at - 1, "suspended times are not caught up"


def test_the_leader_killed_just_before_a_slot_fires_it_once_within_its_deadline(
    tether: Install, ns: Kube, cleanup: list[str]
) -> None:
    slot = soonest(25)
    cleanup.append("failover")
    expression = at(slot)
    ns.apply(schedule("failover", [expression], startingDeadlineSeconds=120))
    eventually(
        lambda: ns.get("wfs", "failover").get("status", {}).get("nextScheduleTime"),
        timeout=20,
        what="the schedule seen",
    )
    pod = eventually(lambda: leader(tether), timeout=30, what="the leader")
    was = holder(tether)
    time.sleep(max(0.0, slot - 2 - time.time()))
    crash(pod)
    await_new_leader(tether, was)
    (name,) = eventually(lambda: list(runs(ns, "failover")), timeout=120, what="the slot's run")
    run = ns.get("wfr", name)
    seconds = Schedule.parse([expression]).has_seconds  # at :00, the minute names it
    assert name == run_name("failover", slot, seconds=seconds)
    created = seconds_of(run["metadata"]["creationTimestamp"])
    assert created is not None
    assert slot <= created + 1 <= slot + 120 + 1, "fired late, within its starting deadline"
    time.sleep(3)
    assert list(runs(ns, "failover")) == [name], "fired once"
    assert len(events(ns, "failover", "Started")) == 1


def test_the_operator_down_across_two_slots_applies_each_catch_up_policy_exactly(
    tether: Install, ns: Kube, cleanup: list[str]
) -> None:
    first = soonest(30, span=30)
    second = first + 30
    names = {"None": "down-none", "Last": "down-last", "All": "down-all"}
    cleanup.extend(names.values())
    for policy, name in names.items():
        ns.apply(
            schedule(name, [at(first, second)], startingDeadlineSeconds=3, catchUpPolicy=policy)
        )
    eventually(
        lambda: all(
            ns.get("wfs", n).get("status", {}).get("nextScheduleTime") for n in names.values()
        ),
        timeout=20,
        what="the schedules seen",
    )
    deployment = f"deploy/{tether.release}"
    tether.system.run("scale", deployment, "--replicas=0")
    try:
        eventually(lambda: not tether.operator_pods(), timeout=60, what="the operator gone")
        assert time.time() < first, "down before the first slot"
        time.sleep(max(0.0, second + 5 - time.time()))
    finally:
        tether.system.run("scale", deployment, "--replicas=2")
    eventually(lambda: leader(tether), timeout=120, what="the operator back")
    eventually(
        lambda: all(
            seconds_of(ns.get("wfs", n).get("status", {}).get("lastSlotTime")) == second
            for n in names.values()
        ),
        timeout=60,
        what="both missed slots acted on",
    )
    started = {p: sorted(slot_of(r) for r in runs(ns, n).values()) for p, n in names.items()}
    assert started == {"None": [], "Last": [second], "All": [first, second]}
    (missed,) = events(ns, "down-none", "MissedSchedule")
    assert "2 scheduled time(s) missed" in missed["message"]
    assert "catchUpPolicy None skips them" in missed["message"]
    assert json.dumps(started)
