"""The deadline timer: on time it fires; after a stall it lets pending work run first."""

from __future__ import annotations

import asyncio

from tether_operator.scheduler.timers import STALL_DEFER_SECONDS, DeadlineTimer


async def test_fires_at_the_deadline() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    timer = DeadlineTimer(lambda: fired.append(loop.time()), loop.time)
    timer.start(loop)
    armed = loop.time() + 0.05
    timer.arm(armed)
    await asyncio.sleep(0.2)
    assert len(fired) == 1
    assert fired[0] >= armed
    assert timer.armed_at is None


async def test_a_stalled_loop_serves_pending_work_before_the_deadlines() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []
    timer = DeadlineTimer(lambda: order.append("deadline"), loop.time)
    timer.start(loop)
    timer.arm(loop.time() + 0.01)

    async def heartbeat() -> None:  # a request that arrived during the stall
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        order.append("heartbeat")

    loop.call_soon(lambda: __import__("time").sleep(0.4))  # the stall
    await asyncio.sleep(0.005)
    pending = loop.create_task(heartbeat())
    await asyncio.sleep(0.4 + STALL_DEFER_SECONDS + 0.1)
    assert order == ["heartbeat", "deadline"]
    assert pending.done()


async def test_it_defers_once_per_stall_then_fires() -> None:
    loop = asyncio.get_running_loop()
    fired: list[float] = []
    clock = [0.0]
    timer = DeadlineTimer(lambda: fired.append(clock[0]), lambda: clock[0])
    timer.start(loop)
    timer.arm(0.0)
    clock[0] = 5.0  # the loop was away for seconds: the timer fires 5 s late
    await asyncio.sleep(0.01)
    assert fired == []
    assert timer.armed_at == 5.0 + STALL_DEFER_SECONDS
    clock[0] = 6.0  # late again (the clock jumped): it fires this time
    await asyncio.sleep(STALL_DEFER_SECONDS + 0.05)
    assert fired == [6.0]
