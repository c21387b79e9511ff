"""The worker's one network seam, and a lean HTTP/1.1 keep-alive transport behind it.

Every request of `SchedulerClient` goes through `SchedulerTransport.request_raw`: one
plain request, no httpx request/response objects on the way. Two transports
implement it:

- `FastTransport`, the production one: HTTP/1.1 over asyncio streams with a small
  keep-alive pool. httpx's default transport (httpcore over anyio) costs about 1 ms
  of CPU per request on this class of machine; a task round trip is three requests,
  so that alone would miss the 2 ms target. https goes to httpx's own transport,
  unless the transport is given an SSL context: the operator's API-server client
  (`KubeClient`) speaks TLS through it for the same reason.
- `HttpxTransport`, any httpx transport (an in-process ASGI app, a
  `httpx.MockTransport`) behind the same method, for tests and embedded schedulers.

Both are also `httpx.AsyncBaseTransport`s, so an `httpx.AsyncClient` can use them.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import socket
import ssl
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

_MAX_HEADER_BYTES = 64 * 1024

RawResponse = tuple[int, list[tuple[bytes, bytes]], bytes]
"""Status, header pairs and the whole body of one response."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where requests go: scheme, host and port of the scheduler."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        """The origin of an absolute URL; ValueError names what is missing."""
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(
                f"scheduler URL {url!r} must be absolute http:// or https://, "
                "e.g. http://127.0.0.1:7233"
            )
        default = 443 if parsed.scheme == "https" else 80
        return cls(parsed.scheme, parsed.host, parsed.port or default)

    def url(self, target: str) -> str:
        """The absolute URL of `target` (a path with its query) at this origin."""
        return f"{self.scheme}://{self.host}:{self.port}{target}"


class SchedulerTransport(httpx.AsyncBaseTransport, abc.ABC):
    """What the scheduler client needs of the network: one request, its whole response.

    Raises httpx's exceptions (`httpx.TransportError` subclasses) when the scheduler
    cannot be reached.
    """

    @abc.abstractmethod
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
        """Send `method target` (path and query, already quoted) with `body`."""

    def reset(self) -> None:
        """Forget every open connection: idle ones are dropped, requests on busy ones
        fail or are sent again on a new connection. Called when the scheduler behind
        the URL changed (a new leader, a restart), so nothing waits on the old one."""


