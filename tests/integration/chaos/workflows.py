"""Workflows for the random-kill test: each activity logs every attempt it starts.

The log (one JSON line per attempt, in `$TETHER_CHAOS_LOG`) lets the test prove that no
attempt of a step started after the step's result was recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.workflow import entrypoint


def _log_attempt(key: str, i: int) -> None:
    info = activity.info()
    line = {"key": key, "seq": info.task_id.split("/")[-2], "i": i, "attempt": info.attempt}
    with open(os.environ["TETHER_CHAOS_LOG"], "a") as log:
        log.write(json.dumps({**line, "worker": info.worker_id, "at": time.time()}) + "\n")


@activity(retry_policy_max_attempts=100, retry_policy_initial_interval=0.05)
async def chaos_step(key: str, i: int) -> str:
    _log_attempt(key, i)
    await asyncio.sleep(random.uniform(0.05, 0.35))
    return f"{key}:{i}"


@workflows.workflow.define(name="chaos-plain")
class ChaosPlain:
    @entrypoint
    async def run(self, key: str, n: int) -> list[str]:
        return [await chaos_step(key, i) for i in range(n)]


@workflows.workflow.define(name="chaos-soft")
class ChaosSoft:
    @entrypoint
    async def run(self, key: str, n: int) -> list[str]:
        async with run_sticky_worker_session(strategy=StickyStrategy.SOFT):
            return [await chaos_step(key, i) for i in range(n)]


@workflows.workflow.define(name="chaos-hard")
class ChaosHard:
    @entrypoint
    async def run(self, key: str, n: int) -> list[str]:
        async with run_sticky_worker_session(strategy=StickyStrategy.HARD):
            return [await chaos_step(key, i) for i in range(n)]
