"""Chaos on the kind cluster (issue 14): nothing lost, nothing acknowledged run twice.

Plain, SOFT and HARD runs of `testdata/chaos.py` go through the chart's operator while
a random worker pod is deleted every few seconds, the leading operator is SIGKILLed
and (in the full form) a node is stopped and started again. Every attempt of a step
posts a line to a ledger this test serves on the host, before it works. At the end:

- every plain and SOFT run Succeeded with its exact result; a HARD run Succeeded with
  it, or failed with `SessionBroken` and nothing else;
- every recorded completion matches an attempt in the ledger, and no attempt of a step
  started after the attempt whose completion was recorded (nothing acknowledged ran again).

CI runs the short form. `make chaos` runs the full one (`TETHER_CHAOS=full`: 200 runs of
10 steps, three leader kills, a node stopped and started) and writes its figures to
`TETHER_CHAOS_REPORT` (bench/results/chaos.md). Needs a cluster whose pods reach this
host (kind's docker network) and whose operator processes are processes of this host
(kind's nodes are containers here; see `crash`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Install
from tests.e2e.kube import API_VERSION, Kube, KubectlError, Obj, eventually, running_and_ready
from tests.e2e.leadership import await_new_leader, crash, holder, leader
from tests.e2e.nodes import NodePower, host_from_pods
from tests.e2e.scenario import Pool, workflow
from tests.e2e.testdata_pools import script_pool
from tether_operator.k8s.api.client import KubeClient, load_config
from tether_operator.k8s.resources.naming import run_id_for
from tether_operator.k8s.store.history import KubernetesRunStore

KINDS = ("plain", "soft", "hard")
POOL = "chaos"
ENDED = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class Plan:
    """How much chaos: the runs, the pool and what is killed when."""

    runs: int
    steps: int
    seconds: float
    """How long each step works."""
    replicas: int
    delete_every: float
    """Seconds between two worker pod deletions."""
    leader_kills: tuple[float, ...]
    """When to SIGKILL the leader: fractions of the steps done."""
    node_stop: float | None = None
    """When to stop a node (a fraction of the steps done); None: never."""
    node_down: float = 40.0
    """How long the node stays off."""
    deadline: float = 600.0


SHORT = Plan(runs=12, steps=6, seconds=1.5, replicas=2, delete_every=5, leader_kills=(0.3,))
FULL = Plan(
    runs=200,
    steps=10,
    seconds=1.0,
    replicas=4,
    delete_every=5,
    leader_kills=(0.15, 0.55, 0.8),
    node_stop=0.3,
    deadline=2400,
)
PLAN = FULL if os.environ.get("TETHER_CHAOS") == "full" else SHORT
REPORT = os.environ.get("TETHER_CHAOS_REPORT")

pytestmark = pytest.mark.timeout(int(PLAN.deadline) + 600)


# ---------------------------------------------------------------------- the ledger


class Ledger(ThreadingHTTPServer):
    """Collects the attempt lines the pods post (one JSON object per request)."""

    def __init__(self, host: str) -> None:
        super().__init__((host, 0), _LedgerHandler)
        self.lines: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def url(self, host: str) -> str:
        return f"http://{host}:{self.server_address[1]}/"


class _LedgerHandler(BaseHTTPRequestHandler):
    server: Ledger

    def do_POST(self) -> None:
        line = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.lines.append(line)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a line per attempt on stderr would drown the test's output."""


@pytest.fixture
def ledger(kube: Kube) -> Iterator[tuple[Ledger, str]]:
    host = host_from_pods()
    server = Ledger("0.0.0.0")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, server.url(host)
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------- the chaos


@dataclass
class Chaos:
    """Deletes pods, kills leaders and stops a node as the runs progress."""

    tether: Install
    ns: Kube
    power: NodePower
    plan: Plan
    rng: random.Random
    started: float = field(default_factory=time.monotonic)
    next_delete: float = 0.0
    pod_deletes: int = 0
    leader_kills: list[dict[str, float]] = field(default_factory=list)
    node: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.next_delete = self.started + self.plan.delete_every

    @property
    def pool(self) -> Pool:
        return Pool(self.ns, POOL)

    def tick(self, done: float) -> None:
        """One round: ``done`` is the fraction of all steps finished so far."""
        now = time.monotonic()
        if now >= self.next_delete:
            self.next_delete = now + self.plan.delete_every
            self.delete_a_pod()
        if self.node.get("back_at") and now >= self.node["back_at"]:
            self.power.start(self.node["name"])  # returns once the node is Ready again
            self.node["down"] = time.monotonic() - self.node.pop("back_at") + self.plan.node_down
        node_off = "back_at" in self.node
        if self.plan.node_stop is not None and not self.node and done >= self.plan.node_stop:
            self.stop_a_node()
        kills = self.plan.leader_kills
        killed = len(self.leader_kills)
        if not node_off and killed < len(kills) and done >= kills[killed]:
            self.kill_the_leader()

    def delete_a_pod(self) -> None:
        pods = [
            p["metadata"]["name"] for p in self.pool.pods() if p["status"].get("phase") == "Running"
        ]
        if pods:
            self.pool.kill(self.rng.choice(pods))
            self.pod_deletes += 1

    def kill_the_leader(self) -> None:
        pod = eventually(lambda: leader(self.tether), timeout=120, what="the leader")
        was = holder(self.tether)
        killed = time.monotonic()
        crash(pod)
        await_new_leader(self.tether, was, timeout=180)
        self.leader_kills.append({"new_leader_after": time.monotonic() - killed})

    def stop_a_node(self) -> None:
        """Power off the node running the most of the pool's pods."""
        nodes = Counter(p["spec"].get("nodeName") for p in self.pool.pods() if running_and_ready(p))
        name = nodes.most_common(1)[0][0] if nodes else "worker-b"
        self.power.stop(name)
        self.node = {"name": name, "back_at": time.monotonic() + self.plan.node_down}


