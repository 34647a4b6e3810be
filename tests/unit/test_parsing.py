"""Parsing off the loop: in worker processes for large bodies, with the same items as
feedparser's defaults, and a dying worker costs only its own body."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path
from typing import Any

import feedparser
import pytest

from bot.sources.feeds import ParsedFeed, html_to_text, item_key, parse_feed
from bot.sources.parsing import (
    IN_PROCESS_BELOW,
    QUIET_BELOW,
    THREAD_AT_MOST,
    THREADS_BEFORE_WORKERS,
    WORKER_NICENESS,
    ParserCrashed,
    Parsers,
)


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
        parsers.warm_up()  # as run and once do
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
            await parsers.run(THREAD_AT_MOST + 1, die_if, "die")
        assert parsers.started_pools == 2  # tried once more in a fresh pool
        answer: Any = await parsers.run(THREAD_AT_MOST + 1, die_if, "ok")
        assert answer.endswith("read ok") and not answer.startswith(f"pid {os.getpid()} ")
    finally:
        parsers.close()


_RELEASE = threading.Event()


def hold_here(parent: int) -> int:
    """Runs where ``Parsers`` puts it: in the test's own process, waits until released."""
    if os.getpid() == parent:
        _RELEASE.wait(30)
    return os.getpid()


def _fork_servers() -> set[int]:
    """This process's children that are multiprocessing's fork server."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"multiprocessing.forkserver" in cmdline:
            found.add(int(entry))
    return found


async def test_quiet_workers_stop_with_their_server_and_return_when_bodies_come_at_once() -> None:
    """Workers started with the bot parse the first large bodies; once they parse fewer than
    QUIET_BELOW a period they stop, their fork server too, and a large body is parsed in this
    process; when THREADS_BEFORE_WORKERS are being parsed here at once, workers start again."""
    me = os.getpid()
    parsers = Parsers(workers=1)
    try:
        parsers.warm_up()
        assert await parsers.run(IN_PROCESS_BELOW, hold_here, me) != me
        assert _fork_servers()
        assert not await parsers.close_if_quiet()  # a pool started since: it gets a period
        for _ in range(QUIET_BELOW):
            await parsers.run(IN_PROCESS_BELOW, hold_here, me)
        assert not await parsers.close_if_quiet()  # busy enough
        await parsers.run(IN_PROCESS_BELOW, hold_here, me)
        assert await parsers.close_if_quiet()
        assert not _fork_servers()  # the server went too
        assert not await parsers.close_if_quiet()  # nothing to stop

        _RELEASE.clear()
        here = [
            asyncio.create_task(parsers.run(IN_PROCESS_BELOW, hold_here, me))
            for _ in range(THREADS_BEFORE_WORKERS)
        ]
        await asyncio.sleep(0)  # each task is in its thread now
        assert not _fork_servers() and parsers.started_pools == 1
        elsewhere = await parsers.run(IN_PROCESS_BELOW, hold_here, me)
        assert elsewhere != me and parsers.started_pools == 2
        _RELEASE.set()
        assert await asyncio.gather(*here) == [me] * THREADS_BEFORE_WORKERS
        assert await parsers.close_if_quiet() is False  # started since the last look
        assert await parsers.close_if_quiet()
        assert await parsers.run(THREAD_AT_MOST + 1, hold_here, me) != me  # never here
        small = await parsers.run(IN_PROCESS_BELOW - 1, hold_here, -1)
        assert small == me  # small bodies are always parsed here
    finally:
        _RELEASE.set()
        parsers.close()


async def test_workers_give_way_to_the_event_loop() -> None:
    parsers = Parsers(workers=1)
    try:
        here = os.nice(0)
        there: Any = await parsers.run(THREAD_AT_MOST + 1, os.nice, 0)
        assert there == min(19, here + WORKER_NICENESS) and there > here
        assert os.nice(0) == here  # this process keeps its priority
    finally:
        parsers.close()
