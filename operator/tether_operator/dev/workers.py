"""Local worker processes for dev mode: how to start one, stream its output, stop it.

Each worker is `python -m worker_runtime FILE` with its identity in the environment.
A worker keeps its id across restarts (like a container restarting inside the same
pod), which is what lets a HARD session wait for "the same worker".
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DEV_NODES = ("dev-node-a", "dev-node-b")
"""Pretend nodes: workers alternate between them so node-local rebinds are visible."""

STOP_GRACE_SECONDS = 5.0
"""How long a worker gets between SIGTERM and SIGKILL."""

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSpec:
    """Everything needed to (re)start one dev worker process."""

    worker_id: str
    node: str
    file: Path
    scheduler_url: str
    slots: int
    session_capacity: int
    log_format: str = "text"

    def argv(self) -> list[str]:
        """The command line: this interpreter running the SDK's worker entry point."""
        return [sys.executable, "-m", "worker_runtime", str(self.file)]

    def env(self) -> dict[str, str]:
        """The process environment: ours plus the worker's identity and limits."""
        env = dict(os.environ)
        env.update(
            TETHER_SCHEDULER_URL=self.scheduler_url,
            TETHER_WORKER_ID=self.worker_id,
            TETHER_POD_NAME=self.worker_id,
            TETHER_NODE_NAME=self.node,
            TETHER_SLOTS=str(self.slots),
            TETHER_SESSION_CAPACITY=str(self.session_capacity),
            TETHER_LOG_FORMAT=self.log_format,
            PYTHONUNBUFFERED="1",
        )
        # The workflow file's folder is importable, as when running `python FILE`.
        paths = [str(self.file.parent), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        return env


def worker_specs(
    file: Path,
    count: int,
    scheduler_url: str,
    slots: int,
    session_capacity: int,
    log_format: str = "text",
) -> list[WorkerSpec]:
    """`dev-worker-1..N`, alternating between `dev-node-a` and `dev-node-b`."""
    return [
        WorkerSpec(
            worker_id=f"dev-worker-{index}",
            node=DEV_NODES[(index - 1) % len(DEV_NODES)],
            file=file,
            scheduler_url=scheduler_url,
            slots=slots,
            session_capacity=session_capacity,
            log_format=log_format,
        )
        for index in range(1, count + 1)
    ]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (Linux only)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


async def spawn(spec: WorkerSpec) -> asyncio.subprocess.Process:
    """Start the worker in its own process group (Ctrl-C reaches only the supervisor)."""
    return await asyncio.create_subprocess_exec(
        *spec.argv(),
        env=spec.env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        process_group=0,
        preexec_fn=_die_with_parent,
    )


async def pump_lines(stream: asyncio.StreamReader | None, emit: Callable[[str], None]) -> None:
    """Forward each line of a child's output to `emit` until the stream closes."""
    if stream is None:
        return
    while True:
        try:
            line = await stream.readline()
        except ValueError:  # a line longer than the stream limit: pass it on in pieces
            line = await stream.read(64 * 1024)
        if not line:
            return
        emit(line.decode("utf-8", "replace").rstrip("\r\n"))


def _signal_group(process: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def kill_now(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the worker's process group at once (a second Ctrl-C)."""
    if process.returncode is None:
        _signal_group(process, signal.SIGKILL)


async def stop(process: asyncio.subprocess.Process, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the worker's process group, then SIGKILL it after `grace` seconds."""
    if process.returncode is not None:
        _signal_group(process, signal.SIGKILL)  # leftovers of an exited worker, if any
        return
    _signal_group(process, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        _signal_group(process, signal.SIGKILL)
        await process.wait()
    _signal_group(process, signal.SIGKILL)


def describe_exit(code: int) -> str:
    """`exit code 3` or `killed by SIGKILL` for an exit status from `Process.wait()`."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
