"""One active scheduler (issue 9, test 6): leader election, fencing and failover.

Against the real apiserver without an operator: the Lease elector (two candidates,
a release, a takeover) and store fencing (two stores of different epochs on one run:
the deposed one's writes are refused and the history stays whole).

With the chart (the `tether` fixture, two operator replicas): one pod leads and the
Service reaches it alone; the leader pod is killed twice (once gracefully, once with
`--grace-period=0 --force`) while several multi-step runs, some in SOFT sessions, are
going: every run succeeds and no step whose completion was acknowledged ran again (a
step in flight at a kill may: it was dispatched before its start was written, one
commit per step, docs/semantics.md). The failover time (leader
pod killed → the standby serves → the next step completes) is printed for each kill.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from bench.store_bench import activity
from tests.e2e.conftest import Install
from tests.e2e.kube import API_VERSION, Kube, KubectlError, eventually
from tests.e2e.leadership import await_new_leader, crash, holder, leader
from tests.e2e.scenario import Pool, serve, steps
from tether_operator.k8s.access.leader import LeaderElector, LeaseSettings
from tether_operator.k8s.api.client import KubeClient, resource_path
from tether_operator.k8s.resources.naming import run_id_for
from tether_operator.k8s.store.history import (
    EPOCH_ANNOTATION,
    SEALED_ANNOTATION,
    KubernetesRunStore,
)
from tether_operator.store.fencing import Fence, Fenced

pytestmark = pytest.mark.timeout(600)


Event = dict[str, Any]


@pytest.fixture
def ns(scratch: Kube) -> str:
    """The name of the test's own namespace."""
    assert scratch.namespace is not None
    return scratch.namespace


def candidate(client: KubeClient, ns: str, name: str) -> LeaderElector:
    settings = LeaseSettings(
        name="tether",
        namespace=ns,
        identity=name,
        lease_duration=3,
        renew_deadline=2,
        retry_period=0.2,
    )
    return LeaderElector(client, settings)


async def test_candidates_share_one_lease_and_a_release_hands_it_over(
    client: KubeClient, ns: str
) -> None:
    a, b = candidate(client, ns, "a"), candidate(client, ns, "b")
    assert await a.acquire() == 0
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(1.0)
    assert not waiting.done(), "b took a live lease"
    await a.release()
    assert await asyncio.wait_for(waiting, 5) == 1, "a released lease is a new epoch"
    assert not await a.confirm()
    assert await b.confirm()
    lease = await client.get(b.path)
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1


async def test_a_silent_leader_is_replaced_after_the_lease_duration(
    client: KubeClient, ns: str
) -> None:
    a, b = candidate(client, ns, "a"), candidate(client, ns, "b")
    await a.acquire()
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await asyncio.wait_for(b.acquire(), 10) == 1
    waited = loop.time() - start
    assert 2.5 < waited < 6, f"b took over after {waited:.1f}s (lease duration 3s)"


async def new_run(client: KubeClient, ns: str, name: str = "run") -> tuple[str, str]:
    body = {
        "apiVersion": API_VERSION,
        "kind": "WorkflowRun",
        "metadata": {"name": name},
        "spec": {"workflowRef": {"name": "wf"}},
    }
    obj = await client.create(resource_path(API_VERSION, "workflowruns", ns), body)
    return run_id_for(ns, name), obj["metadata"]["uid"]


def fenced_store(
    client: KubeClient, ns: str, run: tuple[str, str], epoch: int, segment_bytes: int = 32 * 1024
) -> KubernetesRunStore:
    store = KubernetesRunStore(client, [ns], fence=Fence(epoch=epoch), segment_bytes=segment_bytes)
    store.bind(*run)
    return store


async def segments(client: KubeClient, ns: str) -> list[dict[str, Any]]:
    items = await client.list(
        resource_path("v1", "configmaps", ns), label_selector="tether.dev/part=history"
    )
    return sorted(items, key=lambda s: int(s["metadata"]["annotations"]["tether.dev/segment"]))


