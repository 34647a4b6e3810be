"""A programmable feed server on loopback, for tests that need real HTTP.

``FeedServer`` is an ``aiohttp.web`` application bound to port 0 of one or more loopback
addresses (``127.0.0.1`` by default; ``127.0.0.2`` works too on Linux). Tests program it path
by path, and it answers like the feeds out there do, well or badly:

- ``serve``: a body with optional ``ETag``/``Last-Modified``, answering 304 to a matching
  ``If-None-Match`` (or, without it, ``If-Modified-Since``); any status code and headers;
- ``status``: an error status, optionally with ``Retry-After`` (seconds or an HTTP date);
- ``slow``: headers at once, the body only when the test lets it go through the returned
  ``Gate`` (or never, which is how a test makes a fetch time out);
- ``endless``: a chunked body that never ends; ``drip``: one byte per interval;
- ``huge``: 50 MB streamed, with or without ``Content-Length``;
- ``gzip_bomb``: ``Content-Encoding: gzip`` of a long run of zeros (a few hundred KB on the
  wire, hundreds of MB decompressed), built once per process;
- ``html_page``: an HTML page served as 200; ``redirect``: a redirect (a loop if it points at
  itself).

Every request is recorded (``RequestRecord``: path, host, headers, time, status, bytes sent,
whether the client went away), and so are the requests in flight per host and their maximum,
keyed by the ``host:port`` the client addressed.

Tests wait on the server, never on the clock: ``wait_until`` wakes up on every change of the
server's state and re-checks its predicate, with a deadline that only turns a hang into a
failure.

Two ways to run it::

    async with FeedServer() as server:          # in the test's own event loop
        server.serve("/feed.xml", body, etag='"v1"')
        url = server.url("/feed.xml")

    with FeedServer() as server:                # in a background thread with its own loop,
        ...                                     # e.g. while the bot runs in a subprocess

Programming routes, ``Gate.release``/``Gate.open`` and the ``wait_*`` methods are safe to call
from any thread; predicates given to ``wait_until`` run on the server's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import socket
import threading
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from types import TracebackType
from typing import Protocol

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "HTML_PAGE",
    "MB",
    "RSS_TYPE",
    "WAIT",
    "FeedServer",
    "Gate",
    "RequestRecord",
    "gzip_bomb",
    "http_date",
]

#: The deadline of every wait: generous, because a slow machine is no failure.
WAIT = 30.0
MB = 1024 * 1024
CHUNK = 64 * 1024
RSS_TYPE = "application/rss+xml; charset=utf-8"

HTML_PAGE = b"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>Just a moment...</title></head>
<body>
<h1>Checking your browser before accessing the site</h1>
<p>This page is served with status 200, as CDNs and login walls do.</p>
<ul><li><a href="/news">News</a></li><li><a href="/about">About</a></li></ul>
</body>
</html>
"""


def http_date(when: datetime) -> str:
    """An IMF-fixdate, as in ``Last-Modified`` and ``Retry-After``."""
    return format_datetime(when.astimezone(UTC), usegmt=True)


