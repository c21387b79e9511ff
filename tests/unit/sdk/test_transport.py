"""FastTransport against a raw HTTP/1.1 server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from worker_runtime.transport import (
    FastTransport,
    HttpxTransport,
    Origin,
    RawResponse,
    SchedulerTransport,
    scheduler_transport,
)

Responder = Callable[[bytes], bytes]


def fixed(body: bytes, extra: bytes = b"") -> Responder:
    def respond(_: bytes) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            + extra
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    return respond


class Server:
    def __init__(
        self, respond: Responder, close_after: int = 0, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.respond = respond
        self.host = host
        self.close_after = close_after
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.port = port
        self._server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        served = 0
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                self.requests.append(head + body)
                writer.write(self.respond(body))
                await writer.drain()
                served += 1
                if self.close_after and served >= self.close_after:
                    break
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        await self._server.wait_closed()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=FastTransport(), timeout=5) as c:
        yield c


async def test_keeps_one_connection_alive_across_requests(client: httpx.AsyncClient) -> None:
    async with Server(lambda body: fixed(body)(body)) as srv:
        for i in range(5):
            r = await client.post(f"http://127.0.0.1:{srv.port}/v1/x?i={i}", json={"i": i})
            assert r.json() == {"i": i}
        assert srv.connections == 1
        assert srv.requests[0].startswith(b"POST /v1/x?i=0 HTTP/1.1\r\n")


async def test_reads_chunked_bodies(client: httpx.AsyncClient) -> None:
    chunked = (
        b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{"a\r\n5\r\n": 1}\r\n0\r\n\r\n'
    )
    async with Server(lambda _: chunked) as srv:
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.json() == {"a": 1}


async def test_reconnects_when_the_server_dropped_an_idle_connection(
    client: httpx.AsyncClient,
) -> None:
    async with Server(fixed(b"{}"), close_after=1) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.get(url)).status_code == 200
        await asyncio.sleep(0.05)
        assert (await client.get(url)).status_code == 200
        assert srv.connections == 2


class Resolver:
    """Resolves every name to `addresses`; `hang` makes it wait as a dead DNS server does."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.asked = 0
        self.hang = False

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked += 1
        if self.hang:
            await asyncio.sleep(30)
        return self.addresses


async def test_a_new_connection_goes_to_the_known_address_without_dns() -> None:
    resolver = Resolver("127.0.0.1")
    transport = FastTransport(resolver=resolver)
    async with (
        httpx.AsyncClient(transport=transport, timeout=1) as c,
        Server(fixed(b"{}"), close_after=1) as srv,
    ):
        url = f"http://scheduler.example:{srv.port}/"
        assert (await c.get(url)).status_code == 200
        resolver.hang = True  # a node with a DNS replica was lost
        for _ in range(3):
            await asyncio.sleep(0.02)
            assert (await c.get(url)).status_code == 200
        assert (srv.connections, resolver.asked) == (4, 1)
        assert srv.requests[0].startswith(b"GET / HTTP/1.1\r\nHost: scheduler.example:")


async def test_the_resolver_is_asked_again_once_the_known_address_refuses() -> None:
    resolver = Resolver("127.0.0.1")
    async with httpx.AsyncClient(transport=FastTransport(resolver=resolver), timeout=1) as c:
        async with Server(fixed(b'"old"'), close_after=1) as old:
            port = old.port
            assert (await c.get(f"http://scheduler.example:{port}/")).json() == "old"
        resolver.addresses = ["127.0.0.3", "127.0.0.2"]  # the name moved
        async with Server(fixed(b'"new"'), host="127.0.0.2", port=port):
            assert (await c.get(f"http://scheduler.example:{port}/")).json() == "new"
            assert (await c.get(f"http://scheduler.example:{port}/")).json() == "new"
        assert resolver.asked == 2


async def test_requests_connecting_at_once_to_a_known_address_that_died_fail_cleanly() -> None:
    # A worker's poll, heartbeat and reports all reconnect when the scheduler dies: each
    # must fail with a ConnectError (and so be retried), not with the address cache's
    # KeyError, which ended the worker.
    resolver = Resolver("127.0.0.1")
    async with httpx.AsyncClient(transport=FastTransport(resolver=resolver), timeout=1) as c:
        async with Server(fixed(b"{}"), close_after=1) as srv:
            url = f"http://scheduler.example:{srv.port}/"
            assert (await c.get(url)).status_code == 200
        results = await asyncio.gather(*(c.get(url) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, httpx.ConnectError) for r in results), results


