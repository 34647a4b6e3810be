"""The bot's own HTTP server: ``/healthz``, ``/metrics`` and the timeline as a calendar,
``/calendar.ics`` (Slack's HTTP mode shares it)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from aiohttp import web

from bot.errors import TreatyBotError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

HealthCheck = Callable[[], list[str]]
#: Writes the calendar's body; the same bytes while nothing changed.
CalendarBuilder = Callable[[], Awaitable[bytes]]

CALENDAR_TYPE = "text/calendar; charset=utf-8"


class WebSubCallbacks(Protocol):
    """What answers a hub at ``<path><feed id>`` (``bot.websub.WebSubSubscriber``)."""

    def verify(self, feed: str, query: Mapping[str, str]) -> str | None:
        """The challenge to echo for an intent verification, or ``None`` to refuse it."""
        ...

    async def deliver(
        self, feed: str, signature: str | None, body: bytes, content_type: str | None
    ) -> None:
        """Take (or ignore) a content distribution; never raises for bad input."""
        ...

    def too_large(self, feed: str) -> None:
        """A content distribution larger than the cap was refused."""
        ...


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: Iterable[str], etag: str) -> bool:
    """Whether an ``If-None-Match`` header (each of its values: tags separated by commas,
    weak or strong, or ``*``) names ``etag``."""
    for value in if_none_match:
        for tag in value.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


class WebServer:
    """Serves health and metrics; more routes (Slack's endpoint) can be added before start."""

    def __init__(self, host: str, port: int, metrics: Metrics, health: HealthCheck) -> None:
        self.host = host
        self.port = port
        self.metrics = metrics
        self.health = health
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.bound_port: int | None = None

    def serve_calendar(self, path: str, build: CalendarBuilder) -> None:
        """Serve what ``build`` writes at ``path`` as ``text/calendar``, with its digest as
        the ETag, and 304 Not Modified to a client whose ``If-None-Match`` names it."""

        async def calendar(request: web.Request) -> web.Response:
            body = await build()
            headers = {"ETag": etag_of(body), "Cache-Control": "no-cache"}
            if etag_matches(request.headers.getall("If-None-Match", ()), headers["ETag"]):
                return web.Response(status=304, headers=headers)
            return web.Response(body=body, headers={**headers, "Content-Type": CALENDAR_TYPE})

        self.app.router.add_get(path, calendar)

    def serve_websub(self, path: str, callbacks: WebSubCallbacks, max_bytes: int) -> None:
        """WebSub callbacks at ``<path><feed id>``: GET answers intent verifications (the
        challenge echoed with 200, or 404); POST takes content distributions, read up to
        ``max_bytes`` (413 beyond), answered 202 whatever their signature."""

        async def verification(request: web.Request) -> web.Response:
            challenge = callbacks.verify(request.match_info["feed"], request.query)
            if challenge is None:
                return web.Response(status=404, text="not found")
            return web.Response(text=challenge, content_type="text/plain")

        async def distribution(request: web.Request) -> web.Response:
            feed = request.match_info["feed"]
            length = request.content_length
            body = bytearray()
            if length is None or length <= max_bytes:
                async for chunk in request.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > max_bytes:
                        break
            if (length is not None and length > max_bytes) or len(body) > max_bytes:
                callbacks.too_large(feed)
                return web.Response(status=413, text="too large")
            await callbacks.deliver(
                feed,
                request.headers.get("X-Hub-Signature"),
                bytes(body),
                request.headers.get("Content-Type"),
            )
            return web.Response(status=202)

        self.app.router.add_get(path + "{feed}", verification)
        self.app.router.add_post(path + "{feed}", distribution)

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as err:
            await self.stop()
            raise TreatyBotError(
                f"cannot listen on {self.host}:{self.port}: {err.strerror or err}; change "
                "http.port in bot.yaml (0 turns the server off)",
                resource="http server",
            ) from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.bound_port = sockets[0].getsockname()[1] if sockets else self.port
        log.info("http server listening host=%s port=%s", self.host, self.bound_port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        problems = self.health()
        if problems:
            return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def _metrics(self, request: web.Request) -> web.Response:
        # a thousand sources make thousands of series: rendered off the loop (prometheus-client
        # locks each metric while reading it)
        body = await asyncio.to_thread(self.metrics.render)
        return web.Response(body=body, headers={"Content-Type": self.metrics.content_type})
