import asyncio

from tether_operator.scheduler.mailboxes import Mailbox


def test_take_drains_up_to_the_limit_in_order() -> None:
    box = Mailbox()
    for i in range(5):
        box.put({"kind": "cancel", "task_id": str(i)})
    assert [m["task_id"] for m in box.take(2)] == ["0", "1"]
    assert [m["task_id"] for m in box.take(10)] == ["2", "3", "4"]
    assert box.take(10) == []


async def test_wait_returns_when_a_message_arrives() -> None:
    box = Mailbox()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, box.put, {"kind": "cancel"})
    started = loop.time()
    await box.wait(5.0)
    assert loop.time() - started < 1.0
    assert len(box) == 1


async def test_wait_times_out_and_cleans_up() -> None:
    box = Mailbox()
    await box.wait(0.01)
    assert len(box) == 0
    assert not box._waiters


async def test_wake_releases_every_waiter() -> None:
    box = Mailbox()
    waiters = [asyncio.ensure_future(box.wait(5.0)) for _ in range(3)]
    await asyncio.sleep(0)
    box.wake()
    await asyncio.wait_for(asyncio.gather(*waiters), 1.0)


def test_voiding_tasks_keeps_the_cancels() -> None:
    box = Mailbox()
    for kind, tid in [("activity", "a"), ("cancel", "b"), ("workflow", "c"), ("cancel", "d")]:
        box.put({"kind": kind, "task_id": tid})
    box.void_tasks()
    assert [m["task_id"] for m in box.take(10)] == ["b", "d"]
