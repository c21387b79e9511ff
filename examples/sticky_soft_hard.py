"""SOFT vs HARD sticky sessions (the seeds' scenario): every step of a session runs on one
worker pod, which keeps a warm per-session cache. When that pod goes away, a SOFT session
moves to another pod (same node preferred) and its first step there sees
``cold_start=True``; a HARD session waits for the same pod (a container restart keeps it)
until scheduleTimeout, and fails with SessionBroken if the pod is deleted.

tether dev examples/sticky_soft_hard.py --workers 2
tether run sticky-soft-hard --input '{"strategies": ["SOFT", "HARD"], "steps": 3}' --wait

``hold_at``/``hold_seconds`` keep one step running for a while, long enough to delete its
pod (``kubectl delete pod``) or restart its container
(``kubectl exec POD -- python -m worker_runtime --signal TERM``) and watch the session in
``kubectl get wfr NAME -o yaml`` (status.sessions).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import worker_runtime as workflows
from worker_runtime import StickyStrategy, activity, run_sticky_worker_session

log = logging.getLogger("examples.sticky_soft_hard")

_WARM: dict[str, int] = {}
"""Per worker process: the sessions whose cache is warm here, and how many steps used it."""


@workflows.activity(retry_policy_max_attempts=3)
async def step(i: int, hold_seconds: float = 0.0) -> dict[str, Any]:
    """One step of the session: warms the session's cache on first use in this process."""
    info = activity.info()
    key = info.session or "no-session"
    warm = key in _WARM
    _WARM[key] = _WARM.get(key, 0) + 1
    # One line per execution, so `kubectl logs` shows that a step ran once.
    log.warning(
        "step %d of %s on pod %s: attempt %d, cold_start=%s, warm=%s",
        i,
        info.run_id,
        info.pod,
        info.attempt,
        info.cold_start,
        warm,
    )
    if hold_seconds > 0:
        await asyncio.sleep(hold_seconds)
    return {
        "i": i,
        "pod": info.pod,
        "node": info.node,
        "attempt": info.attempt,
        "cold_start": info.cold_start,
        "warm": warm,
    }


@workflows.workflow.define(name="sticky-soft-hard")
class StickySoftHard:
    @workflows.workflow.entrypoint
    async def execute(
        self,
        strategies: list[str] | None = None,
        steps: int = 3,
        hold_at: int = -1,
        hold_seconds: float = 0.0,
    ) -> dict[str, list[dict[str, Any]]]:
        """Run `steps` steps in one session per strategy ("SOFT", "HARD"), in order."""
        out: dict[str, list[dict[str, Any]]] = {}
        for strategy in strategies or ["SOFT", "HARD"]:
            async with run_sticky_worker_session(strategy=StickyStrategy(strategy)):
                out[strategy] = [
                    await step(i, hold_seconds if i == hold_at else 0.0) for i in range(steps)
                ]
        return out


async def main() -> None:
    from worker_runtime.testing import WorkflowEnvironment

    async with WorkflowEnvironment(workflows=[StickySoftHard], workers=2) as env:
        print(await env.execute(StickySoftHard, {"strategies": ["SOFT", "HARD"], "steps": 3}))


if __name__ == "__main__":
    asyncio.run(main())
