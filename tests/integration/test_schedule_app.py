"""Adaptive polling in the running bot: the delays its poll job plans against a real server."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
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
        delays = [await app.poller.job(quiet)]
        for _ in range(6):  # a new body, then 304s, each poll when the last one said
            clock.set(clock.now() + delays[-1])
            delays.append(await app.poller.job(quiet))
        # grown by half after each 304, but not past half the time since the new body
        assert delays == [
            timedelta(minutes=30),
            timedelta(minutes=30),  # quiet for 30 minutes: 15 would do, the floor is 30
            timedelta(minutes=30),
            timedelta(minutes=45),  # quiet for 90 minutes
            timedelta(minutes=67.5),
            timedelta(minutes=101.25),
            timedelta(hours=2),
        ]
        assert await app.poller.job(cached) == timedelta(hours=2)  # max-age above the floor
        answer = render_plain((await app.ask("feeds")).body)
        assert "every 30 minutes, next in 2 hours, adaptive (now every 2 hours)" in answer


def rss(build: int, *extra: str) -> bytes:
    items = "".join(f"<item><guid>{k}</guid><title>Cybercrime {k}</title></item>" for k in extra)
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>'
        f"<lastBuildDate>Thu, 03 Dec 2026 09:{build:02d}:00 GMT</lastBuildDate>"
        f"<item><guid>a</guid><title>Cybercrime one</title></item>{items}</channel></rss>"
    ).encode()


async def test_only_new_items_bring_a_feed_closer_not_a_new_build_date(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    """A feed whose body differs at every request (its build date) but lists nothing new is
    stretched like a quiet one; a new item halves its interval."""
    server.serve("/busy.xml", rss(0))
    directory = config_dir(
        feeds=f'feeds:\n  - {{id: busy, url: "{server.url("/busy.xml")}", every: 30m}}\n'
    )
    clock = FixedClock(NOW)
    async with App(load_config(directory), clock=clock, stream=io.StringIO()) as app:
        (busy,) = app.config.feeds
        delays = [await app.poller.job(busy)]
        for build in range(1, 6):
            clock.set(clock.now() + delays[-1])
            server.serve("/busy.xml", rss(build))
            delays.append(await app.poller.job(busy))
        assert [d / timedelta(minutes=1) for d in delays] == [30, 30, 30, 45, 67.5, 101.25]
        clock.set(clock.now() + delays[-1])
        server.serve("/busy.xml", rss(7, "b"))
        assert await app.poller.job(busy) == delays[-1] / 2


async def test_the_schedule_runs_each_source_again_forgets_removed_ones_and_survives_errors(
    config_dir: ConfigFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poller's queue: each source's turn comes again after the delay its last turn gave;
    a turn that fails runs again later; a source removed from the configuration is not polled
    again, and one added is."""
    import asyncio

    import bot.poller
    from bot.configuration.models import SourceConfig

    monkeypatch.setattr(bot.poller, "RETRY_FAILED", timedelta(seconds=0.05))
    feeds = "feeds:\n" + "".join(f"  - {{id: {n}, url: 'https://e.org/{n}'}}\n" for n in "abc")
    directory = config_dir(feeds=feeds)
    turns: dict[str, int] = {}
    changed = asyncio.Event()

    async def job(source: SourceConfig) -> timedelta:
        turns[source.id] = turns.get(source.id, 0) + 1
        changed.set()
        if source.id == "b":
            raise RuntimeError("a flaw of ours")
        return timedelta(seconds=0.05)

    async def until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(30):
            while not condition():
                changed.clear()
                await changed.wait()

    async with App(load_config(directory), stream=io.StringIO()) as app:
        monkeypatch.setattr(app.poller, "job", job)
        app.poller.sync()
        assert sorted(app.poller.polled) == ["a", "b", "c"]
        await until(lambda: all(turns.get(n, 0) >= 3 for n in "abc"))
        (directory / "feeds.yaml").write_text(
            "feeds:\n  - {id: a, url: 'https://e.org/a'}\n  - {id: d, url: 'https://e.org/d'}\n"
        )
        assert await app.reload() == []
        assert sorted(app.poller.polled) == ["a", "d"]
        before = dict(turns)
        await until(lambda: turns["a"] >= before["a"] + 3 and turns.get("d", 0) >= 3)
        assert turns["b"] <= before["b"] + 1 and turns["c"] <= before["c"] + 1  # one under way
        app.request_stop()
        await app.supervisor.stop()


async def test_sources_polled_together_are_spread_over_their_interval_from_the_second_poll(
    config_dir: ConfigFactory, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hundred feeds first polled together are due again anywhere in their interval (never
    later than it), so that they do not stay bunched round after round; from then on a poll
    is brought forward by 10 % at most. ``feeds`` says when each is due."""
    import asyncio

    import bot.poller
    from bot.configuration.models import SourceConfig
    from bot.polling import PollOutcome

    monkeypatch.setattr(bot.poller, "FIRST_SPREAD", 0.01)
    count, every = 100, timedelta(minutes=15)  # the default every
    for n in range(count):
        server.serve(f"/{n}.xml", RSS, etag=f'"{n}"')
    directory = config_dir(
        feeds="feeds:\n"
        + "".join(f'  - {{id: f{n}, url: "{server.url(f"/{n}.xml")}"}}\n' for n in range(count))
    )
    clock = FixedClock(NOW)
    async with App(load_config(directory), clock=clock, stream=io.StringIO()) as app:
        planned = asyncio.Event()
        real = app.poller.next_delay

        def next_delay(source: SourceConfig, outcome: PollOutcome) -> timedelta:
            planned.set()
            return real(source, outcome)

        monkeypatch.setattr(app.poller, "next_delay", next_delay)
        app.poller.sync(first_run=True)
        async with asyncio.timeout(60):
            while any(app.ctx.status_of(f.id).next_poll is None for f in app.config.feeds):
                planned.clear()
                await planned.wait()
        waits = [app.ctx.status_of(f.id).next_poll - NOW for f in app.config.feeds]
        assert all(0.1 * every <= w <= every for w in waits), sorted(waits)[:3]
        assert min(waits) < 0.3 * every and max(waits) > 0.8 * every
        for feed in app.config.feeds[:20]:  # their second turn: 10 % earlier at most
            await app.poller._turn(feed)
            assert 0.9 * every <= app.ctx.status_of(feed.id).next_poll - NOW <= every
        app.request_stop()
        await app.supervisor.stop()
