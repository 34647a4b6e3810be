"""A TCP proxy on loopback in front of the tests' PostgreSQL server, which the test can cut.

``hold()`` stops every byte in both directions without closing anything, as a network that
drops packets does (the bot's connections stay open and its requests wait); ``release()``
lets what was held through. ``url`` is the database's URL through the proxy. The server may
listen on a Unix socket (the embedded server) or on TCP (``TREATY_BOT_TEST_DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from urllib.parse import parse_qs, urlsplit

WAIT = 30.0


def _target(url: str) -> tuple[str | None, str, int]:
    """Where the server listens: (Unix socket path, or None; host; port)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    port = parts.port or 5432
    host = query.get("host", [parts.hostname or "localhost"])[0]
    if host.startswith("/"):
        return f"{host}/.s.PGSQL.{port}", "", port
    return None, host, port


class PostgresProxy:
    def __init__(self, url: str) -> None:
        self.upstream = url
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flowing: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def url(self) -> str:
        """The database's URL through the proxy (user and database as upstream)."""
        parts = urlsplit(self.upstream)
        user = parts.username or "postgres"
        password = f":{parts.password}" if parts.password else ""
        return f"postgresql://{user}{password}@127.0.0.1:{self.port}{parts.path}"

    def __enter__(self) -> PostgresProxy:
        self._thread.start()
        assert self._ready.wait(WAIT), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)

    def hold(self) -> None:
        assert self._loop is not None and self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def release(self) -> None:
        if self._loop is not None and self._flowing is not None:
            self._loop.call_soon_threadsafe(self._flowing.set)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._stop = asyncio.Event()
        socket_path, host, port = _target(self.upstream)
        tasks: set[asyncio.Task[None]] = set()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            if socket_path is not None:
                return await asyncio.open_unix_connection(socket_path)
            return await asyncio.open_connection(host, port)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up_reader, up_writer = await connect()
            except OSError:
                writer.close()
                return
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

        def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(handle(reader, writer))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        server = await asyncio.start_server(spawn, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(tasks):
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
