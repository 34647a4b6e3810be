"""The bot's own HTTP server: ``/healthz`` and ``/metrics`` (Slack's HTTP mode shares it)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiohttp import web

from bot.errors import TreatyBotError
from bot.metrics import Metrics

log = logging.getLogger(__name__)

HealthCheck = Callable[[], list[str]]


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