async def test_a_name_that_does_not_resolve_is_a_connect_error_naming_it() -> None:
    async def nothing(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    async with httpx.AsyncClient(transport=FastTransport(resolver=nothing), timeout=1) as c:
        with pytest.raises(httpx.ConnectError, match=r"nowhere\.example:80: .*not known"):
            await c.get("http://nowhere.example/")


async def test_connection_refused_is_an_httpx_connect_error(client: httpx.AsyncClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError, match=str(port)):
        await client.get(f"http://127.0.0.1:{port}/")


async def test_read_timeout_is_an_httpx_timeout() -> None:
    finished = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
        await writer.wait_closed()
        finished.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with httpx.AsyncClient(transport=FastTransport(), timeout=0.1) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get(f"http://127.0.0.1:{port}/")
    await finished.wait()
    server.close()
    await server.wait_closed()


async def test_a_hung_kept_alive_connection_closes_its_siblings() -> None:
    """A server gone without FIN or RST (a pod deleted at once) leaves kept-alive
    connections that hang: after one times out, the next request connects afresh
    instead of trying the next dead connection, and a request hanging on another of
    them is sent again on a new connection."""
    connections = 0
    hang: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        old = connections <= 2  # the first two connections lead to the "gone" server
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            served = 0
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if old and served:
                    hang.append(writer)
                    await reader.read()  # silent from now on, until the client closes
                    break
                writer.write(fixed(b"{}")(b""))
                await writer.drain()
                served += 1
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with httpx.AsyncClient(transport=FastTransport(), timeout=0.3) as c:
        first = await asyncio.gather(c.get(url), c.get(url))  # two idle connections kept
        assert [r.status_code for r in first] == [200, 200]
        long_poll = asyncio.ensure_future(c.get(url, timeout=10))  # takes one: hangs
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):
            await c.get(url)  # takes the other: hangs too
        # The long poll's connection is closed with it, and sent again on a new one.
        assert (await asyncio.wait_for(long_poll, 1)).status_code == 200
        assert (await c.get(url)).status_code == 200  # pooled: the new connection
        assert connections == 3
    server.close()
    await server.wait_closed()


def silent_server(silent: Callable[[int], bool]) -> tuple[Callable[..., object], list[int]]:
    """A handler answering `{}` on every connection except those `silent(n)` names
    (counted from 1): those read requests and never answer, like a server gone
    without FIN or RST."""
    count = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        count[0] += 1
        mute = silent(count[0])
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                if mute:
                    await reader.read()  # until the client closes
                    break
                writer.write(fixed(b"{}")(b""))
                await writer.drain()
        writer.close()

    return handle, count


async def test_a_request_hung_on_a_new_connection_closes_the_busy_ones_too() -> None:
    """No connection was kept alive: a long poll and a heartbeat each open one, and
    both lead to a server gone without a word. The heartbeat gives up; the long poll
    is sent again on a new connection at once instead of waiting out its timeout."""
    handle, count = silent_server(lambda n: n <= 2)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    async with httpx.AsyncClient(transport=FastTransport(), timeout=0.3) as c:
        long_poll = asyncio.ensure_future(c.get(url, timeout=10))
        await asyncio.sleep(0.05)
        with pytest.raises(httpx.ReadTimeout):
            await c.get(url)
        assert (await asyncio.wait_for(long_poll, 1)).status_code == 200
        assert count[0] == 3
    server.close()
    await server.wait_closed()


async def test_a_failed_connect_closes_the_busy_connections() -> None:
    """The Service refuses new connections (nothing serves): a request still waiting
    on a connection opened before is closed, and fails, instead of hanging."""
    handle, _ = silent_server(lambda n: True)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = FastTransport()
    origin = Origin("http", "127.0.0.1", port)
    long_poll = asyncio.ensure_future(
        transport.request_raw("GET", origin, "/", None, [], connect_timeout=1, read_timeout=10)
    )
    await asyncio.sleep(0.05)
    server.close()
    await server.wait_closed()
    with pytest.raises(httpx.ConnectError):
        await transport.request_raw("GET", origin, "/", None, [], connect_timeout=1, read_timeout=1)
    with pytest.raises(httpx.TransportError):
        await asyncio.wait_for(long_poll, 1)
    await transport.aclose()


async def test_reset_sends_what_waits_again_on_a_new_connection() -> None:
    handle, count = silent_server(lambda n: n == 1)
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport, timeout=10) as c:
        long_poll = asyncio.ensure_future(c.get(url))
        await asyncio.sleep(0.05)
        transport.reset()
        assert (await asyncio.wait_for(long_poll, 1)).status_code == 200
        assert count[0] == 2
    server.close()
    await server.wait_closed()


async def test_error_statuses_and_headers_pass_through(client: httpx.AsyncClient) -> None:
    def respond(_: bytes) -> bytes:
        body = b'{"error": "RunNotFound"}'
        return (
            b"HTTP/1.1 404 Not Found\r\nX-Thing: yes\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body
        )

    async with Server(respond) as srv:
        r = await client.get(f"http://127.0.0.1:{srv.port}/")
        assert r.status_code == 404
        assert r.headers["x-thing"] == "yes"
        assert r.json()["error"] == "RunNotFound"