async def test_a_deposed_leaders_append_is_refused_and_history_stays_whole(
    client: KubeClient, ns: str
) -> None:
    run = await new_run(client, ns)
    old = fenced_store(client, ns, run, epoch=1)
    events: list[Event] = []
    for seq in range(1, 4):
        await old.append(run[0], activity(seq))
        events += activity(seq)
    new = fenced_store(client, ns, run, epoch=2)
    assert await new.load(run[0]) == events, "the new leader reads what the old one wrote"
    (segment,) = await segments(client, ns)
    assert segment["metadata"]["annotations"][EPOCH_ANNOTATION] == "2"

    with pytest.raises(Fenced, match="belongs to epoch 2, not this leader's 1"):
        await old.append(run[0], activity(4))
    with pytest.raises(Fenced):
        await old.append(run[0], activity(5))  # tripped: refused without asking

    await new.append(run[0], activity(4))
    events += activity(4)
    reader = fenced_store(client, ns, run, epoch=3)
    assert await reader.load(run[0]) == events


async def test_a_child_runs_history_is_recovered_and_fenced_like_its_roots(
    client: KubeClient, ns: str
) -> None:
    run = await new_run(client, ns)
    child = f"{run[0]}-c1"
    started = {"type": "RunStarted", "time": 0.0, "data": {"parent_run_id": run[0]}}
    old = fenced_store(client, ns, run, epoch=1)
    await old.append(run[0], activity(1))
    old.child_started(child, run[0])  # the engine's RunStarted notice, as the operator binds it
    await old.append(child, [started, *activity(1)])
    new = KubernetesRunStore(client, [ns], fence=Fence(epoch=2))
    assert await new.run_ids() == [run[0], child]
    assert new.binding(child) == run[1], "bound to the root's WorkflowRun"
    # A history from before runs carried their namespace loads with its WorkflowRun's.
    recorded = {**started, "data": {**started["data"], "namespace": ns}}
    assert await new.load(child) == [recorded, *activity(1)]
    with pytest.raises(Fenced, match="belongs to epoch 2, not this leader's 1"):
        await old.append(child, activity(2))
    await new.append(child, activity(2))
    stamped = {
        s["metadata"]["name"]: s["metadata"]["annotations"][EPOCH_ANNOTATION]
        for s in await segments(client, ns)
    }
    assert stamped == {"run-h0": "1", "run-c1-h0": "2"}, "only what the new leader claimed"


async def test_a_deposed_leader_can_neither_seal_nor_start_the_next_segment(
    client: KubeClient, ns: str
) -> None:
    # Segments of about two activities: every third append rolls over.
    run = await new_run(client, ns)
    old = fenced_store(client, ns, run, epoch=1, segment_bytes=2000)
    events: list[Event] = []
    for seq in range(1, 5):
        await old.append(run[0], activity(seq))
        events += activity(seq)
    before = await segments(client, ns)
    assert len(before) >= 2
    assert all(s["metadata"]["annotations"].get(SEALED_ANNOTATION) for s in before[:-1])

    new = fenced_store(client, ns, run, epoch=2, segment_bytes=2000)
    assert await new.load(run[0]) == events
    old._runs[run[0]].segment_bytes = 10**6  # its segment is full: it must seal it first
    with pytest.raises(Fenced, match="belongs to epoch 2"):
        await old.append(run[0], activity(5))
    after = await segments(client, ns)
    assert [s["metadata"]["name"] for s in after] == [s["metadata"]["name"] for s in before]

    # A run whose newest segment was sealed: the new leader starts the next one itself,
    # so the old one's create finds the name taken.
    run2 = await new_run(client, ns, "sealed")
    old2 = fenced_store(client, ns, run2, epoch=1, segment_bytes=2000)
    for seq in range(1, 3):
        await old2.append(run2[0], activity(seq))
    names = [
        s["metadata"]["name"]
        for s in await segments(client, ns)
        if s["metadata"]["name"].startswith("sealed-")
    ]
    await client.patch(
        resource_path("v1", "configmaps", ns, names[-1]),
        {"metadata": {"annotations": {SEALED_ANNOTATION: "true"}}},
    )
    new2 = fenced_store(client, ns, run2, epoch=2, segment_bytes=2000)
    loaded = await new2.load(run2[0])
    created = await client.get(resource_path("v1", "configmaps", ns, f"sealed-h{len(names)}"))
    assert created["metadata"]["annotations"][EPOCH_ANNOTATION] == "2"
    assert not created.get("data")
    old2._runs[run2[0]].segment_bytes = 10**6  # the old leader believes its segment is full
    with pytest.raises(Fenced, match="created by epoch 2, newer than this leader's 1"):
        await old2.append(run2[0], activity(3))
    await new2.append(run2[0], activity(3))
    assert await fenced_store(client, ns, run2, epoch=3).load(run2[0]) == loaded + activity(3)


