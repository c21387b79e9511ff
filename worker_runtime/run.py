"""Running a worker process: configuration from the environment, and `run_worker`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

import httpx

from .activities import ActivityDefinition
from .client import DEFAULT_SCHEDULER_URL
from .gc_tuning import tune_gc
from .loader import collect_activities
from .worker import DEFAULT_SHUTDOWN_GRACE, Worker


def env_float(name: str, default: float) -> float:
    """A float setting from the environment (``default`` when unset)."""
    raw = os.environ.get(name)
    try:
        return float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


async def run_worker(
    workflows: Sequence[type[Any]],
    activities: Sequence[ActivityDefinition[..., Any]] | None = None,
    *,
    scheduler_url: str | None = None,
    worker_id: str | None = None,
    slots: int | None = None,
    session_capacity: int | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> None:
    """Register ``workflows`` and ``activities`` with the scheduler and run until cancelled.

    With ``activities=None``, every activity defined in the workflows' modules is
    registered. Unset arguments come from the environment: ``TETHER_SCHEDULER_URL``,
    ``TETHER_WORKER_ID``, ``TETHER_POD_NAME``, ``TETHER_NODE_NAME``, ``TETHER_POOL``,
    ``TETHER_SLOTS``, ``TETHER_SESSION_CAPACITY``, ``TETHER_POD_NAMESPACE``,
    ``TETHER_SHUTDOWN_GRACE`` (seconds running activities get after SIGTERM).
    """
    host = socket.gethostname()
    worker_id = worker_id or os.environ.get("TETHER_WORKER_ID") or f"{host}-{os.getpid()}"
    tune_gc()
    worker = Worker(
        workflows,
        collect_activities(workflows) if activities is None else activities,
        scheduler_url=scheduler_url
        or os.environ.get("TETHER_SCHEDULER_URL")
        or DEFAULT_SCHEDULER_URL,
        worker_id=worker_id,
        pod=os.environ.get("TETHER_POD_NAME") or worker_id,
        node=os.environ.get("TETHER_NODE_NAME") or host,
        pool=os.environ.get("TETHER_POOL", ""),
        slots=slots if slots is not None else env_int("TETHER_SLOTS", 8),
        session_capacity=session_capacity
        if session_capacity is not None
        else env_int("TETHER_SESSION_CAPACITY", 4),
        transport=transport,
        connect_timeout=env_float("TETHER_CONNECT_TIMEOUT", 10.0),
        shutdown_grace=env_float("TETHER_SHUTDOWN_GRACE", DEFAULT_SHUTDOWN_GRACE),
        namespace=os.environ.get("TETHER_POD_NAMESPACE", ""),
    )
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []
    try:
        loop.add_signal_handler(
            signal.SIGTERM, lambda: stopping.append(loop.create_task(worker.stop()))
        )
        handled = True
    except (NotImplementedError, RuntimeError, ValueError):
        handled = False  # not the main thread, or no signal support
    try:
        await worker.run()
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
