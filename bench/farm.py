"""A loopback feed farm: N feeds, RSS 2.0 and Atom, served from up to 32 loopback addresses.

Real feeds are spread over many hosts, and clients limit their requests per host, so the farm
serves feed ``i`` from ``127.0.0.{i % hosts + 1}``, all addresses on one port (picked by the OS
for the first address and then reused for the others). Every feed is generated from a seed, so
two runs, or two clients measured one after the other after ``reset()``, see the same bytes.

What a feed does, per request:

- after an optional latency (``latency_ms``, also for a 304), it answers 200 with the body,
  gzip-encoded when the client accepts it (pre-compressed once per version, so the farm spends
  little CPU), with ``ETag`` and ``Last-Modified``; a conditional request that matches gets a
  304 (``If-None-Match`` wins over ``If-Modified-Since``, as RFC 9110 says);
- a fraction of the feeds (``no_validators``) sends no validators at all: the same body again
  and again until it changes, as many real servers do, so that a client has to recognise an
  unchanged body by itself;
- a fraction can be broken (``broken``): HTTP 500, an HTML page served as 200, or junk bytes;
  ``hanging`` feeds answer only after ``hang_seconds``.

``advance_round()`` changes a fraction of the healthy feeds (``changed``): ``new_per_change``
new items are put on top and as many of the oldest fall off, so every feed keeps its length.
``advance_feeds(ids)`` changes exactly the feeds named, and can mark the new items' titles (so
that a caller recognises each one where it is posted). ``advertise_hub(url, ids)`` makes feeds
name a WebSub hub in a ``Link`` header (``rel="hub"``, with ``rel="self"`` their own URL).
About ``match_rate`` of all items mention the phrase ``KEYWORD`` (and no other item does), which
lets a caller predict exactly which new items a keyword filter must announce.

The farm counts requests, 200/304/errors, bytes, conditional requests, and the most requests
in flight at once (overall and on one host): a check of the concurrency a client really used.
With ``log_requests`` (``--log-requests``) it also notes the time of every request of every
feed (``request_log()``, ``GET /_farm/requests``), for callers that check who polled what when.

Importable (``FeedFarm`` in an event loop, or ``FarmThread`` to run it in a background thread
while clients run as subprocesses) and runnable::

    python -m bench.farm --feeds 1000 --latency-ms 50 --write-urls /tmp/urls.txt
    curl -X POST http://127.0.0.1:PORT/_farm/advance     # change 10 % of the feeds
    curl http://127.0.0.1:PORT/_farm/stats               # the counters, as JSON

It listens on loopback only and stops by itself after ``--duration`` seconds (or Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web

BrokenMode = Literal["500", "html", "junk", "hang"]
FeedKind = Literal["rss", "atom"]

#: The phrase that a keyword filter of the benchmark looks for. No generated word sequence
#: produces it by chance: "cybercrime" is not in the vocabulary below.
KEYWORD = "cybercrime convention"
#: Generated items are dated before this instant; items added by later rounds after it.
BASE_TIME = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
#: Hard cap on a farm's life when run in a thread (seconds): it never outlives a crashed run.
DEFAULT_LIFETIME = 3600.0

_VOCABULARY = (
    "treaty negotiation delegates member states committee session draft article protocol "
    "ratification signature human rights safeguards surveillance data access cross-border "
    "evidence cooperation privacy encryption journalists researchers civil society "
    "proportionality oversight judicial authorization jurisdiction extradition mutual legal "
    "assistance provisional measures preservation traffic content subscriber information "
    "secretariat chair consultations informal plenary vote consensus amendments reservations "
    "interpretation scope offences computer systems criminalisation security vulnerability "
    "disclosure whistleblowers dissent platforms providers obligations states parties conference "
    "implementation review mechanism capacity building technical assistance observers "
    "stakeholders coalition statement open letter analysis briefing report hearing timeline "
    "Vienna New York Hanoi United Nations General Assembly Office Drugs Crime Geneva OHCHR"
)
_WORDS = tuple(_VOCABULARY.split())
_MOVED_PAGE = (
    "<!DOCTYPE html><html><head><title>Moved</title></head><body>"
    + "<p>Our news now lives on the new website.</p>" * 40
    + "</body></html>"
)
_SITES = ("eff", "hrw", "accessnow", "article19", "privacyint", "apc", "cdt", "icj", "ohchr")


@dataclass(frozen=True, slots=True)
class FarmSettings:
    """How the farm is built. Fractions are of all feeds; everything follows from ``seed``."""

    feeds: int = 1000
    items: int = 35
    hosts: int = 32
    latency_ms: float = 0.0
    changed: float = 0.1
    new_per_change: int = 3
    no_validators: float = 0.2
    atom: float = 0.4
    broken: float = 0.0
    hanging: int = 0
    hang_seconds: float = 60.0
    match_rate: float = 0.25
    gzip: bool = True
    seed: int = 7


@dataclass(frozen=True, slots=True)
class Item:
    key: str  # the RSS guid or Atom id: what a reader keeps as the item's identity
    title: str
    link: str
    summary_html: str
    published: datetime
    matches: bool  # whether title or summary mention KEYWORD


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One state of a feed, rendered once: the bytes served until the next change."""

    items: tuple[Item, ...]
    body: bytes
    gz: bytes
    etag: str
    last_modified: str
    modified_at: datetime
    ever: frozenset[str]  # keys of every item this feed has served so far


