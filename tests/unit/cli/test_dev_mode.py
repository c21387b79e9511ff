"""`tether dev` end to end: a real scheduler, real worker processes, a real crash."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tether_operator.cli.client import CliError, SchedulerClient
from worker_runtime.protocol import RunView, WorkerView

pytestmark = pytest.mark.slow

WORKFLOW_FILE = """
import asyncio

import worker_runtime as workflows
from worker_runtime import activity, run_sticky_worker_session


@workflows.activity(sticky_to_worker=True)
async def step(i: int, delay: float) -> dict:
    await asyncio.sleep(delay)
    return {"i": i, "worker": activity.info().worker_id}


@workflows.workflow.define(name="steps")
class Steps:
    @workflows.workflow.entrypoint
    async def execute(self, n: int, delay: float = 0.0) -> list:
        async with run_sticky_worker_session():
            return [await step(i, delay) for i in range(n)]
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _until(check: Callable[[], bool], timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class DevMode:
    """A running `tether dev` subprocess and a client for its scheduler."""

    process: subprocess.Popen[bytes]
    log: Path
    client: SchedulerClient
    url: str
    metrics_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def worker_pids(self) -> dict[str, int]:
        """Worker pids, first from the header, then from every `restarted (pid N` line."""
        pids = {
            m[1]: int(m[2])
            for m in re.finditer(r"(dev-worker-\d+)\s+(\d+)\s+dev-node", self.output())
        }
        for m in re.finditer(r"(dev-worker-\d+) restarted \(pid (\d+)", self.output()):
            pids[m[1]] = int(m[2])
        return pids

    def workers(self) -> dict[str, WorkerView]:
        try:
            return {w.worker_id: w for w in self.client.list_workers().workers}
        except CliError:
            return {}

    def tether(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether_operator.cli", "--server", self.url, *argv],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevMode]:
    with dev_mode(tmp_path, WORKFLOW_FILE) as mode:
        yield mode


@contextlib.contextmanager
def dev_mode(tmp_path: Path, source: str) -> Iterator[DevMode]:
    """`tether dev` serving `source` with two workers; stopped (and checked to stop
    cleanly) at the end."""
    flows = tmp_path / "flows.py"
    flows.write_text(source)
    port, metrics_port = _free_port(), _free_port()
    log = tmp_path / "dev.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tether_operator.cli",
                "dev",
                str(flows),
                "--workers",
                "2",
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    mode = DevMode(process, log, SchedulerClient(url, timeout=5), url, metrics_url)
    try:
        _until(
            lambda: (
                sum(w.alive for w in mode.workers().values()) == 2 or process.poll() is not None
            ),
            30,
            "two registered workers",
        )
        assert process.poll() is None, mode.output()
        yield mode
    finally:
        pids = mode.worker_pids()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        finally:
            mode.client.close()
        assert code == 0, mode.output()
        assert "workers and scheduler stopped" in mode.output()
        _until(lambda: not any(_alive(pid) for pid in pids.values()), 5, "workers to exit")


def test_run_wait_prints_the_result_as_json(dev: DevMode) -> None:
    done = dev.tether(
        "run", "steps", "--input", '{"n": 3}', "--wait", "-o", "json", "--timeout", "60"
    )
    assert done.returncode == 0, done.stderr + dev.output()
    run = RunView.model_validate(json.loads(done.stdout))
    assert run.phase == "Succeeded"
    assert [item["i"] for item in run.result] == [0, 1, 2]
    assert len({item["worker"] for item in run.result}) == 1  # one sticky worker

    listed = dev.tether("get", "runs")
    assert listed.returncode == 0
    assert run.run_id in listed.stdout
    assert "Succeeded" in listed.stdout

    # Dev mode serves the operator's metric families on --metrics-port.
    scraped = httpx.get(dev.metrics_url, timeout=5).text
    assert 'tether_runs_finished_total{phase="Succeeded",workflow="steps"} 1.0' in scraped
    times = 'tether_activity_start_to_close_seconds_count{activity="step",workflow="steps"} 3.0'
    assert times in scraped
    assert 'tether_workers{pool="",state="ready"} 2.0' in scraped


def test_a_killed_worker_is_reported_lost_and_restarted(dev: DevMode) -> None:
    pids = dev.worker_pids()
    assert set(pids) == {"dev-worker-1", "dev-worker-2"}
    os.kill(pids["dev-worker-2"], signal.SIGKILL)
    _until(
        lambda: dev.workers()["dev-worker-2"].lost_reason == "ProcessExited",
        1.0,
        "the scheduler to mark dev-worker-2 lost",
        step=0.02,
    )
    _until(lambda: "WorkerRestarted" in dev.output(), 5, "dev mode to restart dev-worker-2")
    _until(lambda: dev.workers()["dev-worker-2"].alive, 15, "dev-worker-2 to register again")
    assert dev.worker_pids()["dev-worker-2"] != pids["dev-worker-2"]
    lost = [line for line in dev.output().splitlines() if "dev-worker-2 lost" in line]
    assert len(lost) == 1, dev.output()  # one line per lost worker
    assert re.search(
        r"WorkerLost +worker dev-worker-2 lost: ProcessExited "
        rf"\(pid {pids['dev-worker-2']} killed by SIGKILL\); restarting in 1s$",
        lost[0],
    ), lost[0]


def test_a_sticky_session_survives_its_worker_crashing(dev: DevMode) -> None:
    started = dev.tether("run", "steps", "--id", "crash", "--input", '{"n": 8, "delay": 0.4}')
    assert started.returncode == 0, started.stderr

    def session_worker() -> str | None:
        run = dev.client.get_run("crash")
        done = sum(a.state == "Completed" for a in run.activities)
        bound = [s.worker for s in run.sessions if s.state == "Open" and s.worker]
        return bound[-1] if done >= 1 and bound else None

    _until(lambda: session_worker() is not None, 20, "the session to bind and make progress")
    victim = session_worker()
    assert victim is not None
    os.kill(dev.worker_pids()[victim], signal.SIGKILL)

    waited = dev.tether("wait", "run", "crash", "--timeout", "60", "-o", "json")
    assert waited.returncode == 0, waited.stdout + waited.stderr + dev.output()
    run = RunView.model_validate(json.loads(waited.stdout))
    assert [item["i"] for item in run.result] == list(range(8))
    rebound = [s for s in run.sessions if len(s.workers) >= 2 or s.state == "Broken"]
    assert rebound, run.sessions
    lines = dev.output().splitlines()
    lost = [line for line in lines if f"{victim} lost" in line]
    assert len(lost) == 1, dev.output()  # one line, not one per session or attempt
    assert "sessions broken: crash/s1" in lost[0]
    rebound_lines = [i for i, line in enumerate(lines) if "SessionRebound" in line]
    assert rebound_lines, dev.output()
    assert lines.index(lost[0]) < rebound_lines[0]  # the cause is printed before its effects
    assert not [line for line in lines if "SessionBroken" in line]
