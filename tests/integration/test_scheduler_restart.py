"""The scheduler SIGKILLed during runs: every run finishes and no activity whose completion
was acknowledged runs again.

Real processes on loopback: the scheduler over the SQLite history tier
(`restart/scheduler.py`, standing in for the operator's store) and two workers
(`python -m worker_runtime`). While a plain run and a SOFT-session run of 30
activities each are in flight, the scheduler is SIGKILLed three times and started
again on the same port; it recovers the runs from the store, the workers ride out
the outage, register again and re-send what was not acknowledged. Each activity
logs its executions to a file, so the test counts what really ran.
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
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from worker_runtime.client import SchedulerClient

from .waiting import until

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = Path(__file__).parent / "restart" / "workflows.py"
WORKERS = ("restart-1", "restart-2")
RUNS = [("restart-plain", "plain", 30), ("restart-soft", "soft", 30)]
KILLS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


@dataclass
class Cluster:
    port: int
    tmp: Path
    scheduler: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: list[float] = field(default_factory=list)
    """Seconds the scheduler was down for, per kill."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.tmp / "executions.jsonl"

    def start_scheduler(self) -> None:
        argv = [sys.executable, "-m", "tests.integration.restart.scheduler"]
        argv += ["--port", str(self.port), "--store", str(self.tmp / "store")]
        self.scheduler = _spawn(argv, self.tmp / "scheduler.log", dict(os.environ))

    def kill_scheduler(self) -> None:
        assert self.scheduler is not None
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def start_worker(self, wid: str) -> None:
        env = dict(
            os.environ,
            TETHER_SCHEDULER_URL=self.url,
            TETHER_WORKER_ID=wid,
            TETHER_RESTART_LOG=str(self.log),
            TETHER_LOG_LEVEL="WARNING",
        )
        argv = [sys.executable, "-m", "worker_runtime", str(WORKFLOWS)]
        self.workers.append(_spawn(argv, self.tmp / f"{wid}.log", env))

    def executions(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def ended(self) -> int:
        return sum(e["what"] == "end" for e in self.executions())


async def _healthy(client: SchedulerClient, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            await client.list_runs()
            return
        except Exception:
            assert time.monotonic() < deadline, f"the scheduler did not come up in {within}s"
            await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(_free_port(), tmp_path)
    c.log.touch()
    c.start_scheduler()
    try:
        async with SchedulerClient(c.url) as client:
            await _healthy(client)
            for wid in WORKERS:
                c.start_worker(wid)
            deadline = time.monotonic() + 30
            while len([w for w in (await client.list_workers()).workers if w.alive]) < 2:
                assert time.monotonic() < deadline, "workers did not register in 30 s"
                await asyncio.sleep(0.1)
        yield c
    finally:
        for proc in c.workers:
            proc.kill()
            proc.wait()
        if c.scheduler is not None and c.scheduler.poll() is None:
            c.scheduler.kill()
            c.scheduler.wait()


async def test_sigkilled_scheduler_loses_nothing_and_runs_nothing_twice(cluster: Cluster) -> None:
    rng = random.Random(int(os.environ.get("TETHER_CHAOS_SEED") or time.time_ns() % 1_000_000))
    async with SchedulerClient(cluster.url) as client:
        for workflow, key, n in RUNS:
            await client.start_run(workflow, {"key": key, "n": n}, run_id=key)
        target = 0
        for _ in range(KILLS):
            # Let some activities finish between kills, then kill at a random moment.
            target += rng.randint(4, 7)
            await until(lambda n=target: cluster.ended() >= n, 60.0, f"{target} executions to end")
            await asyncio.sleep(rng.uniform(0.0, 0.15))
            began = time.monotonic()
            cluster.kill_scheduler()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            cluster.start_scheduler()
            await _healthy(client)
            cluster.kills.append(round(time.monotonic() - began, 2))
        views = [await client.wait_run(key, 90.0) for _, key, _ in RUNS]

    summary = f"kills (s down): {cluster.kills}"
    for view, (_, key, n) in zip(views, RUNS, strict=True):
        assert view.phase == "Succeeded", f"{key}: {view.phase} {view.error}; {summary}"
        assert view.result == [f"{key}:{i}" for i in range(n)]
    assert len(cluster.kills) == KILLS

    # What really ran. The step in flight at a kill may run again: it was dispatched
    # before its start was written (one commit per step), and its completion was never
    # acknowledged. A step whose completion was acknowledged never runs again: the run
    # went on to the next step only after that, so no step starts after its successor.
    executions = cluster.executions()
    starts = Counter((e["key"], e["i"]) for e in executions if e["what"] == "start")
    assert len(starts) == sum(n for _, _, n in RUNS)
    for _, key, n in RUNS:
        again = [i for i in range(n) if starts[(key, i)] > 1]
        assert len(again) <= KILLS, f"{key}: steps run again {again}; {summary}"
        order = [e["i"] for e in executions if e["what"] == "start" and e["key"] == key]
        for i in again:
            last = max(at for at, step in enumerate(order) if step == i)
            assert i + 1 not in order[:last], f"{key}: step {i} ran after step {i + 1} began"

    # The SOFT session kept its worker through every restart (its model stayed loaded).
    soft = views[1]
    (session,) = soft.sessions
    assert session.breaks == [], f"the SOFT session broke: {session.breaks}; {summary}"
    soft_workers = {e["worker"] for e in executions if e["key"] == "soft"}
    assert len(soft_workers) == 1, soft_workers
    cold = [e["i"] for e in executions if e["key"] == "soft" and e["cold"] and e["what"] == "end"]
    assert cold == [0], f"cold starts at steps {cold}"
