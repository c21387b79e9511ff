"""Workflows for the chaos test on Kubernetes: every attempt of a step is counted.

Before it does its work, each attempt posts one line to the ledger the test serves
(`TETHER_CHAOS_LEDGER`, an http:// URL): run key, step, the task's seq and attempt,
pod. An attempt that cannot post fails and is retried, so the ledger holds every
attempt that ran; the test compares it with the run's history.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.workflow import entrypoint

LEDGER = os.environ.get("TETHER_CHAOS_LEDGER", "")


def _post(line: dict[str, object]) -> None:
    body = json.dumps(line).encode()
    request = urllib.request.Request(
        LEDGER, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        answer.read()


@activity(retry_policy_max_attempts=100, retry_policy_initial_interval=0.2)
async def chaos_step(key: str, i: int, seconds: float) -> str:
    info = activity.info()
    line = {
        "key": key,
        "i": i,
        "seq": int(info.task_id.split("/")[-2]),
        "attempt": info.attempt,
        "pod": info.pod,
    }
    await asyncio.to_thread(_post, line)
    await asyncio.sleep(seconds)
    return f"{key}:{i}"


async def _steps(key: str, n: int, seconds: float) -> list[str]:
    return [await chaos_step(key, i, seconds) for i in range(n)]


async def _session_steps(strategy: StickyStrategy, key: str, n: int, seconds: float) -> list[str]:
    async with run_sticky_worker_session(strategy=strategy):
        return await _steps(key, n, seconds)


@workflows.workflow.define(name="chaos-plain")
class ChaosPlain:
    @entrypoint
    async def run(self, key: str, n: int, seconds: float) -> list[str]:
        return await _steps(key, n, seconds)


@workflows.workflow.define(name="chaos-soft")
class ChaosSoft:
    @entrypoint
    async def run(self, key: str, n: int, seconds: float) -> list[str]:
        return await _session_steps(StickyStrategy.SOFT, key, n, seconds)


@workflows.workflow.define(name="chaos-hard")
class ChaosHard:
    @entrypoint
    async def run(self, key: str, n: int, seconds: float) -> list[str]:
        return await _session_steps(StickyStrategy.HARD, key, n, seconds)