async def test_scheduler_client_hot_path_uses_raw_requests() -> None:
    from worker_runtime.client import SchedulerClient

    def respond(body: bytes) -> bytes:
        out = b'{"tasks": []}'
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out

    async with Server(respond) as srv:
        client = SchedulerClient(f"http://127.0.0.1:{srv.port}")
        try:
            polled = await client.poll("w 1", max_tasks=3, wait=0.5)
        finally:
            await client.aclose()
    assert polled.tasks == []
    head, _, body = srv.requests[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/workers/w%201/poll HTTP/1.1\r\n")
    assert b"content-type: application/json" in head
    assert body == b'{"max_tasks":3,"wait":0.5}' or b'"max_tasks": 3' in body


async def test_scheduler_client_hot_path_raises_the_problem() -> None:
    from worker_runtime.client import SchedulerClient
    from worker_runtime.errors import SchedulerRequestError, SchedulerUnavailableError

    def respond(_: bytes) -> bytes:
        out = b'{"error": "UnknownWorker", "message": "register again", "field": "worker_id"}'
        return b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n" % len(out) + out

    async with Server(respond) as srv:
        client = SchedulerClient(f"http://127.0.0.1:{srv.port}")
        try:
            with pytest.raises(SchedulerRequestError) as err:
                await client.heartbeat("w1")
        finally:
            await client.aclose()
    assert (err.value.status, err.value.error, err.value.field) == (
        404,
        "UnknownWorker",
        "worker_id",
    )
    client = SchedulerClient(f"http://127.0.0.1:{srv.port}")
    try:
        with pytest.raises(SchedulerUnavailableError, match="cannot reach the scheduler"):
            await client.heartbeat("w1")
    finally:
        await client.aclose()


class Recording(SchedulerTransport):
    """A `SchedulerTransport` that answers every request with one canned response."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body
        self.calls: list[tuple[str, Origin, str, bytes | None, list[tuple[str, str]]]] = []

    async def request_raw(
        self,
        method: str,
        origin: Origin,
        target: str,
        body: bytes | None,
        headers: list[tuple[str, str]],
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> RawResponse:
        self.calls.append((method, origin, target, body, headers))
        return self.status, [], self.body


async def test_every_client_call_goes_through_the_one_seam() -> None:
    from worker_runtime.client import SchedulerClient

    run = {"run_id": "r 1", "phase": "Running", "workflow": "wf", "created_at": 1.0}
    seam = Recording(200, json.dumps(run).encode())
    client = SchedulerClient("http://sched:7000/base", transport=seam, headers={"X-A": "b"})
    await client.wait_run("r 1", wait=2)
    (method, origin, target, body, headers) = seam.calls[0]
    assert (method, origin, body) == ("GET", Origin("http", "sched", 7000), None)
    assert target == "/base/v1/runs/r%201/wait?timeout=2"
    assert headers == [("X-A", "b")]
    seam.body = b'{"scheduler_url": "http://sched:7000", "namespace": "n", "tls": false}'
    await client.whoami("w1")
    assert ("X-Tether-Worker", "w1") in seam.calls[1][4]
    await client.aclose()


async def test_a_plain_httpx_transport_is_wrapped_behind_the_same_seam() -> None:
    from worker_runtime.client import SchedulerClient

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"tasks": []})

    async with SchedulerClient("http://sched", transport=httpx.MockTransport(handler)) as client:
        assert isinstance(client._transport, HttpxTransport)
        polled = await client.poll("w1", max_tasks=2, wait=1.0, incarnation="inc")
    assert polled.tasks == []
    (request,) = seen
    assert str(request.url) == "http://sched/v1/workers/w1/poll"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {"max_tasks": 2, "wait": 1.0, "incarnation": "inc"}
    assert request.extensions["timeout"]["read"] == 16.0


async def test_a_server_error_through_the_seam_is_unavailable_naming_the_request() -> None:
    from worker_runtime.client import SchedulerClient
    from worker_runtime.errors import SchedulerUnavailableError

    seam = Recording(503, b'{"error": "StoreUnavailable", "message": "history not durable"}')
    client = SchedulerClient("http://sched", transport=seam)
    with pytest.raises(SchedulerUnavailableError) as err:
        await client.report("w1", {"completions": []})
    assert str(err.value) == (
        "scheduler error 503 on POST /v1/workers/w1/report: history not durable"
    )


def test_a_relative_scheduler_url_is_a_clear_error() -> None:
    from worker_runtime.client import SchedulerClient

    with pytest.raises(ValueError, match="'sched:7233' must be absolute http:// or https://"):
        SchedulerClient("sched:7233")


def test_transports_are_adapted_once_not_branched_on() -> None:
    fast = FastTransport()
    assert scheduler_transport(fast) is fast
    assert isinstance(scheduler_transport(None), FastTransport)
    mock = httpx.MockTransport(lambda r: httpx.Response(200))
    wrapped = scheduler_transport(mock)
    assert isinstance(wrapped, HttpxTransport)
    assert wrapped.inner is mock
