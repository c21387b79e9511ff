"""Workflows for the scheduler-restart test: each activity logs every execution.

Each execution appends a `start` line when it begins and an `end` line when it
returns (JSON, in `$TETHER_RESTART_LOG`), so the test counts real executions, not
what the scheduler recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.workflow import entrypoint


def _log(what: str, key: str, i: int) -> None:
    info = activity.info()
    line = {"what": what, "key": key, "i": i, "attempt": info.attempt, "worker": info.worker_id}
    with open(os.environ["TETHER_RESTART_LOG"], "a") as log:
        log.write(json.dumps({**line, "cold": info.cold_start, "at": time.time()}) + "\n")


@activity(retry_policy_max_attempts=20, retry_policy_initial_interval=0.05)
async def restart_step(key: str, i: int) -> str:
    _log("start", key, i)
    await asyncio.sleep(0.15)
    _log("end", key, i)
    return f"{key}:{i}"


@workflows.workflow.define(name="restart-plain")
class RestartPlain:
    @entrypoint
    async def run(self, key: str, n: int) -> list[str]:
        return [await restart_step(key, i) for i in range(n)]


@workflows.workflow.define(name="restart-soft")
class RestartSoft:
    @entrypoint
    async def run(self, key: str, n: int) -> list[str]:
        async with run_sticky_worker_session(strategy=StickyStrategy.SOFT):
            return [await restart_step(key, i) for i in range(n)]
