"""Workers SIGKILLed at random moments, restarted fast or slow: every run still ends right.

Real processes on loopback: the scheduler (`python -m tether_operator.scheduler`) and
three workers (`python -m worker_runtime`). A chaos loop kills the worker holding a
workflow task, one running an activity, or any worker (so kills land during polls,
activities, reports and workflow code), and starts a process with the same worker id
again after 0-0.1 s or 1-2.5 s, without telling the scheduler, as a container restart
would, until every run has ended. Plain, SOFT and HARD runs must all succeed with the
right result, and no step may start again once its result is recorded.
`TETHER_CHAOS_SEED` replays a failure; `TETHER_CHAOS_REPORT` names a file that gets one
JSON line per test run (seed, kills, attempts).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker_runtime.client import SchedulerClient
from worker_runtime.protocol import RunView

pytestmark = pytest.mark.slow

WORKFLOWS = Path(__file__).parent / "chaos" / "workflows.py"
WORKERS = ("chaos-1", "chaos-2", "chaos-3")
RUNS = [("chaos-plain", 30)] * 3 + [("chaos-soft", 24)] * 2 + [("chaos-hard", 24)] * 2
"""Each run takes ~5 s undisturbed, so every one of them lives through several kills."""
CHAOS_SECONDS = 40.0
"""The chaos stops when every run has ended, or after this long."""
MIN_KILLS = 6


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """The scheduler and worker processes, and how to kill and restart them."""

    url: str
    tmp: Path
    log: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kills: list[str] = field(default_factory=list)

    def start_worker(self, wid: str) -> None:
        env = dict(
            os.environ,
            TETHER_SCHEDULER_URL=self.url,
            TETHER_WORKER_ID=wid,
            TETHER_NODE_NAME=f"node-{int(wid[-1]) % 2}",
            TETHER_CHAOS_LOG=str(self.log),
            TETHER_LOG_LEVEL="ERROR",
        )
        self.procs[wid] = _spawn(
            [sys.executable, "-m", "worker_runtime", str(WORKFLOWS)], self.tmp / f"{wid}.log", env
        )

    def kill(self, wid: str, why: str) -> None:
        proc = self.procs.get(wid)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.kills.append(f"{wid} ({why})")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    scheduler = _spawn(
        [sys.executable, "-m", "tether_operator.scheduler", "--port", str(port)],
        tmp_path / "scheduler.log",
    )
    c = Cluster(url, tmp_path, tmp_path / "attempts.jsonl")
    c.log.touch()
    try:
        for wid in WORKERS:
            c.start_worker(wid)
        async with SchedulerClient(url) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    alive = {w.worker_id for w in (await client.list_workers()).workers if w.alive}
                except Exception:
                    alive = set()
                if alive >= set(WORKERS):
                    break
                assert time.monotonic() < deadline, "workers did not register in 30 s"
                await asyncio.sleep(0.1)
        yield c
    finally:
        for proc in c.procs.values():
            proc.kill()
            proc.wait()
        scheduler.send_signal(signal.SIGTERM)
        try:
            scheduler.wait(10)
        except subprocess.TimeoutExpired:
            scheduler.kill()
            scheduler.wait()


async def _chaos(c: Cluster, client: SchedulerClient, rng: random.Random, until: float) -> None:
    restarts: set[asyncio.Task[None]] = set()

    async def restart(wid: str, delay: float) -> None:
        await asyncio.sleep(delay)
        c.start_worker(wid)

    while time.monotonic() < until:
        await asyncio.sleep(rng.uniform(0.3, 0.9))
        views = (await client.list_runs()).runs
        if all(v.phase in ("Succeeded", "Failed", "Cancelled") for v in views):
            break
        runs = [v for v in views if v.phase == "Running"]
        holding_workflows = sorted({v.worker for v in runs if v.worker})
        running_activities = sorted(
            {a.worker for v in runs for a in v.activities if a.state == "Running" and a.worker}
        )
        choice = rng.random()
        if choice < 0.35 and holding_workflows:
            wid, why = rng.choice(holding_workflows), "holds a workflow task"
        elif choice < 0.7 and running_activities:
            wid, why = rng.choice(running_activities), "runs an activity"
        else:
            wid, why = rng.choice(WORKERS), "at random"
        if wid not in c.procs or c.procs[wid].poll() is not None:
            continue  # already down, its restart is on the way
        fast = rng.random() < 0.5
        c.kill(wid, f"{why}, {'fast' if fast else 'slow'} restart")
        task = asyncio.ensure_future(
            restart(wid, rng.uniform(0, 0.1) if fast else rng.uniform(1.0, 2.5))
        )
        restarts.add(task)
        task.add_done_callback(restarts.discard)
    await asyncio.gather(*restarts)


def _started_after_completion(log: Path, views: list[RunView]) -> list[str]:
    """Steps with an attempt started after the attempt whose result was recorded."""
    completed = {
        (v.input["key"], a.seq): a.attempt
        for v in views
        for a in v.activities
        if a.state == "Completed"
    }
    late = []
    for line in log.read_text().splitlines():
        rec = json.loads(line)
        done = completed.get((rec["key"], int(rec["seq"])))
        if done is not None and rec["attempt"] > done:
            late.append(f"{rec['key']} step {rec['i']} attempt {rec['attempt']} after {done}")
    return late


async def test_every_run_survives_random_sigkills(cluster: Cluster) -> None:
    seed = int(os.environ.get("TETHER_CHAOS_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    async with SchedulerClient(cluster.url) as client:
        keys = []
        for i, (workflow, n) in enumerate(RUNS):
            key = f"{workflow}-{i}"
            await client.start_run(workflow, {"key": key, "n": n}, run_id=key)
            keys.append((key, n))
        await _chaos(cluster, client, rng, time.monotonic() + CHAOS_SECONDS)
        views = [await client.wait_run(key, 90.0) for key, _ in keys]
    summary = f"seed {seed}; kills: {cluster.kills}"
    stuck = {v.run_id: (v.phase, v.error) for v in views if v.phase != "Succeeded"}
    assert not stuck, f"runs that did not succeed: {stuck}; {summary}"
    for view, (key, n) in zip(views, keys, strict=True):
        assert view.result == [f"{key}:{i}" for i in range(n)], summary
    assert _started_after_completion(cluster.log, views) == [], summary
    assert len(cluster.kills) >= MIN_KILLS, summary
    _report(seed, cluster, sum(n for _, n in keys))


def _report(seed: int, c: Cluster, steps: int) -> None:
    path = os.environ.get("TETHER_CHAOS_REPORT")
    if path:
        attempts = len(c.log.read_text().splitlines())
        line = {"seed": seed, "kills": c.kills, "attempts": attempts, "steps": steps}
        with open(path, "a") as out:
            out.write(json.dumps(line) + "\n")
