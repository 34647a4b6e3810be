"""Adaptive polling in the running bot: the delays its poll job plans against a real server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.domain.text import render_plain
from tests.conftest import ConfigFactory
from tests.integration.feedserver import FeedServer

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
RSS = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
<item><guid>a</guid><title>Cybercrime one</title></item></channel></rss>"""


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


async def test_the_poll_job_stretches_quiet_feeds_and_heeds_the_server(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    server.serve("/quiet.xml", RSS, etag='"v1"')
    server.serve("/cached.xml", RSS, headers={"Cache-Control": "public, max-age=7200"})
    directory = config_dir(
        feeds=f"""
        feeds:
          - {{id: quiet, url: "{server.url("/quiet.xml")}", every: 30m, every_max: 2h}}
          - {{id: cached, url: "{server.url("/cached.xml")}", every: 30m}}
        """,
    )
    clock = FixedClock(NOW)
    async with App(load_config(directory), clock=clock, stream=io.StringIO()) as app:
        quiet, cached = app.config.feeds
        delays = [await app.poller.job(quiet) for _ in range(5)]  # a new body, then 304s
        assert delays == [
            timedelta(minutes=30),
            timedelta(minutes=45),
            timedelta(minutes=67.5),
            timedelta(minutes=101.25),
            timedelta(hours=2),
        ]
        assert await app.poller.job(cached) == timedelta(hours=2)  # max-age above the floor
        answer = render_plain((await app.ask("feeds")).body)
        assert "every 30 minutes, next in 2 hours, adaptive (now every 2 hours)" in answer