# ---------------------------------------------------------------------- with the chart

POOL = "leader-steps"


def readyz(tether: Install, pod: str) -> str:
    """`/readyz` of an operator pod, through the apiserver's pod proxy: its body."""
    path = f"/api/v1/namespaces/{tether.system.namespace}/pods/{pod}:7233/proxy/readyz"
    try:
        return tether.system.run("get", "--raw", path)
    except KubectlError as exc:
        return f"error: {exc}"


def service_endpoints(tether: Install) -> set[str]:
    """The pod names the Service routes to (ready endpoints)."""
    slices = tether.system.list("endpointslices", f"kubernetes.io/service-name={tether.release}")
    return {
        e["targetRef"]["name"]
        for s in slices
        for e in s.get("endpoints") or []
        if e.get("conditions", {}).get("ready") and e.get("targetRef")
    }


LINE = re.compile(r"^(\S+) tether-e2e (started|executed) tag=(\w+) step=(\d+)$", re.M)


def timed_lines(pool: Pool) -> list[tuple[float, str, str, int]]:
    """Every step line of the pool's pods: (time, started|executed, tag, step)."""
    lines = []
    for pod in pool.pods(terminating=True):
        text = pool.log(pod, "--timestamps")
        for stamp, what, tag, step in LINE.findall(text):
            whole, _, frac = stamp.rstrip("Z").partition(".")
            when = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
            lines.append((when + float(f"0.{frac or 0}"), what, tag, int(step)))
    return sorted(lines)


@pytest.fixture(scope="module")
def pool(tether: Install) -> Pool:
    """The `leader-steps` pool (two pods, ready) and Workflow in the `runs` namespace."""
    return serve(tether.workloads["runs"], POOL, "sticky_steps.py", replicas=2).ready(2)


def test_one_operator_leads_and_the_service_routes_to_it_alone(tether: Install) -> None:
    pods = tether.operator_pods()
    assert len(pods) == 2, [p["metadata"]["name"] for p in pods]
    first = eventually(lambda: leader(tether), timeout=120, what="one leader pod")
    name = first["metadata"]["name"]
    (standby,) = [p["metadata"]["name"] for p in pods if p["metadata"]["name"] != name]
    eventually(lambda: service_endpoints(tether) == {name}, what="the Service to reach the leader")
    assert '"leader":true' in readyz(tether, name).replace(" ", "")
    # The standby answers 503 (the apiserver's proxy reports it as ServiceUnavailable).
    assert "ServiceUnavailable" in readyz(tether, standby), readyz(tether, standby)
    lease = tether.system.get("lease", tether.release)
    assert lease["spec"]["holderIdentity"].startswith(f"{name}_")
    # Earlier tests may have killed this pod's operator before: it led more than once,
    # and one of its LeaderElected Events names the epoch it leads in now.
    epoch = f"epoch {lease['spec']['leaseTransitions']}"
    eventually(
        lambda: [
            e
            for e in tether.system.list("events")
            if e["reason"] == "LeaderElected"
            and e["involvedObject"]["name"] == name
            and epoch in e["message"]
        ],
        what=f"a LeaderElected Event on {name} naming {epoch}",
    )


KILLS = tuple(os.environ.get("TETHER_E2E_FAILOVER_KILLS", "graceful,forced").split(","))
"""How the leader is killed, in turn: `graceful` (`kubectl delete pod`), `forced`
(`--grace-period=0 --force`) and `crash`: SIGKILL to the operator process, found by its
pod's cgroup (kind's nodes are containers of this host); the container restarts in the
same pod without releasing the Lease."""