@dataclass(slots=True)
class Feed:
    index: int
    id: str
    host: str
    kind: FeedKind
    validators: bool
    broken: BrokenMode | None
    initial: FeedVersion
    version: FeedVersion
    next_item: int
    #: the WebSub hub the feed names in its ``Link`` header (``advertise_hub``)
    hub: str | None = None

    @property
    def path(self) -> str:
        return f"/feeds/{self.id}.xml"

    @property
    def healthy(self) -> bool:
        return self.broken is None


@dataclass(frozen=True, slots=True)
class RoundChange:
    """What ``advance_round`` did: which feeds changed and which new items they got."""

    round: int
    feeds: tuple[str, ...]
    new_items: int
    new_matching_links: tuple[str, ...]
    #: (feed id, title) of every new item
    titles: tuple[tuple[str, str], ...] = ()
    #: ``time.time()`` when the new versions were put in place (served from then on)
    at: float = 0.0


@dataclass(slots=True)
class FarmCounts:
    requests: int = 0
    ok: int = 0  # 200 with a feed body (broken feeds' 200s included)
    not_modified: int = 0  # 304
    errors: int = 0  # 4xx and 5xx
    conditional: int = 0  # requests carrying If-None-Match or If-Modified-Since
    ok_without_validators: int = 0  # 200s of feeds that send no validators
    body_bytes: int = 0  # bytes of bodies sent (compressed when gzip was used)
    gzip: int = 0  # 200s sent gzip-encoded
    peak_in_flight: int = 0  # the most requests being answered at once, all hosts
    peak_per_host: int = 0  # the most requests being answered at once by one host
    by_host: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["by_host"] = dict(self.by_host)
        return data


