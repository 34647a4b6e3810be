"""The bot's own HTTP server: ``/healthz``, ``/metrics`` and the timeline as a calendar,
``/calendar.ics`` (Slack's HTTP mode shares it)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from bot.errors import TreatyBotError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

HealthCheck = Callable[[], list[str]]
#: Writes the calendar's body; the same bytes while nothing changed.
CalendarBuilder = Callable[[], Awaitable[bytes]]

CALENDAR_TYPE = "text/calendar; charset=utf-8"


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
