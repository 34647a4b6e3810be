"""``poll_feed`` end to end: a real ``HttpFetcher`` against ``FeedServer`` on loopback.

A ``Poller`` plays the app's part: it keeps the ``SourceRecord`` between polls, committing a
poll's record only when the poll says something changed, exactly as the app does, and moves
the clock on by the feed's interval. Each test then reads what one poll decided: the outcome,
the alerts, and what the bot now remembers.
"""

from __future__ import annotations

import random
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

import bot.polling
import bot.sources.feeds
from bot.configuration.models import FeedConfig
from bot.domain.model import Alert, SourceRecord
from bot.domain.planner import GROUP_MAX_CHARS, GROUP_MAX_ITEMS
from bot.domain.text import Bullets
from bot.polling import PollOutcome, poll_feed
from bot.sources.feeds import ParsedFeed, ParseFailed, parse_feed
from bot.sources.http import HttpFetcher
from bot.transports.base import alert_rich
from bot.transports.matrix import render_message
from bot.transports.slack import render_blocks
from tests.integration.feedserver import MB, FeedServer

TZ = ZoneInfo("Europe/Vienna")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPS = ("ops",)
PATH = "/feed.xml"
PUB = "Mon, 02 Mar 2026 08:00:00 GMT"


def feed_config(url: str, *, match: tuple[str, ...] = ("cybercrime",)) -> FeedConfig:
    return FeedConfig(
        id="unodc",
        name="UNODC news",
        url=url,
        every=timedelta(minutes=15),
        match=match,
        exclude=(),
        channels=("alerts",),
        backfill=0,
        max_new_items=10,
        failures_before_alert=3,
    )


def item(
    guid: str | None,
    title: str,
    *,
    link: str | None = None,
    pub: str | None = PUB,
    description: str = "",
) -> str:
    parts = [f"<title>{title}</title>"]
    if link is not None:
        parts.append(f"<link>{link}</link>")
    if guid is not None:
        parts.append(f'<guid isPermaLink="false">{guid}</guid>')
    if pub is not None:
        parts.append(f"<pubDate>{pub}</pubDate>")
    if description:
        parts.append(f"<description>{description}</description>")
    return "<item>" + "".join(parts) + "</item>"


def rss(*items: str, prolog: str = '<?xml version="1.0" encoding="utf-8"?>\n') -> bytes:
    return (
        prolog + '<rss version="2.0"><channel><title>UNODC</title>'
        "<link>https://www.unodc.org/</link><description>News</description>"
        + "".join(items)
        + "</channel></rss>\n"
    ).encode()


OLD_ITEMS = (
    item("n1", "Cybercrime convention opens for signature in Hanoi"),
    item("n2", "Ad Hoc Committee adopts its report"),
)
FEED_V1 = rss(*OLD_ITEMS)


@dataclass
class Poller:
    """The app's part in a poll: keep the record, commit it only when it changed."""

    fetcher: HttpFetcher
    feed: FeedConfig
    record: SourceRecord = field(default_factory=lambda: SourceRecord("unodc"))
    now: datetime = T0

    async def poll(self) -> PollOutcome:
        outcome = await poll_feed(self.fetcher, self.feed, self.record, self.now, TZ, OPS)
        if outcome.changed:
            self.record = outcome.record
        self.now += self.feed.every
        return outcome


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


@pytest.fixture
async def poller(server: FeedServer) -> AsyncIterator[Poller]:
    async with HttpFetcher() as fetcher:
        yield Poller(fetcher, feed_config(server.url(PATH)))


