"""Feed cases of the reliability research not covered elsewhere (reliability 31-34).

``poll_feed`` with a real ``HttpFetcher`` against ``FeedServer`` on loopback, with the
``Poller`` of ``test_feed_polling`` playing the app's part (commit a record only when it
changed, move the clock on by the feed's interval).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta

import pytest

from bot.app import App
from bot.configuration import load_config
from bot.domain.model import Alert
from bot.domain.planner import next_poll_delay
from bot.domain.text import render_plain
from bot.sources.http import HttpFetcher
from bot.transports.base import Inbound
from tests.conftest import ConfigFactory
from tests.integration.feedserver import FeedServer
from tests.integration.test_feed_polling import PATH, Poller, feed_config, item, rss


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


@pytest.fixture
async def poller(server: FeedServer) -> AsyncIterator[Poller]:
    async with HttpFetcher() as fetcher:
        yield Poller(fetcher, feed_config(server.url(PATH)))


def news(alerts: tuple[Alert, ...]) -> list[str]:
    return [a.title for a in alerts if a.kind == "news"]


def health(alerts: tuple[Alert, ...]) -> list[str]:
    return [a.title for a in alerts if a.kind == "source-health"]


def items(prefix: str, count: int) -> list[str]:
    return [
        item(f"{prefix}{n}", f"Cybercrime update {prefix}{n}", link=f"https://e.org/{prefix}{n}")
        for n in range(count)
    ]


# 32 ------------------------------------------------------------------------ new subscription


async def test_a_new_feed_with_200_items_posts_nothing_then_the_next_item_once(
    server: FeedServer, poller: Poller
) -> None:
    existing = items("old", 200)
    server.serve(PATH, rss(*existing))
    first = await poller.poll()
    server.serve(PATH, rss(*items("new", 1), *existing))
    second = await poller.poll()
    third = await poller.poll()

    assert first.outcome == "ok" and first.items == 200
    assert first.alerts == ()
    assert len(poller.record.feed.seen) == 201
    assert news(second.alerts) == ["Cybercrime update new0"]
    assert third.alerts == ()


# 33 ------------------------------------------------------------------- outage and recovery


async def test_an_outage_is_told_once_and_the_items_published_meanwhile_come_once_each(
    server: FeedServer, poller: Poller
) -> None:
    # a feed whose flood guard is above 12, so that each recovered item is an alert of its own
    poller.feed = replace(poller.feed, max_new_items=20)
    server.serve(PATH, rss(*items("old", 3)))
    await poller.poll()
    server.status(PATH, 500, body="Internal Server Error")
    down = [await poller.poll() for _ in range(24)]  # 6 h of 15-minute polls
    published = items("new", 12)
    server.serve(PATH, rss(*published, *items("old", 3)))
    back = await poller.poll()
    again = await poller.poll()

    assert {o.outcome for o in down} == {"http_error"}
    assert [t for o in down for t in health(o.alerts)] == [
        next(t for o in down for t in health(o.alerts))
    ]  # one "failing" notice for the whole outage
    assert poller.record.health.failures == 0
    assert sorted(news(back.alerts)) == sorted(f"Cybercrime update new{n}" for n in range(12))
    assert len(health(back.alerts)) == 1 and "recovered" in health(back.alerts)[0]
    assert again.alerts == ()
    # the waits between polls of the failing feed grow, capped (the app schedules by this)
    delays = [next_poll_delay(timedelta(minutes=15), n, timedelta(hours=6)) for n in range(25)]
    assert delays[-1] == timedelta(hours=6) and sorted(delays) == delays


# 31 ----------------------------------------------------------------------------- messy feeds


async def test_guids_that_change_on_every_fetch_give_one_summary_not_a_flood(
    server: FeedServer, poller: Poller
) -> None:
    def reissued(generation: int) -> bytes:
        return rss(
            *(
                item(f"g{generation}-{n}", f"Cybercrime update {n}", link=f"https://e.org/{n}")
                for n in range(15)
            )
        )

    server.serve(PATH, reissued(1))
    await poller.poll()
    server.serve(PATH, reissued(2))
    second = await poller.poll()
    server.serve(PATH, reissued(3))
    third = await poller.poll()

    for outcome in (second, third):
        assert outcome.outcome == "ok"
        (summary,) = outcome.alerts  # the same titles and links as before: a re-issue
        assert summary.id.startswith("news-reissue:")
        assert summary.title == "UNODC news re-issued 15 items: not posted again"


@pytest.mark.parametrize("status", [404, 500])
async def test_an_error_status_keeps_what_was_seen(
    server: FeedServer, poller: Poller, status: int
) -> None:
    server.serve(PATH, rss(*items("old", 3)))
    await poller.poll()
    seen = poller.record.feed
    server.status(PATH, status)
    failed = await poller.poll()
    server.serve(PATH, rss(*items("old", 3)))
    back = await poller.poll()

    assert failed.outcome == "http_error" and failed.alerts == ()
    assert failed.record.feed == seen
    assert news(back.alerts) == []


async def test_an_empty_feed_neither_alerts_nor_forgets(server: FeedServer, poller: Poller) -> None:
    server.serve(PATH, rss(*items("old", 3)))
    await poller.poll()
    server.serve(PATH, rss())
    empty = await poller.poll()
    server.serve(PATH, rss(*items("old", 3)))
    back = await poller.poll()

    assert empty.outcome == "ok" and empty.alerts == ()
    assert {"old0", "old1", "old2"} <= set(poller.record.feed.seen)
    assert back.alerts == ()


# 34 -------------------------------------------------------------------------------- bad dates


@pytest.mark.parametrize(
    ("name", "pub"),
    [
        pytest.param("missing", None, id="missing"),
        pytest.param("unparseable", "the day after tomorrow", id="unparseable"),
        pytest.param("without-zone", "2026-03-02T08:00:00", id="without-zone"),
        pytest.param("year-1970", "Thu, 01 Jan 1970 00:00:00 GMT", id="year-1970"),
        pytest.param("impossible", "Mon, 31 Feb 2026 25:61:00 GMT", id="impossible"),
        pytest.param("next-year", "Tue, 02 Mar 2027 08:00:00 GMT", id="next-year"),
        pytest.param("far-future", "Fri, 31 Dec 9999 23:59:59 GMT", id="far-future"),
    ],
)
async def test_an_item_with_a_bad_date_still_alerts_once(
    server: FeedServer, poller: Poller, name: str, pub: str | None
) -> None:
    server.serve(PATH, rss(*items("old", 2)))
    await poller.poll()
    dated = item(f"d-{name}", f"Cybercrime dated {name}", link=f"https://e.org/{name}", pub=pub)
    server.serve(PATH, rss(dated, *items("old", 2)))
    polled_at = poller.now
    outcome = await poller.poll()
    again = await poller.poll()

    assert outcome.outcome == "ok"
    (alert,) = outcome.alerts
    assert alert.title == f"Cybercrime dated {name}"
    assert alert.at == polled_at  # the alert's time is the fetch time, never the feed's date
    published = [line for line in alert.text.splitlines() if "Published" in line]
    assert all(" CET" in line or " CEST" in line for line in published)  # Europe/Vienna
    assert again.alerts == ()


async def test_a_feed_that_moved_permanently_is_shown_with_its_new_address(
    config_dir: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    async with FeedServer() as server:
        server.redirect("/old.xml", "/feed.xml", status=301)
        server.serve("/feed.xml", rss(item("n1", "Cybercrime convention opens for signature")))
        directory = config_dir(feeds=f'feeds:\n  - {{id: news, url: "{server.url("/old.xml")}"}}\n')
        async with App(load_config(directory), dry_run=True) as app:
            with caplog.at_level(logging.WARNING, logger="bot.app"):
                await app.once()
                await app.once()  # told once, not at every poll
            answer = await app.answer(Inbound("console", "", None, "feeds"))

    moved = [r.getMessage() for r in caplog.records if "moved permanently" in r.getMessage()]
    assert len(moved) == 1 and server.url("/feed.xml") in moved[0] and "feeds.yaml" in moved[0]
    assert f"moved permanently to {server.url('/feed.xml')}" in render_plain(answer.body)