class _Writer:
    """Plausible news text from a seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def words(self, low: int, high: int) -> list[str]:
        return [self.rng.choice(_WORDS) for _ in range(self.rng.randint(low, high))]

    def sentence(self) -> str:
        words = self.words(9, 22)
        return " ".join(words).capitalize() + "."

    def title(self, matches: bool) -> str:
        words = self.words(5, 11)
        if matches and self.rng.random() < 0.5:
            words.insert(self.rng.randrange(len(words) + 1), KEYWORD)
        return " ".join(words).capitalize()

    def summary(self, matches: bool, link: str) -> str:
        paragraphs = []
        for p in range(self.rng.randint(2, 4)):
            sentences = [self.sentence() for _ in range(self.rng.randint(2, 4))]
            if p == 0 and matches:
                sentences.insert(1, f"The {KEYWORD} is the subject of this update.")
            text = " ".join(escape(s) for s in sentences)
            if self.rng.random() < 0.4:
                word = self.rng.choice(_WORDS)
                text += f' See <a href="{link}#{word}">{escape(word)}</a>.'
            if self.rng.random() < 0.3:
                text += f" <em>{escape(self.sentence())}</em>"
            paragraphs.append(f"<p>{text}</p>")
        return "\n".join(paragraphs)


def _make_item(
    feed_id: str,
    site: str,
    number: int,
    published: datetime,
    rng: random.Random,
    *,
    match_rate: float,
    permalink_guid: bool,
) -> Item:
    writer = _Writer(rng)
    matches = rng.random() < match_rate
    slug = "-".join(writer.words(3, 6)).lower()
    link = f"https://www.{site}.example.org/news/{published:%Y/%m}/{slug}-{number}"
    key = link if permalink_guid else f"tag:{site}.example.org,2026:{feed_id}/item-{number}"
    return Item(
        key=key,
        title=writer.title(matches),
        link=link,
        summary_html=writer.summary(matches, link),
        published=published,
        matches=matches,
    )


def _render_rss(feed_id: str, site: str, items: tuple[Item, ...], built: datetime) -> str:
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">\n<channel>\n'
        f"<title>{escape(site.upper())} news ({feed_id})</title>\n"
        f"<link>https://www.{site}.example.org/</link>\n"
        f'<atom:link href="https://www.{site}.example.org/{feed_id}.xml" rel="self" '
        'type="application/rss+xml"/>\n'
        f"<description>Updates from {escape(site.upper())}</description>\n"
        "<language>en</language>\n"
        f"<lastBuildDate>{format_datetime(built, usegmt=True)}</lastBuildDate>\n"
    ]
    for item in items:
        permalink = "true" if item.key == item.link else "false"
        parts.append(
            "<item>\n"
            f"<title>{escape(item.title)}</title>\n"
            f"<link>{escape(item.link)}</link>\n"
            f"<guid isPermaLink={quoteattr(permalink)}>{escape(item.key)}</guid>\n"
            f"<pubDate>{format_datetime(item.published, usegmt=True)}</pubDate>\n"
            f"<dc:creator>{escape(site)} staff</dc:creator>\n"
            "<category>Cybercrime treaty</category>\n"
            f"<description>{escape(item.summary_html)}</description>\n"
            "</item>\n"
        )
    parts.append("</channel>\n</rss>\n")
    return "".join(parts)


def _render_atom(feed_id: str, site: str, items: tuple[Item, ...], built: datetime) -> str:
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">\n'
        f"<title>{escape(site.upper())} news ({feed_id})</title>\n"
        f"<id>tag:{site}.example.org,2026:{feed_id}</id>\n"
        f'<link href="https://www.{site}.example.org/"/>\n'
        f'<link rel="self" href="https://www.{site}.example.org/{feed_id}.atom"/>\n'
        f"<updated>{built.isoformat()}</updated>\n"
    ]
    for item in items:
        when = item.published.isoformat()
        parts.append(
            "<entry>\n"
            f"<title>{escape(item.title)}</title>\n"
            f"<id>{escape(item.key)}</id>\n"
            f'<link rel="alternate" type="text/html" href={quoteattr(item.link)}/>\n'
            f"<published>{when}</published>\n<updated>{when}</updated>\n"
            f"<author><name>{escape(site)} staff</name></author>\n"
            '<category term="cybercrime-treaty"/>\n'
            f'<summary type="html">{escape(item.summary_html)}</summary>\n'
            "</entry>\n"
        )
    parts.append("</feed>\n")
    return "".join(parts)


class FeedFarm:
    """The feeds, their HTTP servers and their counters.

    ``start``/``stop`` run in one event loop; ``advance_round``, ``reset``, ``counts`` and
    ``reset_counts`` may be called from another thread (state changes take a lock that the
    request handler holds only for a few microseconds).
    """

    def __init__(self, settings: FarmSettings, *, log_requests: bool = False) -> None:
        if not 1 <= settings.hosts <= 254:
            raise ValueError("hosts must be between 1 and 254 (127.0.0.1-127.0.0.254)")
        self.settings = settings
        self.port = 0
        self.round = 0
        self._lock = threading.Lock()
        self._counts = FarmCounts()
        self._in_flight = 0
        self._per_host: Counter[str] = Counter()
        #: feed id -> the wall-clock time of each request, when ``log_requests``
        self.log_requests = log_requests
        self._log: dict[str, list[float]] = {}
        self._runner: web.AppRunner | None = None
        self.feeds = self._build()
        self._by_path = {f.path: f for f in self.feeds}

    # -- content ----------------------------------------------------------------------------

    def _build(self) -> list[Feed]:
        s = self.settings
        rng = random.Random(f"{s.seed}:layout")
        indexes = list(range(s.feeds))
        broken_count = round(s.broken * s.feeds)
        broken = set(rng.sample(indexes, broken_count))
        healthy = [i for i in indexes if i not in broken]
        hanging = set(rng.sample(healthy, min(s.hanging, len(healthy))))
        plain = set(rng.sample(indexes, round(s.no_validators * s.feeds)))
        atom = set(rng.sample(indexes, round(s.atom * s.feeds)))
        modes: tuple[BrokenMode, ...] = ("500", "html", "junk")
        feeds = []
        for i in indexes:
            feed_id = f"feed-{i:04d}"
            site = _SITES[i % len(_SITES)]
            mode: BrokenMode | None = None
            if i in broken:
                mode = modes[len([b for b in broken if b < i]) % len(modes)]
            elif i in hanging:
                mode = "hang"
            item_rng = random.Random(f"{s.seed}:{feed_id}:items")
            permalink = item_rng.random() < 0.3
            items = tuple(
                _make_item(
                    feed_id,
                    site,
                    n,
                    BASE_TIME - timedelta(hours=6 * (s.items - n)),
                    item_rng,
                    match_rate=s.match_rate,
                    permalink_guid=permalink,
                )
                for n in reversed(range(s.items))
            )
            kind: FeedKind = "atom" if i in atom else "rss"
            version = self._render(feed_id, site, kind, items, BASE_TIME, frozenset())
            feeds.append(
                Feed(
                    index=i,
                    id=feed_id,
                    host=f"127.0.0.{i % s.hosts + 1}",
                    kind=kind,
                    validators=i not in plain,
                    broken=mode,
                    initial=version,
                    version=version,
                    next_item=s.items,
                )
            )
        return feeds

    def _render(
        self,
        feed_id: str,
        site: str,
        kind: FeedKind,
        items: tuple[Item, ...],
        when: datetime,
        ever: frozenset[str],
    ) -> FeedVersion:
        text = (_render_atom if kind == "atom" else _render_rss)(feed_id, site, items, when)
        body = text.encode()
        return FeedVersion(
            items=items,
            body=body,
            gz=gzip.compress(body, compresslevel=6, mtime=0),
            etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
            last_modified=format_datetime(when, usegmt=True),
            modified_at=when,
            ever=ever | {item.key for item in items},
        )

    def advance_round(self, fraction: float | None = None) -> RoundChange:
        """Change ``fraction`` (default: the settings') of the healthy feeds; deterministic."""
        s = self.settings
        share = s.changed if fraction is None else fraction
        self.round += 1
        rng = random.Random(f"{s.seed}:round:{self.round}")
        candidates = [f for f in self.feeds if f.broken is None]
        chosen = rng.sample(candidates, round(share * len(candidates)))
        return self._change(chosen, None)

    def advance_feeds(self, ids: Iterable[str], label: str | None = None) -> RoundChange:
        """Change exactly the feeds named (a round of their own); with ``label``, each new
        item's title ends with `` (label)``. Deterministic, like ``advance_round``."""
        by_id = {f.id: f for f in self.feeds}
        chosen = [by_id[i] for i in ids]
        self.round += 1
        return self._change(chosen, label)

    def _change(self, chosen: Sequence[Feed], label: str | None) -> RoundChange:
        s = self.settings
        chosen = sorted(chosen, key=lambda f: f.index)
        when = BASE_TIME + timedelta(minutes=10 * self.round)
        matching: list[str] = []
        titles: list[tuple[str, str]] = []
        updates: list[tuple[Feed, FeedVersion, int]] = []
        for feed in chosen:
            site = _SITES[feed.index % len(_SITES)]
            item_rng = random.Random(f"{s.seed}:{feed.id}:round:{self.round}")
            permalink = feed.version.items[0].key == feed.version.items[0].link
            new = tuple(
                _make_item(
                    feed.id,
                    site,
                    feed.next_item + k,
                    when + timedelta(seconds=k),
                    item_rng,
                    match_rate=s.match_rate,
                    permalink_guid=permalink,
                )
                for k in reversed(range(s.new_per_change))
            )
            if label is not None:
                new = tuple(replace(item, title=f"{item.title} ({label})") for item in new)
            matching.extend(item.link for item in new if item.matches)
            titles.extend((feed.id, item.title) for item in new)
            items = (new + feed.version.items)[: s.items]
            version = self._render(feed.id, site, feed.kind, items, when, feed.version.ever)
            updates.append((feed, version, feed.next_item + s.new_per_change))
        with self._lock:
            for feed, version, next_item in updates:
                feed.version = version
                feed.next_item = next_item
            at = time.time()
        return RoundChange(
            self.round,
            tuple(f.id for f in chosen),
            len(chosen) * s.new_per_change,
            tuple(matching),
            tuple(titles),
            at,
        )

    def advertise_hub(self, hub: str | None, ids: Iterable[str] | None = None) -> None:
        """Make the feeds named (default: all) name ``hub`` as their WebSub hub (``None``: no
        hub), in a ``Link`` header of each answer."""
        wanted = None if ids is None else set(ids)
        with self._lock:
            for feed in self.feeds:
                if wanted is None or feed.id in wanted:
                    feed.hub = hub

    def reset(self) -> None:
        """Back to the initial content (round 0), so that the next client sees the same feeds."""
        with self._lock:
            for feed in self.feeds:
                feed.version = feed.initial
                feed.next_item = self.settings.items
            self.round = 0

    # -- what a caller checks against -------------------------------------------------------

    def url(self, feed: Feed) -> str:
        return f"http://{feed.host}:{self.port}{feed.path}"

    def urls(self) -> list[str]:
        return [self.url(f) for f in self.feeds]

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.{i + 1}" for i in range(self.settings.hosts)]

    def expected_keys(self) -> dict[str, frozenset[str]]:
        """Per healthy feed id: every item key it has served since the last ``reset``."""
        return {f.id: f.version.ever for f in self.feeds if f.healthy}

    def counts(self) -> FarmCounts:
        with self._lock:
            c = self._counts
            return replace(c, by_host=Counter(c.by_host))

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = FarmCounts()
            self._log = {}

    def request_log(self) -> dict[str, list[float]]:
        """Per feed id, the wall-clock time (``time.time()``) of each request since the last
        ``reset_counts`` (empty unless ``log_requests``)."""
        with self._lock:
            return {feed: list(times) for feed, times in self._log.items()}

    # -- serving ----------------------------------------------------------------------------

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/_farm/stats", self._stats)
        app.router.add_get("/_farm/requests", self._requests)
        app.router.add_post("/_farm/advance", self._advance)
        app.router.add_post("/_farm/reset", self._reset)
        app.router.add_get("/feeds/{name}", self._feed)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        sockets = _bind_all(self.hosts, port)
        self.port = sockets[0].getsockname()[1]
        try:
            for sock in sockets:
                await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FeedFarm:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _feed(self, request: web.Request) -> web.StreamResponse:
        feed = self._by_path.get(request.path)
        host = (request.host or "").rsplit(":", 1)[0]
        with self._lock:
            self._counts.requests += 1
            self._counts.by_host[host] += 1
            self._in_flight += 1
            self._per_host[host] += 1
            self._counts.peak_in_flight = max(self._counts.peak_in_flight, self._in_flight)
            self._counts.peak_per_host = max(self._counts.peak_per_host, self._per_host[host])
            if self.log_requests and feed is not None:
                self._log.setdefault(feed.id, []).append(time.time())
        try:
            if self.settings.latency_ms > 0:
                await asyncio.sleep(self.settings.latency_ms / 1000)
            if feed is not None and feed.broken == "hang":
                await asyncio.sleep(self.settings.hang_seconds)
            with self._lock:
                return self._respond(feed, request)
        finally:
            with self._lock:
                self._in_flight -= 1
                self._per_host[host] -= 1

    def _respond(self, feed: Feed | None, request: web.Request) -> web.Response:
        """The response for one request; called with the lock held."""
        c = self._counts
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if inm is not None or ims is not None:
            c.conditional += 1
        if feed is None or feed.broken == "500":
            c.errors += 1
            if feed is None:
                return web.Response(status=404, text="not found\n")
            return web.Response(status=500, text="Internal Server Error\n")
        if feed.broken == "html":
            c.ok += 1
            page = _MOVED_PAGE
            c.body_bytes += len(page)
            return web.Response(text=page, content_type="text/html")
        if feed.broken == "junk":
            c.ok += 1
            junk = random.Random(f"junk:{feed.id}").randbytes(20_000)
            c.body_bytes += len(junk)
            return web.Response(
                body=b"<?xml version='1.0'?><rss><chan" + junk,
                headers={"Content-Type": "application/rss+xml"},
            )
        v = feed.version
        headers = {
            "Content-Type": "application/atom+xml; charset=utf-8"
            if feed.kind == "atom"
            else "application/rss+xml; charset=utf-8"
        }
        if feed.hub is not None:
            headers["Link"] = f'<{feed.hub}>; rel="hub", <{self.url(feed)}>; rel="self"'
        if feed.validators:
            headers["ETag"] = v.etag
            headers["Last-Modified"] = v.last_modified
            if _not_modified(v, inm, ims):
                c.not_modified += 1
                return web.Response(status=304, headers=headers)
        body = v.body
        if self.settings.gzip and "gzip" in request.headers.get("Accept-Encoding", "").lower():
            body = v.gz
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
            c.gzip += 1
        c.ok += 1
        if not feed.validators:
            c.ok_without_validators += 1
        c.body_bytes += len(body)
        return web.Response(body=body, headers=headers)

    async def _stats(self, request: web.Request) -> web.Response:
        data = self.counts().as_dict()
        data["round"] = self.round
        return web.json_response(data)

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.request_log())

    async def _advance(self, request: web.Request) -> web.Response:
        raw = request.query.get("fraction")
        change = await asyncio.to_thread(self.advance_round, float(raw) if raw else None)
        return web.json_response(
            {"round": change.round, "feeds": len(change.feeds), "new_items": change.new_items}
        )

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        self.reset_counts()
        return web.json_response({"round": 0})