ParseFunction = Callable[[bytes, str | None], ParsedFeed | ParseFailed]


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body that ``poll_feed`` hands to the parser, in order."""
    calls: list[bytes] = []
    real: ParseFunction = parse_feed

    def counting(body: bytes, content_type: str | None = None) -> ParsedFeed | ParseFailed:
        calls.append(body)
        return real(body, content_type)

    monkeypatch.setattr(bot.sources.feeds, "parse_feed", counting)
    return calls


def news(outcome: PollOutcome) -> list[Alert]:
    return [a for a in outcome.alerts if a.kind == "news"]


def health(outcome: PollOutcome) -> list[Alert]:
    return [a for a in outcome.alerts if a.kind == "source-health"]


# ---------------------------------------------------------------------- new items


async def test_first_poll_posts_nothing_and_remembers_every_item(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1, etag='"v1"')
    outcome = await poller.poll()

    assert outcome.outcome == "ok"
    assert outcome.alerts == ()
    assert outcome.changed
    assert outcome.items == 2
    assert poller.record.feed.initialized
    assert set(poller.record.feed.seen) == {"n1", "n2"}
    assert poller.record.validators.etag == '"v1"'


async def test_a_new_matching_item_alerts_exactly_once(server: FeedServer, poller: Poller) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    new = item("n3", "States sign the UN Cybercrime Convention", link="https://unodc.org/n3")
    unrelated = item("n4", "World Drug Report published")
    server.serve(PATH, rss(new, unrelated, *OLD_ITEMS))

    second = await poller.poll()
    third = await poller.poll()  # the same document again

    assert second.outcome == "ok"
    (alert,) = second.alerts
    assert alert.kind == "news"
    assert alert.title == "States sign the UN Cybercrime Convention"
    assert alert.url == "https://unodc.org/n3"
    assert alert.channels == ("alerts",)
    assert {"n3", "n4"} <= set(poller.record.feed.seen)
    assert third.alerts == ()


async def test_an_edited_title_of_an_old_item_does_not_alert(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    edited = item("n2", "Ad Hoc Committee adopts its report on the cybercrime convention")
    server.serve(PATH, rss(OLD_ITEMS[0], edited))

    outcome = await poller.poll()

    assert outcome.outcome == "ok"  # a new body, parsed: the item is known by its guid
    assert outcome.alerts == ()
    assert set(poller.record.feed.seen) == {"n1", "n2"}


async def test_items_without_guid_and_duplicates_alert_once_each(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    by_link = item(None, "Cybercrime treaty: civil society statement", link="https://e.org/a")
    by_title = item(
        None, "Cybercrime treaty: ratification tracker", pub="Sun, 01 Mar 2026 10:00:00 GMT"
    )
    by_guid = item("n5", "Cybercrime treaty: second session dates")
    server.serve(PATH, rss(by_link, by_title, by_guid, by_link, by_title, by_guid, *OLD_ITEMS))

    second = await poller.poll()
    # the same items in another order: a new body, parsed again, with the same keys
    server.serve(PATH, rss(by_guid, *OLD_ITEMS, by_title, by_link))
    third = await poller.poll()

    assert second.outcome == "ok"
    assert sorted(a.title for a in second.alerts) == [
        "Cybercrime treaty: civil society statement",
        "Cybercrime treaty: ratification tracker",
        "Cybercrime treaty: second session dates",
    ]
    seen = set(poller.record.feed.seen)
    assert {"https://e.org/a", "n5"} <= seen
    assert len([key for key in seen if key.startswith("sha256:")]) == 1
    assert third.outcome == "ok"
    assert third.alerts == ()


async def test_a_json_feed_works(server: FeedServer, poller: Poller) -> None:
    def json_feed(*ids: int) -> bytes:
        items = ",".join(
            f'{{"id": "j{i}", "url": "https://e.org/j{i}", '
            f'"title": "Cybercrime convention update {i}", '
            f'"content_text": "Update {i}", "date_published": "2026-03-0{i}T10:00:00Z"}}'
            for i in ids
        )
        return (
            '{"version": "https://jsonfeed.org/version/1.1", "title": "Treaty watch", '
            f'"items": [{items}]}}'
        ).encode()

    server.serve(PATH, json_feed(1, 2), content_type="application/feed+json")
    first = await poller.poll()
    server.serve(PATH, json_feed(3, 1, 2), content_type="application/feed+json")
    second = await poller.poll()

    assert first.outcome == "ok"
    assert first.alerts == ()
    assert set(poller.record.feed.seen) == {"j1", "j2", "j3"}
    (alert,) = second.alerts
    assert alert.title == "Cybercrime convention update 3"
    assert alert.url == "https://e.org/j3"


# ---------------------------------------------------------- bursts and re-issues


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


def story(n: int, *, guid: str | None = None, pub: datetime | None = None) -> str:
    """Item ``n`` of a publisher: its title and link are the story's, its guid may change."""
    return item(
        guid if guid is not None else f"s{n}",
        f"Cybercrime convention story {n}",
        link=f"https://www.unodc.org/news/story-{n}",
        pub=http_date(pub) if pub is not None else None,
    )


def listed_links(alerts: list[Alert]) -> list[str]:
    """The links grouped alerts list, in order."""
    return [
        str(entry[0].href)
        for alert in alerts
        for block in alert.body
        if isinstance(block, Bullets)
        for entry in block.items
    ]


