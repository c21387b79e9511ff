"""uvicorn's httptools protocol with one send per response instead of two.

uvicorn writes a response's head and body with separate `transport.write` calls, so
every response costs two loopback sends and wakes the worker twice; on two cores a
task round trip crosses three processes and those wake-ups dominated its latency.
Writes made during one event-loop iteration are joined and sent together at the end
of the iteration instead (measured in bench/: see README's Benchmarks).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """Delegates to a real transport; `write` is buffered until the loop turns."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


CONNECTED = "tether.connected"
"""The scope extension holding a no-argument check: is the request's client still
connected? (A look at the transport, where a cancelled `receive()` costs a task's.)"""


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """Pass as uvicorn's `http=` to send each response in a single write."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but quack the same.
        real: Any = transport
        proxy: Any = _CoalescingTransport(real, asyncio.get_running_loop())
        self._real_transport = real
        super().connection_made(proxy)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: Any = self.scope
        scope["extensions"] = {CONNECTED: self._connected}

    def _connected(self) -> bool:
        return not self._real_transport.is_closing()