def _not_modified(v: FeedVersion, inm: str | None, ims: str | None) -> bool:
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or v.etag in tags
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        return since >= v.modified_at.replace(microsecond=0)
    return False


def _bind_all(hosts: list[str], port: int) -> list[socket.socket]:
    """Sockets bound to one port on every address: the OS picks it for the first one."""
    for _ in range(50):
        sockets: list[socket.socket] = []
        try:
            for host in hosts:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port or (sockets[0].getsockname()[1] if len(sockets) > 1 else 0)))
            return sockets
        except OSError:
            for sock in sockets:
                sock.close()
            if port:
                raise
    raise OSError("no port free on every farm address")


class FarmThread:
    """Runs a ``FeedFarm`` on its own event loop in a daemon thread.

    ``with FarmThread(farm):`` returns once the farm listens; leaving the block stops it. It
    also stops by itself after ``lifetime`` seconds.
    """

    def __init__(self, farm: FeedFarm, *, lifetime: float = DEFAULT_LIFETIME) -> None:
        self.farm = farm
        self.lifetime = lifetime
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="feed-farm", daemon=True)

    def __enter__(self) -> FeedFarm:
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self.farm

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already (lifetime)
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported to the thread that waits in __enter__
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.farm.start()
        self._ready.set()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lifetime):
                    await self._stop.wait()
        finally:
            await self.farm.stop()