def test_leader_killed_twice_mid_run_every_run_finishes_and_no_acknowledged_step_runs_again(
    tether: Install, pool: Pool
) -> None:
    # Runs move at different paces across failovers: enough steps that none ends early.
    count, seconds = 12 + 8 * len(KILLS), 0.4
    runs = [steps(pool.ns, POOL, count, seconds, sticky=i % 2 == 1) for i in range(4)]
    transitions = int(tether.system.get("lease", tether.release)["spec"]["leaseTransitions"])
    kills: list[dict[str, Any]] = []
    for kill, how in enumerate(KILLS, 1):
        threshold = 4 * kill
        try:
            eventually(
                lambda t=threshold: all(run.done >= t for run in runs),
                timeout=180,
                what=f"every run to complete {threshold} steps",
            )
        except AssertionError as exc:
            behind = [run for run in runs if run.done < threshold]
            raise AssertionError(
                "\n".join([str(exc), *(pool.ns.run_post_mortem(run.name) for run in behind)])
            ) from None
        phases = {run.name: run.phase for run in runs}
        assert "Running" in phases.values(), f"every run ended before kill {kill}: {phases}"
        pod = eventually(lambda: leader(tether), what="the leader")
        old, was = pod["metadata"]["name"], holder(tether)
        assert was.startswith(f"{old}_")
        killed = time.time()
        if how == "crash":
            crash(pod)
        else:
            flags = ["--grace-period=0", "--force"] if how == "forced" else []
            tether.system.run("delete", "pod", old, "--wait=false", *flags)

        await_new_leader(tether, was)
        kills.append({"kill": kill, "how": how, "at": killed, "ready": time.time() - killed})
        # The next kill waits for a step completed under this leader: each failover is
        # measured to its own progress, not to the next one's.
        moved = sum(run.done for run in runs)
        eventually(
            lambda m=moved: sum(run.done for run in runs) > m,
            timeout=120,
            what=f"a step to complete under the leader after kill {kill}",
        )

    for run in runs:
        run.wait(timeout=300)
        pool.ns.wait("wfr", run.name, "Succeeded", timeout=5)  # on failure: status, Events
        assert run.result == {"steps": count, "total": sum(range(count))}
    lines = timed_lines(pool)
    for run in runs:
        executed = Counter(
            step for _, what, t, step in lines if t == run.tag and what == "executed"
        )
        assert sorted(executed) == list(range(count)), (
            f"{run.name}: steps seen {sorted(executed)}; worker restarts {pool.restarts()}"
        )
        # A step run again must have been in flight at a kill: every start of it came
        # before its successor started (the run moves on only once a completion is
        # acknowledged), and at most one per kill.
        again = {step: n for step, n in executed.items() if n > 1}
        starts = [(t, step) for t, what, tag, step in lines if tag == run.tag and what == "started"]
        twice = {
            step: n
            for step, n in again.items()
            if max(t for t, s in starts if s == step)
            > min((t for t, s in starts if s == step + 1), default=float("inf"))
        }
        if len(again) > len(KILLS):
            twice = again
        if twice:  # say when each ran, against the kills, and what history recorded
            seen = [line for line in lines if line[2] == run.tag and line[3] in twice]
            raise AssertionError(
                f"{run.name}: completed steps ran again after a leader kill: {twice}\n"
                f"their lines (time, what, tag, step): {seen}\nkills: {kills}\n"
                f"{pool.ns.run_post_mortem(run.name, events=60)}"
            )
    lease = tether.system.get("lease", tether.release)
    assert int(lease["spec"]["leaseTransitions"]) >= transitions + len(KILLS)

    # Failover: from the kill to the first step the new leader dispatched completing (a
    # step started more than a second after the kill cannot come from the old leader).
    for k in kills:
        done = [
            when
            for when, what, tag, step in lines
            if what == "executed"
            and any(
                w > k["at"] + 1.0 and s == step and t == tag
                for w, x, t, s in lines
                if x == "started"
            )
        ]
        k["progress"] = min(done) - k["at"]
        print(
            f"failover, {k['how']} kill: new leader ready after "
            f"{k['ready']:.1f}s, runs progress again after {k['progress']:.1f}s"
        )
    out = os.environ.get("TETHER_E2E_FAILOVER_OUT")
    if out:
        with open(out, "a") as f:
            for k in kills:
                f.write(json.dumps({key: v for key, v in k.items() if key != "at"}) + "\n")