async def test_a_burst_of_30_items_published_after_the_last_poll_reaches_the_channel_whole(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()  # at T0: the last successful poll
    burst = [story(n, pub=T0 + timedelta(seconds=20 * n)) for n in range(30)]
    server.serve(PATH, rss(*reversed(burst), *OLD_ITEMS))
    outcome = await poller.poll()
    again = await poller.poll()

    alerts = news(outcome)
    assert len(alerts) == 2 and all(a.id.startswith("news-group:unodc:") for a in alerts)
    assert all(a.channels == ("alerts",) for a in alerts)
    links = [f"https://www.unodc.org/news/story-{n}" for n in range(30)]
    assert listed_links(alerts) == links  # exactly the 30, each once, oldest first
    for alert in alerts:
        assert len(listed_links([alert])) <= GROUP_MAX_ITEMS
        assert len(alert.text) <= GROUP_MAX_CHARS
        # and each part fits each platform whole: nothing is cut on Slack or on Matrix
        sections, _ = render_blocks(alert_rich(alert), alert.url)
        slack_text = "\n".join(block["text"]["text"] for block in sections)
        _, matrix_html = render_message(alert_rich(alert))
        for link in listed_links([alert]):
            assert f"<{link}|" in slack_text and f'href="{link}"' in matrix_html
    assert len(outcome.news) == 30
    assert again.alerts == ()


async def test_a_reissue_of_200_old_items_under_new_ids_is_one_summary(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    # a publisher re-issues its archive: ids never seen, dated weeks before the last poll
    archive = [story(n, guid=f"r{n}", pub=T0 - timedelta(days=30, hours=n)) for n in range(200)]
    server.serve(PATH, rss(*archive))
    outcome = await poller.poll()

    (summary,) = outcome.alerts
    assert summary.id.startswith("news-reissue:unodc:")
    assert summary.title == "UNODC news re-issued 200 items: not posted again"
    assert summary.text == (
        "UNODC news re-issued 200 items older than its last successful poll "
        "(Mon 02 Mar 2026, 10:00 CET) under new ids. They are not posted again."
    )
    assert outcome.news == ()
    assert len(poller.record.feed.seen) == 202


async def test_the_same_stories_under_new_ids_without_dates_are_one_summary(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, rss(*(story(n, guid=f"a{n}") for n in range(200))))
    await poller.poll()
    server.serve(PATH, rss(*(story(n, guid=f"b{n}") for n in range(200))))
    outcome = await poller.poll()

    (summary,) = outcome.alerts
    assert summary.text == (
        "UNODC news re-issued 200 items already shown (the same title and link) under new "
        "ids. They are not posted again."
    )
    assert outcome.news == ()


async def test_genuine_items_that_come_with_a_reissue_are_posted(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    archive = [story(n, guid=f"r{n}", pub=T0 - timedelta(days=30, hours=n)) for n in range(200)]
    fresh = [story(1000 + n, pub=T0 + timedelta(minutes=n + 1)) for n in range(3)]
    server.serve(PATH, rss(*reversed(fresh), *archive))
    outcome = await poller.poll()

    summary, *posted = outcome.alerts
    assert summary.id.startswith("news-reissue:")
    assert "3 items that came with them are new: they are posted as usual." in summary.text
    assert [a.url for a in posted] == [
        f"https://www.unodc.org/news/story-{1000 + n}" for n in range(3)
    ]
    assert [n.key for n in outcome.news] == ["s1000", "s1001", "s1002"]


# ------------------------------------------------------------------ nothing new


async def test_not_modified_writes_nothing(
    server: FeedServer, poller: Poller, parses: list[bytes]
) -> None:
    server.serve(PATH, FEED_V1, etag='"v1"')
    await poller.poll()
    before = poller.record

    outcome = await poller.poll()

    assert outcome.outcome == "not_modified"
    assert not outcome.changed
    assert outcome.alerts == ()
    assert (outcome.record.validators, outcome.record.feed) == (before.validators, before.feed)
    assert server.requests[1].headers.get("If-None-Match") == '"v1"'
    assert server.requests[1].status == 304
    assert len(parses) == 1


async def test_the_same_body_without_validators_is_unchanged_and_not_parsed_again(
    server: FeedServer, poller: Poller, parses: list[bytes]
) -> None:
    server.serve(PATH, FEED_V1)  # no ETag, no Last-Modified
    first = await poller.poll()
    second = await poller.poll()

    assert first.outcome == "ok"
    assert second.outcome == "unchanged"
    assert not second.changed
    assert second.alerts == ()
    assert [r.status for r in server.requests] == [200, 200]
    assert "If-None-Match" not in server.requests[1].headers
    assert len(parses) == 1


# ----------------------------------------------------------------- messy feeds


async def test_an_html_page_is_a_parse_error_and_keeps_what_was_seen(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    seen_before = poller.record.feed
    server.html_page(PATH)

    outcome = await poller.poll()

    assert outcome.outcome == "parse_error"
    assert outcome.error is not None and outcome.error.startswith("not a feed")
    assert outcome.alerts == ()
    assert outcome.record.feed == seen_before
    assert outcome.record.health.failures == 1
    # the feed comes back: nothing is news again
    server.serve(PATH, FEED_V1)
    back = await poller.poll()
    assert back.alerts == ()
    assert poller.record.health.failures == 0


async def test_junk_bytes_are_a_parse_error(server: FeedServer, poller: Poller) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    seen_before = poller.record.feed
    server.serve(PATH, random.Random(27).randbytes(8192))

    outcome = await poller.poll()

    assert outcome.outcome == "parse_error"
    assert outcome.error is not None and outcome.error.startswith("not a feed")
    assert outcome.alerts == ()
    assert poller.record.feed == seen_before


NEW_TITLE = "Cybercrime convention: délégués réunis à Vienne"


@pytest.mark.parametrize(
    ("prolog_encoding", "body_encoding", "content_type"),
    [
        ("utf-8", "latin-1", "application/rss+xml"),
        ("utf-8", "utf-8", "application/rss+xml; charset=iso-8859-1"),
        (None, "cp1252", "application/rss+xml; charset=utf-8"),
        ("x-no-such-charset", "utf-8", "application/rss+xml"),
        ("utf-16", "utf-8", "text/xml"),
    ],
    ids=[
        "declared-utf8-sent-latin1",
        "header-latin1-sent-utf8",
        "header-utf8-sent-cp1252",
        "unknown-charset",
        "declared-utf16-sent-utf8",
    ],
)
async def test_a_wrong_declared_charset_still_reads(
    server: FeedServer,
    poller: Poller,
    prolog_encoding: str | None,
    body_encoding: str,
    content_type: str,
) -> None:
    prolog = f'<?xml version="1.0" encoding="{prolog_encoding}"?>\n' if prolog_encoding else ""

    def body(*items: str) -> bytes:
        return rss(*items, prolog=prolog).decode().encode(body_encoding)

    server.serve(PATH, body(*OLD_ITEMS), content_type=content_type)
    first = await poller.poll()
    server.serve(PATH, body(item("n6", NEW_TITLE), *OLD_ITEMS), content_type=content_type)
    second = await poller.poll()

    assert first.outcome == "ok"
    assert set(poller.record.feed.seen) == {"n1", "n2", "n6"}
    (alert,) = second.alerts
    assert alert.title == NEW_TITLE


async def test_truncated_xml_yields_the_complete_items_and_the_cut_one_alerts_once(
    server: FeedServer, poller: Poller
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    complete = item("n7", "Cybercrime convention: first ratification", link="https://e.org/7")
    cut = item(
        "n8",
        "Cybercrime convention: second ratification",
        link="https://e.org/8",
        description="Deposited with the Secretary-General",
    )
    whole = rss(complete, cut, *OLD_ITEMS)
    # the connection dropped after the title and link of the second item
    truncated = whole[: whole.index(b"<description>Deposited")]
    server.serve(PATH, truncated)
    partial = await poller.poll()
    server.serve(PATH, whole)
    repaired = await poller.poll()

    assert partial.outcome == "ok"
    assert [a.title for a in partial.alerts] == ["Cybercrime convention: first ratification"]
    assert "n7" in poller.record.feed.seen
    assert [a.title for a in repaired.alerts] == ["Cybercrime convention: second ratification"]
    assert set(poller.record.feed.seen) == {"n1", "n2", "n7", "n8"}


# ----------------------------------------------------------------- hostile XML


def billion_laughs() -> bytes:
    levels = "".join(f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">\n' for n in range(1, 10))
    prolog = '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol0 "lol">\n' + levels + "]>\n"
    return rss(item("b1", "Cybercrime &lol9;", description="&lol9;"), *OLD_ITEMS, prolog=prolog)


def quadratic_blowup() -> bytes:
    prolog = '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "' + "a" * 100_000 + '">\n]>\n'
    return rss(
        item("q1", "Cybercrime quadratic", description="&a;" * 1000), *OLD_ITEMS, prolog=prolog
    )


def quadratic_blowup_behind_a_comment() -> bytes:
    # feedparser ends the prolog at the first "<" and a letter, so it neither sees nor
    # removes this declaration, and hands the document as it is to expat
    prolog = (
        '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!-- <x -->\n<!ENTITY a "'
        + "a" * 100_000
        + '">\n]>\n'
    )
    return rss(
        item("q1", "Cybercrime quadratic", description="&a;" * 1000), *OLD_ITEMS, prolog=prolog
    )


@pytest.mark.parametrize(
    "bomb", [billion_laughs, quadratic_blowup, quadratic_blowup_behind_a_comment]
)
async def test_entity_bombs_are_not_expanded(
    server: FeedServer, poller: Poller, bomb: Callable[[], bytes]
) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    seen_before = poller.record.feed
    document = bomb()
    server.serve(PATH, document)

    tracemalloc.start()
    try:
        outcome = await poller.poll()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # coarse: well under what either bomb expands to (1 GB and 100 MB of text)
    assert peak < 32 * MB, f"peak Python allocations {peak / MB:.0f} MB"
    assert "lollol" not in repr(outcome)
    assert "a" * 200_000 not in repr(outcome)
    assert outcome.outcome == "parse_error"  # the feed is marked bad, and says why
    assert outcome.error is not None and "entit" in outcome.error
    assert outcome.alerts == ()
    assert poller.record.feed == seen_before


@pytest.mark.parametrize("attack", ["file-entity", "parameter-entity", "url-entity", "url-dtd"])
async def test_external_entities_neither_read_files_nor_fetch_urls(
    server: FeedServer, poller: Poller, tmp_path: Path, attack: str
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-5f2c91\n")
    server.serve("/secret.txt", "SECRET-MARKER-5f2c91\n", content_type="text/plain")
    server.serve("/evil.dtd", '<!ENTITY leak "SECRET-MARKER-5f2c91">\n', content_type="text/plain")
    prolog = {
        "file-entity": f'<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{secret.as_uri()}">\n]>\n',
        "parameter-entity": f'<!DOCTYPE rss [\n<!ENTITY % p SYSTEM "{secret.as_uri()}">\n%p;\n]>\n',
        "url-entity": f'<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{server.url("/secret.txt")}">\n]>\n',
        "url-dtd": f'<!DOCTYPE rss SYSTEM "{server.url("/evil.dtd")}">\n',
    }[attack]
    reference = "&leak;" if attack == "url-dtd" else "&xxe;"
    server.serve(PATH, FEED_V1)
    await poller.poll()
    server.serve(
        PATH,
        rss(
            item("x1", f"Cybercrime {reference}", description=reference),
            *OLD_ITEMS,
            prolog='<?xml version="1.0"?>\n' + prolog,
        ),
    )

    outcome = await poller.poll()

    assert "SECRET-MARKER" not in repr(outcome)
    assert {r.path for r in server.requests} == {PATH}  # nothing fetched on the feed's behalf
    if attack == "url-dtd":  # no entity declared in the document: it is read, not expanded
        assert outcome.outcome == "ok"
        (alert,) = outcome.alerts
        assert alert.title.startswith("Cybercrime")
    else:
        assert outcome.outcome == "parse_error"
        assert outcome.alerts == ()


# --------------------------------------------------------------- source health


async def test_failures_alert_once_and_recovery_once(server: FeedServer, poller: Poller) -> None:
    server.serve(PATH, FEED_V1)
    await poller.poll()
    server.status(PATH, 500, body="Internal Server Error")

    failing = [await poller.poll() for _ in range(5)]
    server.serve(PATH, FEED_V1)
    recovered = await poller.poll()
    steady = await poller.poll()

    assert [o.outcome for o in failing] == ["http_error"] * 5
    assert [len(o.alerts) for o in failing] == [0, 0, 1, 0, 0]
    (down,) = health(failing[2])
    assert "failing" in down.title
    assert down.channels == ("ops",)
    assert "HTTP 500" in down.text
    (up,) = recovered.alerts
    assert up.kind == "source-health"
    assert "recovered" in up.title
    assert news(recovered) == []  # the seen items survived the outage
    assert set(poller.record.feed.seen) == {"n1", "n2"}
    assert poller.record.health.failures == 0
    assert steady.alerts == ()