# ------------------------------------------------------------------------------- standalone


def add_farm_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that build a farm, shared with ``bench.run``."""
    d = FarmSettings()
    parser.add_argument("--feeds", type=int, default=d.feeds, help="number of feeds")
    parser.add_argument("--items", type=int, default=d.items, help="items per feed")
    parser.add_argument("--hosts", type=int, default=d.hosts, help="loopback addresses (1-254)")
    parser.add_argument(
        "--latency-ms", type=float, default=50.0, help="delay before each response (ms)"
    )
    parser.add_argument(
        "--changed", type=float, default=d.changed, help="fraction of feeds changed per round"
    )
    parser.add_argument(
        "--new-per-change", type=int, default=d.new_per_change, help="new items per change"
    )
    parser.add_argument(
        "--no-validators",
        type=float,
        default=d.no_validators,
        help="fraction of feeds sent without ETag/Last-Modified",
    )
    parser.add_argument("--atom", type=float, default=d.atom, help="fraction of Atom feeds")
    parser.add_argument(
        "--broken", type=float, default=d.broken, help="fraction of broken feeds (500/HTML/junk)"
    )
    parser.add_argument("--hanging", type=int, default=d.hanging, help="number of hanging feeds")
    parser.add_argument(
        "--hang-seconds", type=float, default=d.hang_seconds, help="how long a hanging feed waits"
    )
    parser.add_argument("--no-gzip", action="store_true", help="never gzip bodies")
    parser.add_argument("--seed", type=int, default=d.seed)


def settings_from(args: argparse.Namespace) -> FarmSettings:
    return FarmSettings(
        feeds=args.feeds,
        items=args.items,
        hosts=args.hosts,
        latency_ms=args.latency_ms,
        changed=args.changed,
        new_per_change=args.new_per_change,
        no_validators=args.no_validators,
        atom=args.atom,
        broken=args.broken,
        hanging=args.hanging,
        hang_seconds=args.hang_seconds,
        gzip=not args.no_gzip,
        seed=args.seed,
    )


def describe(farm: FeedFarm) -> dict[str, object]:
    """Sizes and shares of the farm's feeds, for reports."""
    feeds = farm.feeds
    sizes = sorted(len(f.version.body) for f in feeds if f.healthy)
    gz = sum(len(f.version.gz) for f in feeds if f.healthy)
    return {
        "feeds": len(feeds),
        "hosts": farm.settings.hosts,
        "port": farm.port,
        "rss": sum(1 for f in feeds if f.kind == "rss"),
        "atom": sum(1 for f in feeds if f.kind == "atom"),
        "without_validators": sum(1 for f in feeds if not f.validators and f.healthy),
        "broken": sum(1 for f in feeds if f.broken not in (None, "hang")),
        "hanging": sum(1 for f in feeds if f.broken == "hang"),
        "items_per_feed": farm.settings.items,
        "body_kib_median": round(sizes[len(sizes) // 2] / 1024, 1) if sizes else 0,
        "body_kib_max": round(sizes[-1] / 1024, 1) if sizes else 0,
        "body_mib_total": round(sum(sizes) / 2**20, 1),
        "gzip_mib_total": round(gz / 2**20, 1),
        "latency_ms": farm.settings.latency_ms,
    }


async def _serve(
    farm: FeedFarm, duration: float, advance_every: float, port: int, write_urls: str | None
) -> None:
    await farm.start(port)
    if write_urls:
        await asyncio.to_thread(Path(write_urls).write_text, "\n".join(farm.urls()) + "\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = f"http://127.0.0.1:{farm.port}"
    print(json.dumps(describe(farm)), flush=True)
    print(f"feeds on {farm.hosts[0]}-{farm.hosts[-1]}, port {farm.port}", flush=True)
    print(f"stats: curl {base}/_farm/stats   advance: curl -X POST {base}/_farm/advance")
    print(f"stopping by itself in {duration:g}s (or Ctrl-C)", flush=True)
    try:
        async with asyncio.timeout(duration):
            while not stop.is_set():
                if advance_every > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(advance_every):
                            await stop.wait()
                    if not stop.is_set():
                        change = await asyncio.to_thread(farm.advance_round)
                        print(
                            f"round {change.round}: {len(change.feeds)} feeds changed", flush=True
                        )
                else:
                    await stop.wait()
    except TimeoutError:
        pass
    finally:
        await farm.stop()
        print(json.dumps(farm.counts().as_dict()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.farm", description="Serve a loopback feed farm."
    )
    add_farm_arguments(parser)
    parser.add_argument("--port", type=int, default=0, help="port on every address (0: any)")
    parser.add_argument(
        "--duration", type=float, default=600.0, help="stop after this many seconds"
    )
    parser.add_argument(
        "--advance-every", type=float, default=0.0, help="advance a round every N seconds"
    )
    parser.add_argument("--write-urls", metavar="FILE", help="write the feed URLs, one a line")
    parser.add_argument(
        "--log-requests",
        action="store_true",
        help="note every request's time per feed (GET /_farm/requests)",
    )
    args = parser.parse_args(argv)
    farm = FeedFarm(settings_from(args), log_requests=args.log_requests)
    asyncio.run(_serve(farm, args.duration, args.advance_every, args.port, args.write_urls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