# ---------------------------------------------------------------------- the test


@pytest.fixture
def chaos_ns(tether: Install, ledger: tuple[Ledger, str]) -> Kube:
    """The chaos pool, serving the three workflows and posting attempts to the ledger."""
    ns = tether.workloads["chaos"]
    objects = script_pool(POOL, "chaos.py", replicas=PLAN.replicas, slots=8, sessionCapacity=4)
    container = objects[1]["spec"]["template"]["spec"]["containers"][0]
    container["env"].append({"name": "TETHER_CHAOS_LEDGER", "value": ledger[1]})
    ns.apply(*objects, *(workflow(f"chaos-{kind}", POOL) for kind in KINDS))
    Pool(ns, POOL).ready(PLAN.replicas, timeout=180)
    return ns


def run_objects(plan: Plan) -> list[Obj]:
    runs = []
    for i in range(plan.runs):
        kind = KINDS[i % len(KINDS)]
        name = f"{kind}-{i:03d}"
        runs.append(
            {
                "apiVersion": API_VERSION,
                "kind": "WorkflowRun",
                "metadata": {"name": name},
                "spec": {
                    "workflowRef": {"name": f"chaos-{kind}"},
                    "input": {"key": name, "n": plan.steps, "seconds": plan.seconds},
                },
            }
        )
    return runs


def fraction_done(runs: list[Obj], steps: int) -> float:
    """Steps finished over all steps; an ended run counts as all of its steps."""
    done = 0
    for run in runs:
        status = run.get("status") or {}
        if status.get("phase") in ENDED:
            done += steps
        else:
            done += int((status.get("progress") or "0/0").split("/")[0])
    return done / (len(runs) * steps)


def list_runs(ns: Kube) -> list[Obj]:
    return list(json.loads(ns.run("get", "workflowruns", "-o", "json"))["items"])


