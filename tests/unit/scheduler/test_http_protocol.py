"""The coalescing transport joins the writes of one loop iteration into one send."""

from __future__ import annotations

import asyncio
from typing import Any

from tether_operator.scheduler.http_protocol import _CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else None


async def test_head_and_body_written_in_one_iteration_become_one_send() -> None:
    real = RecordingTransport()
    proxy = _CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    proxy.write(b"{}")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    proxy.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[-1] == b"next"


async def test_close_flushes_pending_writes_and_other_calls_pass_through() -> None:
    real = RecordingTransport()
    proxy = _CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"last words")
    proxy.close()
    assert real.writes == [b"last words"]
    assert real.closed
    assert proxy.get_extra_info("peername") == ("127.0.0.1", 1)
    await asyncio.sleep(0)
    assert real.writes == [b"last words"]  # the scheduled flush finds nothing more
