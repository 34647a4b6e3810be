"""Parsing off the loop: in worker processes for large bodies, with the same items as
feedparser's defaults, and a dying worker costs only its own body."""

from __future__ import annotations

import os
from typing import Any

import feedparser
import pytest

from bot.sources.feeds import ParsedFeed, html_to_text, item_key, parse_feed
from bot.sources.parsing import IN_PROCESS_BELOW, WORKER_NICENESS, ParserCrashed, Parsers


def _rss(n: int) -> bytes:
    """A feed large enough to go to a worker: guids, permalinks, link-only and bare items,
    HTML titles and summaries with scripts, relative links and entities."""
    items = []
    for i in range(n):
        summary = (
            f"&lt;p&gt;Paragraph {i} about the &lt;b&gt;cybercrime&lt;/b&gt; convention, "
            f'&lt;a href="/relative/{i}"&gt;relative&lt;/a&gt; and '
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; more.&lt;/p&gt;" * 8
        )
        if i % 4 == 0:
            ident = f"<guid isPermaLink='false'>urn:item:{i}</guid>"
        elif i % 4 == 1:
            ident = f"<guid>https://example.org/p/{i}</guid>"
        else:
            ident = ""
        link = "" if i % 4 == 3 else f"<link>https://example.org/a/{i}</link>"
        items.append(
            f"<item>{ident}<title>Item &lt;i&gt;{i}&lt;/i&gt; &amp; co</title>{link}"
            f"<pubDate>Sat, 28 Nov 2026 0{i % 10}:00:00 GMT</pubDate>"
            f"<description>{summary}</description></item>"
        )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Big</title><link>https://example.org/</link>" + "".join(items) + "</channel></rss>"
    ).encode()


def _atom(n: int) -> bytes:
    entries = "".join(
        f"<entry><id>tag:example.org,2026:{i}</id><title type='html'>A &amp;lt;b&amp;gt;{i}"
        f"&amp;lt;/b&amp;gt;</title><link href='https://example.org/e/{i}'/>"
        f"<updated>2026-11-28T10:{i % 60:02d}:00Z</updated>"
        f"<summary type='html'>{'&lt;p&gt;Text &lt;em&gt;here&lt;/em&gt;&lt;/p&gt;' * 20}"
        "</summary></entry>"
        for i in range(n)
    )
    return (
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        f"<title>Atom</title><id>urn:atom</id>{entries}</feed>"
    ).encode()


def _with_defaults(body: bytes) -> list[tuple[str, str, str | None, str]]:
    """Key, title, link and summary of every entry as feedparser reads it with its defaults
    (sanitising and URI resolution on)."""
    result = feedparser.parse(body)
    out = []
    for entry in result.entries:
        title = html_to_text(entry.get("title", ""))
        link = entry.get("link")
        date = str(entry.get("published") or entry.get("updated") or "")
        guid = entry.get("id")
        out.append(
            (item_key(guid, link, title, date), title, link, html_to_text(entry.get("summary", "")))
        )
    return out


@pytest.mark.parametrize("body", [_rss(120), _atom(120)], ids=["rss", "atom"])
def test_items_and_identities_are_those_of_feedparser_defaults(body: bytes) -> None:
    parsed = parse_feed(body)
    assert isinstance(parsed, ParsedFeed)
    ours = [(i.key, i.title, i.link, i.summary) for i in parsed.items]
    assert ours == _with_defaults(body)
    assert len({k for k, *_ in ours}) == 120


async def test_large_bodies_parse_in_a_worker_with_the_same_result() -> None:
    body = _rss(200)
    assert len(body) >= IN_PROCESS_BELOW
    parsers = Parsers(workers=2)
    try:
        in_worker = await parsers.run(len(body), parse_feed, body, "application/rss+xml")
        assert parsers.started_pools == 1
        assert in_worker == parse_feed(body, "application/rss+xml")
        small = _rss(2)
        assert len(small) < IN_PROCESS_BELOW
        await parsers.run(len(small), parse_feed, small, None)
    finally:
        parsers.close()


def die_if(marker: str) -> str:
    """Runs in a worker: dies like a process the kernel killed when asked to."""
    if marker == "die":
        os._exit(137)
    return f"pid {os.getpid()} read {marker}"


async def test_a_body_that_kills_its_worker_fails_alone_and_the_pool_recovers() -> None:
    parsers = Parsers(workers=1)
    try:
        with pytest.raises(ParserCrashed, match="died"):
            await parsers.run(IN_PROCESS_BELOW, die_if, "die")
        assert parsers.started_pools == 2  # tried once more in a fresh pool
        answer: Any = await parsers.run(IN_PROCESS_BELOW, die_if, "ok")
        assert answer.endswith("read ok") and not answer.startswith(f"pid {os.getpid()} ")
    finally:
        parsers.close()


async def test_idle_workers_are_stopped_and_started_again_when_needed() -> None:
    parsers = Parsers(workers=1)
    try:
        assert not parsers.close_if_idle(0)  # nothing started yet
        first = await parsers.run(IN_PROCESS_BELOW, die_if, "a")
        assert not parsers.close_if_idle(3600)
        assert parsers.close_if_idle(0)
        second = await parsers.run(IN_PROCESS_BELOW, die_if, "b")
        assert parsers.started_pools == 2 and first.split()[1] != second.split()[1]
    finally:
        parsers.close()


async def test_workers_give_way_to_the_event_loop() -> None:
    parsers = Parsers(workers=1)
    try:
        here = os.nice(0)
        there: Any = await parsers.run(IN_PROCESS_BELOW, os.nice, 0)
        assert there == min(19, here + WORKER_NICENESS) and there > here
        assert os.nice(0) == here  # this process keeps its priority
    finally:
        parsers.close()