class HttpxTransport(SchedulerTransport):
    """Any httpx transport (`httpx.ASGITransport`, `httpx.MockTransport`, ...) as a
    `SchedulerTransport`: each raw request becomes an `httpx.Request`."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

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
        request = httpx.Request(
            method,
            origin.url(target),
            headers=headers,
            content=body,
            extensions={
                "timeout": {
                    "connect": connect_timeout,
                    "read": read_timeout,
                    "write": read_timeout,
                    "pool": connect_timeout,
                }
            },
        )
        response = await self.inner.handle_async_request(request)
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.headers.raw, content

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def scheduler_transport(transport: httpx.AsyncBaseTransport | None) -> SchedulerTransport:
    """`transport` as a `SchedulerTransport`: a new `FastTransport` for None, a plain
    httpx transport wrapped in `HttpxTransport`."""
    if transport is None:
        return FastTransport()
    if isinstance(transport, SchedulerTransport):
        return transport
    return HttpxTransport(transport)


class _Conn:
    __slots__ = ("forgotten", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.forgotten = False
        """Closed by the transport (`FastTransport._forget`) while a request waited on it."""

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def aclose(self) -> None:
        """Close and wait until the socket is really closed (no leak past the loop)."""
        self.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Host name and port to the addresses to try, in order."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the system's resolver (getaddrinfo) gives for `host`."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class FastTransport(SchedulerTransport):
    """HTTP/1.1 over asyncio streams with keep-alive; https too when given an SSL
    context, else through httpx's transport.

    The address a host name resolved to is kept while connecting to it works, and the
    resolver is asked again only once it fails. A new connection then needs no DNS: when
    a node is lost, a Service's DNS answers hang for seconds (the cluster DNS replica on
    that node still receives queries until its endpoints are removed) while the
    scheduler's ClusterIP still answers at once, and a worker must keep heartbeating."""

    def __init__(
        self,
        max_idle_per_host: int = 8,
        resolver: Resolver = system_resolver,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._ssl = ssl_context
        """With it, https is spoken here too (the operator to the API server); without,
        https goes to httpx's transport."""
        self._idle: dict[tuple[str, int], list[_Conn]] = defaultdict(list)
        self._busy: dict[tuple[str, int], set[_Conn]] = defaultdict(set)
        self._max_idle = max_idle_per_host
        self._fallback: httpx.AsyncHTTPTransport | None = None
        self._resolve = resolver
        self._addresses: dict[tuple[str, int], str] = {}

    def _https(self) -> httpx.AsyncHTTPTransport:
        if self._fallback is None:
            self._fallback = httpx.AsyncHTTPTransport()
        return self._fallback

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if not self._native(url.scheme):
            return await self._https().handle_async_request(request)
        host = url.host
        port = url.port or 80
        body = request.content if request.stream is not None else b""
        head = _request_head(
            request.method,
            request.url.raw_path.decode("ascii"),
            host,
            port,
            [(n.decode("latin-1"), v.decode("latin-1")) for n, v in request.headers.raw],
            len(body),
        )
        timeout = request.extensions.get("timeout", {})
        status, headers, content = await self._exchange(
            Origin(url.scheme, host, port),
            head + body,
            timeout.get("connect"),
            timeout.get("read"),
            request,
        )
        return httpx.Response(
            status, headers=headers, content=content, extensions={"http_version": b"HTTP/1.1"}
        )

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
        """One request without building httpx objects (plain http): the workers' hot path."""
        if not self._native(origin.scheme):
            return await HttpxTransport(self._https()).request_raw(
                method,
                origin,
                target,
                body,
                headers,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            )
        data = body or b""
        head = _request_head(method, target, origin.host, origin.port, headers, len(data))
        return await self._exchange(origin, head + data, connect_timeout, read_timeout, None)

    def _native(self, scheme: str) -> bool:
        return scheme == "http" or (scheme == "https" and self._ssl is not None)

    async def _exchange(
        self,
        origin: Origin,
        payload: bytes,
        connect_timeout: float | None,
        read_timeout: float | None,
        request: httpx.Request | None,
    ) -> RawResponse:
        key = (origin.host, origin.port)
        # A pooled connection may have been closed by the server while idle, and one the
        # transport closed itself leads to a server that is gone: send again on a fresh
        # connection, but only when nothing of the response was read.
        reuse, resent = True, 0
        while True:
            conn = await self._take_idle(key) if reuse else None
            reused = conn is not None
            if conn is None:
                try:
                    conn = await self._connect(origin, connect_timeout, request)
                except httpx.TransportError:
                    self._forget(key)
                    raise
            busy = self._busy[key]
            busy.add(conn)
            try:
                conn.writer.write(payload)
                status, headers, content, keep = await _read_response(
                    conn.reader, read_timeout, request
                )
            except _StaleConnection:
                await conn.aclose()
                if (reused or conn.forgotten) and resent < _MAX_RESENDS:
                    reuse, resent = False, resent + 1
                    continue
                raise httpx.RemoteProtocolError(
                    "the server closed the connection without a response", request=request
                ) from None
            except asyncio.CancelledError:
                conn.close()  # the caller gave up: close without waiting
                raise
            except BaseException:
                conn.close()
                self._forget(key)
                raise
            finally:
                busy.discard(conn)
            if keep and len(self._idle[key]) < self._max_idle:
                self._idle[key].append(conn)
            else:
                await conn.aclose()
            return status, headers, content

    async def _connect(
        self, origin: Origin, limit_s: float | None, request: httpx.Request | None
    ) -> _Conn:
        host, port = origin.host, origin.port
        key = (host, port)
        tls = self._ssl if origin.scheme == "https" else None
        known = self._addresses.get(key)
        try:
            async with asyncio.timeout(limit_s):
                if known is not None:
                    try:
                        return await _open(known, port, tls, host)
                    except OSError:
                        self._addresses.pop(key, None)  # moved: resolve again (a sibling may have)
                failure: OSError = OSError(f"{host} resolved to no address")
                for address in await self._resolve(host, port):
                    try:
                        conn = await _open(address, port, tls, host)
                    except OSError as exc:
                        failure = exc
                        continue
                    self._addresses[key] = address
                    return conn
                raise failure
        except TimeoutError:
            if known is not None:
                self._addresses.pop(key, None)
            raise httpx.ConnectTimeout(
                f"connecting to {host}:{port} timed out", request=request
            ) from None
        except OSError as exc:
            raise httpx.ConnectError(
                f"cannot connect to {host}:{port}: {exc}", request=request
            ) from exc

    def _forget(self, key: tuple[str, int]) -> None:
        """A request to `key` hung, failed or could not connect: the server there is most
        likely gone, perhaps without a word (a pod deleted at once: no FIN, no RST), and
        every connection to it with it. Drop the idle ones and close the busy ones (a long
        poll would hang until its timeout; closed, it is sent again on a new connection),
        so requests connect afresh and a Service routes them to who serves now."""
        for conn in self._idle.pop(key, []):
            conn.close()
        for conn in list(self._busy.get(key, ())):
            conn.forgotten = True
            conn.close()

    def reset(self) -> None:
        for key in {*self._idle, *self._busy}:
            self._forget(key)

    async def _take_idle(self, key: tuple[str, int]) -> _Conn | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if not conn.writer.is_closing() and not conn.reader.at_eof():
                return conn
            await conn.aclose()
        return None

    async def aclose(self) -> None:
        pools = list(self._idle.values())
        self._idle.clear()
        for pool in pools:
            for conn in pool:
                await conn.aclose()
        if self._fallback is not None:
            await self._fallback.aclose()


_MAX_RESENDS = 2
"""Times one request is sent again on a fresh connection after its connection proved
stale or was closed under it."""


class _StaleConnection(Exception):
    """A pooled connection the server closed while it was idle."""


def _request_head(
    method: str,
    target: str,
    host: str,
    port: int,
    headers: list[tuple[str, str]],
    length: int,
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in headers:
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        lines.append(f"{name}: {value}")
    if length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {length}")
    lines.append("Connection: keep-alive")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _open(address: str, port: int, tls: ssl.SSLContext | None, host: str) -> _Conn:
    reader, writer = await asyncio.open_connection(
        address,
        port,
        limit=_MAX_HEADER_BYTES,
        ssl=tls,
        server_hostname=host if tls is not None else None,
    )
    return _Conn(reader, writer)


async def _read_response(
    reader: asyncio.StreamReader, limit_s: float | None, request: httpx.Request | None
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    try:
        async with asyncio.timeout(limit_s):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _StaleConnection from None
                raise httpx.RemoteProtocolError("truncated response head", request=request) from exc
            except ConnectionError as exc:
                raise _StaleConnection from exc
            status, headers, length, chunked, keep = _parse_head(head, request)
            if chunked:
                content = await _read_chunked(reader)
            elif length is not None:
                content = await reader.readexactly(length) if length else b""
            else:
                content = await reader.read()
                keep = False
    except TimeoutError:
        raise httpx.ReadTimeout("timed out waiting for the scheduler", request=request) from None
    except asyncio.IncompleteReadError as exc:
        raise httpx.RemoteProtocolError("truncated response body", request=request) from exc
    except OSError as exc:  # a reset, or a TLS error
        raise httpx.ReadError(str(exc), request=request) from exc
    return status, headers, content, keep


def _parse_head(
    head: bytes, request: httpx.Request | None
) -> tuple[int, list[tuple[bytes, bytes]], int | None, bool, bool]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise httpx.RemoteProtocolError(f"bad status line {lines[0]!r}", request=request)
    status = int(parts[1])
    headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    chunked = False
    keep = parts[0] == b"HTTP/1.1"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        value = value.strip()
        lname = name.strip().lower()
        if lname == b"content-length":
            length = int(value)
        elif lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
            continue  # the body handed to httpx is already de-chunked
        elif lname == b"connection":
            keep = value.lower() == b"keep-alive" or (keep and value.lower() != b"close")
        headers.append((name.strip(), value))
    return status, headers, length, chunked, keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            trailer = await reader.readuntil(b"\r\n")
            while trailer != b"\r\n":  # trailer fields end with an empty line
                trailer = await reader.readuntil(b"\r\n")
            return bytes(out)
        out += await reader.readexactly(size)
        await reader.readexactly(2)