@functools.cache
def gzip_bomb(size: int = 256 * MB) -> bytes:
    """A gzip member of ``size`` zero bytes; about a thousandth of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(MB)
    parts = [compressor.compress(zeros) for _ in range(size // MB)]
    parts.append(compressor.compress(bytes(size % MB)))
    parts.append(compressor.flush())
    return b"".join(parts)


@dataclass(slots=True)
class RequestRecord:
    """One request as the server saw it. The server fills in the outcome as it goes."""

    seq: int
    method: str
    path: str
    host: str
    headers: CIMultiDictProxy[str]
    at: float  # time.monotonic() when the request arrived
    received: datetime  # the same moment, wall clock, UTC
    status: int | None = None
    bytes_sent: int = 0
    finished: bool = False
    aborted: bool = False  # the client went away before the whole body was written


class Gate:
    """Holds the responses of a ``slow`` route until the test lets them go.

    ``release(n)`` lets ``n`` more responses through, ``open()`` lets every response through
    from now on. Stopping the server lets everything go, so no handler outlives it.
    """

    def __init__(self, server: FeedServer) -> None:
        self._server = server
        self.tokens = 0
        self.is_open = False

    def release(self, count: int = 1) -> None:
        def add() -> None:
            self.tokens += count

        self._server.call(add)

    def open(self) -> None:
        def set_open() -> None:
            self.is_open = True

        self._server.call(set_open)

    async def passage(self) -> None:
        """Wait (on the server's loop) until this response may go on."""
        server = self._server
        while True:
            if self.is_open or server.closing:
                return
            if self.tokens > 0:
                self.tokens -= 1
                return
            await server.until(lambda: self.is_open or self.tokens > 0 or server.closing)


class _Route(Protocol):
    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse: ...


def _etag_matches(header: str, etag: str) -> bool:
    def weak(tag: str) -> str:
        return tag.strip().removeprefix("W/")

    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(weak(tag) == weak(etag) for tag in tags)


def _not_modified(request: web.Request, etag: str | None, last_modified: str | None) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:  # takes precedence over If-Modified-Since (RFC 9110 13.2.2)
        return etag is not None and _etag_matches(if_none_match, etag)
    if_modified_since = request.headers.get("If-Modified-Since")
    if if_modified_since and last_modified:
        try:
            return parsedate_to_datetime(last_modified) <= parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
    return False


@dataclass(frozen=True, slots=True)
class _Static:
    body: bytes
    content_type: str
    status: int
    etag: str | None
    last_modified: str | None
    headers: Mapping[str, str]

    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        validators = {}
        if self.etag is not None:
            validators["ETag"] = self.etag
        if self.last_modified is not None:
            validators["Last-Modified"] = self.last_modified
        if self.status == 200 and _not_modified(request, self.etag, self.last_modified):
            return web.Response(status=304, headers={**self.headers, **validators})
        response = web.Response(
            status=self.status,
            body=self.body,
            headers={"Content-Type": self.content_type, **self.headers, **validators},
        )
        record.bytes_sent = len(self.body)
        return response


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str
    status: int

    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        return web.Response(status=self.status, headers={"Location": self.location})


@dataclass(frozen=True, slots=True)
class _Slow:
    body: bytes
    content_type: str
    gate: Gate
    headers_first: bool

    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        response.content_length = len(self.body)
        if self.headers_first:
            await response.prepare(request)
        await self.gate.passage()

        async def body() -> AsyncIterator[bytes]:
            yield self.body

        return await server.stream(request, record, response, body())


@dataclass(frozen=True, slots=True)
class _Chunks:
    """A streamed body: ``head``, then ``filler`` over and over up to ``size`` bytes (``None``:
    without end, until the client goes away or the server stops)."""

    head: bytes
    filler: bytes
    size: int | None
    content_length: bool
    content_type: str

    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        if self.content_length and self.size is not None:
            response.content_length = self.size
        else:
            response.enable_chunked_encoding()
        return await server.stream(request, record, response, self._chunks(server))

    async def _chunks(self, server: FeedServer) -> AsyncIterator[bytes]:
        limit = self.size if self.size is not None else 1 << 40
        sent = 0
        while sent < limit and not server.closing:
            piece = self.head[sent:] if sent < len(self.head) else self.filler
            piece = piece[: limit - sent]
            yield piece
            sent += len(piece)


@dataclass(frozen=True, slots=True)
class _Drip:
    body: bytes
    interval: float
    content_type: str

    async def __call__(
        self, server: FeedServer, request: web.Request, record: RequestRecord
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": self.content_type})
        response.enable_chunked_encoding()
        return await server.stream(request, record, response, self._bytes(server))

    async def _bytes(self, server: FeedServer) -> AsyncIterator[bytes]:
        index = 0
        while not server.closing:
            yield self.body[index : index + 1] if index < len(self.body) else b" "
            index += 1
            await server.pause(self.interval)


class FeedServer:
    """A loopback HTTP server whose routes tests program; see the module docstring."""

    def __init__(
        self, addresses: Iterable[str] = ("127.0.0.1",), *, shutdown_timeout: float = 5.0
    ) -> None:
        self.addresses = tuple(addresses)
        if not self.addresses:
            raise ValueError("FeedServer needs at least one address")
        self.shutdown_timeout = shutdown_timeout
        self.requests: list[RequestRecord] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.closing = False
        self.ports: dict[str, int] = {}
        self._routes: dict[str, _Route] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None

    # ----------------------------------------------------------------------- addresses

    def netloc(self, address: str | None = None) -> str:
        """``host:port`` of one bound address (the first by default), as clients send it."""
        address = address or self.addresses[0]
        return f"{address}:{self.ports[address]}"

    def url(self, path: str, address: str | None = None) -> str:
        return f"http://{self.netloc(address)}{path}"

    # -------------------------------------------------------------------------- routes

    def serve(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = RSS_TYPE,
        etag: str | None = None,
        last_modified: str | datetime | None = None,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Serve ``body``; with validators, answer 304 when the client already has it."""
        if isinstance(last_modified, datetime):
            last_modified = http_date(last_modified)
        self._routes[path] = _Static(
            body.encode() if isinstance(body, str) else body,
            content_type,
            status,
            etag,
            last_modified,
            dict(headers or {}),
        )

    def status(
        self,
        path: str,
        status: int,
        *,
        retry_after: int | str | datetime | None = None,
        body: bytes | str = b"",
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """Answer ``status``, with ``Retry-After`` in seconds or as an HTTP date if given."""
        headers: dict[str, str] = {}
        if isinstance(retry_after, datetime):
            headers["Retry-After"] = http_date(retry_after)
        elif retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        self.serve(path, body, content_type=content_type, status=status, headers=headers)

    def html_page(self, path: str) -> None:
        self.serve(path, HTML_PAGE, content_type="text/html; charset=utf-8")

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self._routes[path] = _Redirect(location, status)

    def slow(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = RSS_TYPE,
        headers_first: bool = True,
    ) -> Gate:
        """Send the headers (unless ``headers_first`` is false), then hold the body at a gate."""
        gate = Gate(self)
        self._routes[path] = _Slow(
            body.encode() if isinstance(body, str) else body, content_type, gate, headers_first
        )
        return gate

    def endless(self, path: str, *, content_type: str = RSS_TYPE) -> None:
        """A chunked feed that never ends (until the client goes away or the server stops)."""
        head = b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>Endless</title>'
        filler = b"<!-- " + b"endless " * (CHUNK // 8 - 2) + b" -->\n"
        self._routes[path] = _Chunks(head, filler, None, False, content_type)

    def drip(
        self,
        path: str,
        body: bytes | str = b"",
        *,
        interval: float = 1.0,
        content_type: str = RSS_TYPE,
    ) -> None:
        """Headers at once, then one byte of ``body`` per ``interval`` (spaces once it ends)."""
        data = body.encode() if isinstance(body, str) else body
        self._routes[path] = _Drip(data, interval, content_type)

    def huge(
        self,
        path: str,
        size: int = 50 * MB,
        *,
        content_length: bool = True,
        content_type: str = RSS_TYPE,
    ) -> None:
        """A ``size``-byte feed, streamed in 64 KiB chunks, with or without Content-Length."""
        head = b'<?xml version="1.0"?>\n<rss version="2.0"><channel><title>Huge</title>'
        filler = b"<!-- " + b"x" * (CHUNK - 10) + b" -->\n"
        self._routes[path] = _Chunks(head, filler, size, content_length, content_type)

    def gzip_bomb(self, path: str, size: int = 256 * MB) -> int:
        """``Content-Encoding: gzip`` of ``size`` zero bytes; returns the length on the wire."""
        bomb = gzip_bomb(size)
        self.serve(path, bomb, headers={"Content-Encoding": "gzip"})
        return len(bomb)

    # ------------------------------------------------------------------- observations

    def requests_to(self, path: str) -> list[RequestRecord]:
        return [record for record in list(self.requests) if record.path == path]

    def finished(self, path: str) -> int:
        return sum(1 for record in self.requests_to(path) if record.finished)

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, deadline: float = WAIT
    ) -> None:
        """Wait until ``predicate()`` (evaluated on the server's loop) is true.

        Raises ``AssertionError`` naming ``what`` after ``deadline`` seconds.
        """
        loop = self._require_loop()
        waiting = self._wait(predicate, what, deadline)
        if _running_loop() is loop:
            await waiting
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(waiting, loop))

    def wait_until_sync(
        self, predicate: Callable[[], bool], what: str, deadline: float = WAIT
    ) -> None:
        """``wait_until`` for code that runs outside any event loop (server in a thread)."""
        loop = self._require_loop()
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("wait_until_sync would block the server's own loop")
        future = asyncio.run_coroutine_threadsafe(self._wait(predicate, what, deadline), loop)
        future.result(deadline + 5.0)

    async def wait_for_requests(self, path: str, count: int = 1) -> None:
        await self.wait_until(
            lambda: len(self.requests_to(path)) >= count, f"{count} request(s) to {path}"
        )

    async def wait_finished(self, path: str, count: int = 1) -> None:
        await self.wait_until(
            lambda: self.finished(path) >= count, f"{count} finished response(s) to {path}"
        )

    # ---------------------------------------------------------- server-side machinery

    def call(self, function: Callable[[], None]) -> None:
        """Run ``function`` on the server's loop (now, if already there) and wake waiters."""
        loop = self._require_loop()

        def run() -> None:
            function()
            self.changed()

        if threading.get_ident() == self._loop_thread:
            run()
        else:
            loop.call_soon_threadsafe(run)

    def changed(self) -> None:
        """Wake everything waiting on the server's state (server loop only)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, predicate: Callable[[], bool]) -> None:
        """Wait on the server's loop until ``predicate()``; re-checked on every change."""
        loop = self._require_loop()
        while not predicate():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def pause(self, seconds: float) -> None:
        """A server-side pause (to pace a drip) that ends early when the server stops."""
        try:
            async with asyncio.timeout(seconds):
                await self.until(lambda: self.closing)
        except TimeoutError:
            pass

    async def stream(
        self,
        request: web.Request,
        record: RequestRecord,
        response: web.StreamResponse,
        chunks: AsyncIterator[bytes],
    ) -> web.StreamResponse:
        """Write ``chunks`` as the body; a client that goes away ends it (``aborted``)."""
        try:
            await response.prepare(request)
            async for chunk in chunks:
                if self.closing:
                    break
                await response.write(chunk)
                record.bytes_sent += len(chunk)
            await response.write_eof()
        except ConnectionError:
            record.aborted = True
        return response

    async def _wait(self, predicate: Callable[[], bool], what: str, deadline: float) -> None:
        try:
            async with asyncio.timeout(deadline):
                await self.until(predicate)
        except TimeoutError:
            raise AssertionError(f"FeedServer: waited {deadline:g}s for {what}") from None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        host = request.host
        record = RequestRecord(
            seq=len(self.requests),
            method=request.method,
            path=request.path,
            host=host,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            at=time.monotonic(),
            received=datetime.now(UTC),
        )
        self.requests.append(record)
        self.in_flight[host] += 1
        self.max_in_flight[host] = max(self.max_in_flight[host], self.in_flight[host])
        self.changed()
        try:
            route = self._routes.get(request.path)
            if route is None:
                response: web.StreamResponse = web.Response(
                    status=404, text=f"no route for {request.path}"
                )
            else:
                response = await route(self, request, record)
            record.status = response.status
            return response
        finally:
            self.in_flight[host] -= 1
            record.finished = True
            self.changed()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("FeedServer is not running")
        return self._loop

    # ----------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind every address at port 0 and start serving in the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.closing = False
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=self.shutdown_timeout)
        await runner.setup()
        self._runner = runner
        try:
            for address in self.addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, 0))
                    sock.listen(128)
                    sock.setblocking(False)
                    site = web.SockSite(runner, sock)
                    await site.start()
                except BaseException:
                    sock.close()
                    raise
                self.ports[address] = sock.getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Let every held or streaming response end, then close sockets and connections."""
        self.closing = True
        self.changed()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FeedServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> FeedServer:
        """Start in a background thread with its own event loop."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve_in_thread(started),), name="feedserver"
        )
        self._thread.daemon = True
        self._thread.start()
        try:
            started.result(WAIT)
        except BaseException:
            self._thread.join(WAIT)
            self._thread = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._loop, self._stop_requested
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(WAIT + self.shutdown_timeout)
        if thread.is_alive():
            raise RuntimeError("the FeedServer thread did not stop")

    async def _serve_in_thread(self, started: concurrent.futures.Future[None]) -> None:
        self._stop_requested = asyncio.Event()
        try:
            await self.start()
        except BaseException as err:
            started.set_exception(err)
            return
        started.set_result(None)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
