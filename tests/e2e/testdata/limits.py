"""Activities that report when they held a slot, for the one-pod limits test: `limits-plain`
runs one, `limits-sticky` two in a SOFT session. Each returns [start, end] (host clock:
kind's pods share this machine's clock)."""

from __future__ import annotations

import asyncio
import time

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session
from worker_runtime.workflow import entrypoint


@activity
async def hold(seconds: float) -> list[float]:
    start = time.time()
    await asyncio.sleep(seconds)
    return [start, time.time()]


@workflows.workflow.define(name="limits-plain")
class LimitsPlain:
    @entrypoint
    async def run(self, seconds: float) -> list[list[float]]:
        return [await hold(seconds)]


@workflows.workflow.define(name="limits-sticky")
class LimitsSticky:
    @entrypoint
    async def run(self, seconds: float) -> list[list[float]]:
        async with run_sticky_worker_session(strategy=StickyStrategy.SOFT):
            return [await hold(seconds), await hold(seconds)]
