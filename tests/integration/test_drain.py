"""A worker that gets SIGTERM drains: real processes on loopback (the scheduler, and two
workers serving examples/sticky_soft_hard.py).

SIGTERM mid-activity: the worker tells the scheduler it is draining (its SOFT session
breaks at once), finishes the running step there, reports it and exits 0; the step ran
once, and the session's next step runs on the other worker with `cold_start=True`.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from worker_runtime.client import SchedulerClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sticky_soft_hard.py"
WORKERS = ("drain-a", "drain-b")
HOLD_SECONDS = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
    import os

    with log.open("ab") as out:
        return subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, subprocess.Popen[bytes]]]]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    scheduler = _spawn(
        [sys.executable, "-m", "tether_operator.scheduler", "--port", str(port)],
        tmp_path / "scheduler.log",
    )
    workers = {
        wid: _spawn(
            [sys.executable, "-m", "worker_runtime", str(EXAMPLE)],
            tmp_path / f"{wid}.log",
            TETHER_SCHEDULER_URL=url,
            TETHER_WORKER_ID=wid,
            TETHER_NODE_NAME="node-a",
            TETHER_SHUTDOWN_GRACE="20",
            TETHER_LOG_LEVEL="WARNING",
        )
        for wid in WORKERS
    }
    try:
        async with SchedulerClient(url) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    alive = {w.worker_id for w in (await client.list_workers()).workers}
                except Exception:
                    alive = set()
                if alive >= set(WORKERS):
                    break
                assert time.monotonic() < deadline, "workers did not register in 30 s"
                await asyncio.sleep(0.1)
        yield url, workers
    finally:
        for proc in workers.values():
            proc.kill()
            proc.wait()
        scheduler.send_signal(signal.SIGTERM)
        try:
            scheduler.wait(10)
        except subprocess.TimeoutExpired:
            scheduler.kill()
            scheduler.wait()


async def test_sigterm_mid_activity_finishes_it_there_and_moves_the_session(
    cluster: tuple[str, dict[str, subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    url, workers = cluster
    async with SchedulerClient(url) as client:
        await client.start_run(
            "sticky-soft-hard",
            {"strategies": ["SOFT"], "steps": 3, "hold_at": 1, "hold_seconds": HOLD_SECONDS},
            run_id="drain-soft",
        )
        deadline = time.monotonic() + 30
        while True:
            view = await client.get_run("drain-soft")
            running = [a for a in view.activities if a.state == "Running" and a.seq == 3]
            if running:
                break
            assert time.monotonic() < deadline, f"step 1 never ran: {view}"
            await asyncio.sleep(0.05)
        holder = running[0].worker
        assert holder is not None
        workers[holder].send_signal(signal.SIGTERM)

        deadline = time.monotonic() + 5
        while True:  # broken at once, while the step still runs there
            view = await client.get_run("drain-soft")
            session = view.sessions[0]
            if session.state == "Broken":
                break
            assert time.monotonic() < deadline, f"the session did not break: {session}"
            await asyncio.sleep(0.05)
        assert session.reason == "ProcessExited"
        assert [a.state for a in view.activities if a.seq == 3] == ["Running"]

        done = await client.wait_run("drain-soft", 30)
    assert done.phase == "Succeeded", done.error
    assert workers[holder].wait(10) == 0, "the drained worker exits 0"
    steps = done.result["SOFT"]
    assert (steps[1]["pod"], steps[1]["attempt"]) == (holder, 1), "it finished there, once"
    assert steps[2]["pod"] != holder
    assert steps[2]["cold_start"] is True
    assert [a.attempt for a in done.activities] == [1, 1, 1], "nothing ran twice"
    log = (tmp_path / f"{holder}.log").read_text()
    assert log.count("step 1 of drain-soft") == 1, log
