"""SIGTERM (a stop request) while a send waits on a rate limit: kept, and sent once later."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import bot.app
from bot.app import App
from bot.configuration import load_config
from bot.domain.model import Alert, ChannelName
from bot.transports.base import Capabilities, CommandHandler
from tests.conftest import ConfigFactory
from tests.test_cli import publish, rss, www  # noqa: F401 - the fixture


class RateLimited:
    """A platform that makes every post wait (as on a long Retry-After) until released."""

    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    def __init__(self, *, blocked: bool) -> None:
        self.blocked = blocked
        self.waiting = asyncio.Event()
        self.posted: list[str] = []

    async def start(self, on_command: CommandHandler) -> None:
        pass

    async def stop(self) -> None:
        pass

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return True

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        if self.blocked:
            self.waiting.set()
            await asyncio.Event().wait()  # the rate limit outlasts the stop
        self.posted.append(alert.title)

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return False


async def test_stop_during_a_rate_limit_keeps_the_alert(
    config_dir: ConfigFactory,
    www: tuple[Path, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bot.app, "SHUTDOWN_BUDGET", 0.5)
    root, base = www
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed")))
    directory = config_dir(feeds=f'feeds:\n  - {{id: news, url: "{base}/news.xml", backfill: 1}}\n')
    config = load_config(directory)
    first = RateLimited(blocked=True)
    async with App(config, transports={"fake": first}) as app:
        running = asyncio.create_task(app.run())
        await first.waiting.wait()  # the alert is being sent and held by the rate limit
        app.request_stop()
        await running  # returns within the shutdown budget
    assert first.posted == []

    second = RateLimited(blocked=False)
    async with App(config, transports={"fake": second}) as app:
        await app.once()
    assert second.posted == ["Cybercrime treaty signed"]

    third = RateLimited(blocked=False)
    async with App(config, transports={"fake": third}) as app:
        await app.once()
    assert third.posted == []  # once, not twice