def completions(ns: str, runs: list[Obj]) -> dict[str, dict[int, int]]:
    """By run name: seq -> attempt of each activity completion its stored history records
    (read with the KUBECONFIG of the environment)."""

    async def read() -> dict[str, dict[int, int]]:
        client = KubeClient(load_config())
        try:
            store = KubernetesRunStore(client, [ns])
            found = {}
            for run in runs:
                name = run["metadata"]["name"]
                run_id = run_id_for(ns, name)
                store.bind(run_id, run["metadata"]["uid"])
                found[name] = {
                    int(e["data"]["seq"]): int(e["data"]["attempt"])
                    for e in await store.load(run_id)
                    if e["type"] == "ActivityCompleted"
                }
            return found
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_chaos_every_run_ends_right_and_nothing_acknowledged_runs_again(
    tether: Install,
    kube: Kube,
    ledger: tuple[Ledger, str],
    chaos_ns: Kube,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ns = chaos_ns
    assert ns.namespace is not None
    seed = int(os.environ.get("TETHER_CHAOS_SEED") or time.time_ns() % 1_000_000)
    chaos = Chaos(tether, ns, NodePower(kube), PLAN, random.Random(seed))
    ns.apply(*run_objects(PLAN))
    deadline = chaos.started + PLAN.deadline
    runs = list_runs(ns)
    while time.monotonic() < deadline:
        try:
            runs = list_runs(ns)
        except KubectlError:
            time.sleep(1)  # the API server is busy while a node goes: try again
            continue
        if len(runs) == PLAN.runs and all(
            (r.get("status") or {}).get("phase") in ENDED for r in runs
        ):
            break
        chaos.tick(fraction_done(runs, PLAN.steps))
        time.sleep(1)
    if chaos.node.get("back_at"):
        chaos.power.start(chaos.node["name"])
    wall = time.monotonic() - chaos.started
    summary = f"seed {seed}; {chaos.pod_deletes} pod deletes, leader kills {chaos.leader_kills}"
    unfinished = [
        r["metadata"]["name"] for r in runs if (r.get("status") or {}).get("phase") not in ENDED
    ]
    assert not unfinished, (
        f"runs not ended after {wall:.0f}s: {unfinished}; {summary}\n"
        + "\n".join(ns.run_post_mortem(r) for r in unfinished[:3])
    )

    outcomes: Counter[str] = Counter()
    wrong = []
    for run in runs:
        name, status = run["metadata"]["name"], run["status"]
        kind = name.split("-")[0]
        expected = [f"{name}:{i}" for i in range(PLAN.steps)]
        error = status.get("error") or {}
        if status["phase"] == "Succeeded" and status.get("result") == expected:
            outcomes[f"{kind} succeeded"] += 1
        elif kind == "hard" and status["phase"] == "Failed" and error["type"] == "SessionBroken":
            outcomes[f"hard broken ({error.get('reason')})"] += 1
        else:
            wrong.append(f"{name}: {status['phase']} {status.get('result')!r} {error}")
    assert not wrong, f"runs that ended wrong: {wrong}; {summary}"

    with ledger[0].lock:
        lines = list(ledger[0].lines)
    attempts: dict[tuple[str, int], list[int]] = defaultdict(list)
    for line in lines:
        attempts[(line["key"], line["seq"])].append(line["attempt"])
    reruns, unseen, completed = [], [], 0
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name, done in completions(ns.namespace, runs).items():
        for seq, attempt in done.items():
            completed += 1
            seen = attempts.get((name, seq), [])
            if attempt not in seen:
                unseen.append(f"{name} seq {seq} attempt {attempt}")
            reruns += [
                f"{name} seq {seq}: attempt {a} after {attempt}" for a in seen if a > attempt
            ]
    assert not unseen, f"completions without an attempt in the ledger: {unseen[:10]}"
    assert not reruns, f"steps that ran again after their completion was recorded: {reruns}"
    assert completed >= outcomes["plain succeeded"] * PLAN.steps
    assert len(chaos.leader_kills) == len(PLAN.leader_kills), summary
    if PLAN.node_stop is not None:
        assert chaos.node.get("down"), f"the node was never stopped; {summary}"

    figures = {
        "plan": PLAN.__dict__,
        "seed": seed,
        "wall_seconds": round(wall, 1),
        "outcomes": dict(sorted(outcomes.items())),
        "activities_completed": completed,
        "attempts": len(lines),
        "retries": len(lines) - len(attempts),
        "steps_never_completed": len(attempts) - completed,
        "pod_deletes": chaos.pod_deletes,
        "leader_kills": chaos.leader_kills,
        "node": chaos.node,
        "reruns_after_completion": len(reruns),
    }
    print(json.dumps(figures))
    if REPORT:
        write_report(Path(REPORT), figures)


def write_report(path: Path, f: dict[str, Any]) -> None:
    plan = f["plan"]
    kills = ", ".join(f"{k['new_leader_after']:.1f} s" for k in f["leader_kills"])
    node = f["node"]
    lines = [
        "# Chaos on the kind cluster",
        "",
        "`make chaos` (tests/e2e/test_chaos_k8s.py, `TETHER_CHAOS=full`): the chart installed "
        "with Helm, WorkflowRuns applied, worker pods deleted, the leading operator SIGKILLed "
        "and a node powered off and on while the runs go. Every attempt of a step is counted "
        "by a ledger the test serves; the history's completions are checked against it.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| runs (plain / SOFT / HARD, rotating) | {plan['runs']} x {plan['steps']} steps of "
        f"{plan['seconds']} s |",
        f"| worker pods (replicas) | {plan['replicas']} |",
        *(f"| {k} | {v} |" for k, v in f["outcomes"].items()),
        f"| activities completed | {f['activities_completed']} |",
        f"| attempts started (ledger) | {f['attempts']} |",
        f"| retries (attempts beyond the first of a step) | {f['retries']} |",
        f"| steps started that never completed (their HARD run broke) | "
        f"{f['steps_never_completed']} |",
        f"| worker pods deleted (one every {plan['delete_every']} s, paused while a new "
        f"leader or the node is awaited) | {f['pod_deletes']} |",
        f"| operator leader SIGKILLs (new leader after) | {len(f['leader_kills'])} ({kills}) |",
        f"| node stopped and started | {node.get('name', '-')}, off {node.get('down', 0):.0f} s |",
        f"| steps run again after their completion was recorded | {f['reruns_after_completion']} |",
        f"| wall time | {f['wall_seconds']} s |",
        f"| seed (`TETHER_CHAOS_SEED`) | {f['seed']} |",
        "",
        "```json",
        json.dumps(f, indent=2),
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
