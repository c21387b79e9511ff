"""A real worker and client against a real uvicorn server, over the production transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from tether_operator.scheduler import SchedulerService, serve
from worker_runtime import Worker, activity, workflow
from worker_runtime.client import SchedulerClient


@activity()
async def double(x: int) -> int:
    return 2 * x


@activity()
def shout(text: str) -> str:
    return text.upper()


@workflow.define(name="over-http")
class OverHttp:
    @workflow.entrypoint
    async def run(self, x: int) -> list[object]:
        return [await double(x), await shout("hi")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_run_over_a_real_socket_with_the_default_transport() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    service = SchedulerService(scheduler_url=url)
    ready = asyncio.Event()
    server = asyncio.create_task(serve("127.0.0.1", port, service, ready))
    worker = Worker([OverHttp], [double, shout], scheduler_url=url, worker_id="w-http")
    runner: asyncio.Task[None] | None = None
    try:
        await asyncio.wait_for(ready.wait(), 10)
        runner = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.wait_ready(), 5)
        async with SchedulerClient(url) as client:
            assert await client.execute("over-http", 21, wait=10) == [42, "HI"]
            (view,) = (await client.list_workers()).workers
            assert (view.worker_id, view.alive) == ("w-http", True)
    finally:
        if runner is not None:
            await asyncio.wait_for(worker.stop(), 10)
            await runner
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
