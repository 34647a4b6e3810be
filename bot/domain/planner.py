"""Pure decisions: (what we knew, what we see now, the time) -> new state and alerts.

Nothing here performs I/O. The same inputs always give the same outputs, including alert ids,
which is what lets delivery be idempotent across restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain import messages
from bot.domain.matching import Matcher
from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    FeedItem,
    FeedState,
    NewsRecord,
    SourceHealth,
    SourceId,
)
from bot.domain.text import render_plain, render_spans_plain

#: Seen keys no longer in the feed are forgotten after this long.
SEEN_RETENTION = timedelta(days=180)
#: At most this many seen keys per item the feed lists (keys no longer listed go first, oldest
#: first), but never fewer than ``SEEN_AT_LEAST``: what the bot remembers of a feed stays
#: proportional to the feed, however long it runs.
SEEN_PER_ITEM = 10
SEEN_AT_LEAST = 100
#: An item dated more than this before the feed's last successful poll counts as old (the
#: grace covers feeds served from a cache, whose newest items show up a little late).
REISSUE_GRACE = timedelta(hours=1)
#: A burst is posted as grouped messages of at most this many items and this many characters
#: of plain text each: within every platform's limits (Slack: 3,000 characters a section and
#: about 12,000 a message; Matrix: 64 KiB an event), with room for escaping and markup.
GROUP_MAX_ITEMS = 20
GROUP_MAX_CHARS = 3_000


def digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class FeedRule:
    """What the planner needs to know about one configured feed."""

    source: SourceId
    name: str
    channels: tuple[ChannelName, ...]
    matcher: Matcher
    backfill: int = 0
    max_new_items: int = 10


@dataclass(frozen=True, slots=True)
class FeedPlan:
    state: FeedState
    alerts: tuple[Alert, ...]
    news: tuple[NewsRecord, ...]
    changed: bool
    #: items the feed had not listed before (none at a first poll: it only remembers)
    new_items: int = 0


def _order_oldest_first(items: Sequence[FeedItem]) -> list[FeedItem]:
    """Oldest first: by publication time when known, else reverse document order."""
    indexed = list(enumerate(items))
    indexed.reverse()  # feeds list newest first; undated items keep that order reversed
    if all(item.published is not None for _, item in indexed):
        indexed.sort(key=lambda pair: (pair[1].published, -pair[0]))
    return [item for _, item in indexed]


def plan_feed(
    rule: FeedRule,
    state: FeedState,
    items: Sequence[FeedItem],
    now: datetime,
    tz: ZoneInfo,
    *,
    last_success: datetime | None = None,
) -> FeedPlan:
    """Decide which items are new, which of them to announce, and what to remember.

    - The first successful poll (even an empty one) only remembers what exists, except the
      ``backfill`` newest matching items.
    - An item is new when its key was never seen; an edited title or link keeps its key.
    - A new item with the title and link of an item the feed already showed (its fingerprint)
      is a re-issue: it is not posted again.
    - A poll with more than ``max_new_items`` new items, more than half of which are re-issues
      or dated more than ``REISSUE_GRACE`` before ``last_success`` (the feed's last successful
      poll), is a re-issue: those items are not posted either. One alert says how many were
      left out and why.
    - Every other new matching item is posted: one alert each, or, when there are more than
      ``max_new_items``, grouped messages that list every one of them (``plan_groups``).
    """
    unique: dict[str, FeedItem] = {}
    for item in items:
        unique.setdefault(item.key, item)
    current = list(unique.values())

    new_items = [item for item in current if item.key not in state.seen]
    seen = dict(state.seen)
    for item in new_items:
        seen[item.key] = now
    seen = _bounded(seen, set(unique), now)
    # what the feed showed before: the fingerprints kept, and those of the items it still lists
    # (a state without fingerprints gets them from the listing, then keeps them)
    known = dict(state.fingerprints)
    now_fingerprints = {i.key: f for i in current if (f := fingerprint(i)) is not None}
    shown = set(known.values())
    shown.update(f for k, f in now_fingerprints.items() if k in state.seen)
    fingerprints = {k: f for k, f in known.items() if k in seen}
    for key, f in now_fingerprints.items():
        fingerprints.setdefault(key, f)

    matched: list[tuple[FeedItem, tuple[str, ...]]] = []
    if state.initialized or rule.backfill > 0:  # a first poll only remembers, unless backfill
        for item in _order_oldest_first(new_items):
            terms = rule.matcher.matches(item.title, item.summary)
            if terms is not None:
                matched.append((item, terms))
    if not state.initialized:
        matched = matched[-rule.backfill :] if rule.backfill > 0 else []

    alerts: list[Alert] = []
    if state.initialized and new_items:
        repeated = {i.key for i in new_items if now_fingerprints.get(i.key) in shown}
        older = {i.key for i in new_items if i.key not in repeated and _older_than(i, last_success)}
        signature = len(repeated) + len(older)
        reissue = len(new_items) > rule.max_new_items and 2 * signature > len(new_items)
        left_out = repeated | older if reissue else repeated
        kept = [(item, terms) for item, terms in matched if item.key not in left_out]
        dropped = [item for item, _ in matched if item.key in left_out]
        if dropped:
            alerts.append(_reissue_alert(rule, dropped, repeated, last_success, len(kept), now, tz))
        matched = kept

    news = tuple(
        NewsRecord(rule.source, item.key, item.title, item.link, item.published, now, terms)
        for item, terms in matched
    )
    if len(matched) > rule.max_new_items:
        alerts.extend(plan_groups(rule, [m[0] for m in matched], now, tz))
    else:
        alerts.extend(_news_alert(rule, item, terms, now, tz) for item, terms in matched)

    new_state = FeedState(initialized=True, seen=seen, fingerprints=fingerprints)
    changed = (
        (not state.initialized)
        or seen != dict(state.seen)
        or fingerprints != dict(state.fingerprints)
    )
    return FeedPlan(
        new_state, tuple(alerts), news, changed, len(new_items) if state.initialized else 0
    )


def fingerprint(item: FeedItem) -> str | None:
    """A short digest of an item's normalised title and link; ``None`` without a link.

    The same story re-issued under a new id has the same fingerprint: titles compare without
    case or extra spaces, links without scheme, ``www.``, fragment or trailing slash.
    """
    if not item.link or not item.link.strip():
        return None
    title = " ".join(item.title.casefold().split())
    link = item.link.strip().split("#", 1)[0]
    _, sep, rest = link.partition("://")
    if sep:
        host, slash, path = rest.partition("/")
        host = host.lower().removeprefix("www.")
        link = host + slash + path
    return digest(title, link.rstrip("/"))[:12]


def _older_than(item: FeedItem, last_success: datetime | None) -> bool:
    return (
        last_success is not None
        and item.published is not None
        and item.published < last_success - REISSUE_GRACE
    )


def _bounded(seen: dict[str, datetime], present: set[str], now: datetime) -> dict[str, datetime]:
    """The seen keys worth keeping: every key the feed lists, then the newest of the others,
    none older than ``SEEN_RETENTION``, up to the feed's bound."""
    cutoff = now - SEEN_RETENTION
    kept = {k: t for k, t in seen.items() if k in present or t >= cutoff}
    # an empty listing (a feed being republished) says nothing about how long the feed is
    limit = max(SEEN_AT_LEAST, SEEN_PER_ITEM * len(present)) if present else len(kept)
    if len(kept) <= limit:
        return kept
    gone = sorted((t, k) for k, t in kept.items() if k not in present)
    for _, key in gone[: len(kept) - limit]:
        del kept[key]
    return kept


def _news_alert(
    rule: FeedRule, item: FeedItem, terms: tuple[str, ...], now: datetime, tz: ZoneInfo
) -> Alert:
    body = messages.news_body(rule.name, item, terms, tz)
    return Alert(
        kind="news",
        id=AlertId(f"news:{rule.source}:{digest(item.key)}"),
        channels=rule.channels,
        source=rule.source,
        title=item.title,
        url=item.link,
        text=render_plain(body),
        at=now,
        body=body,
    )


def plan_groups(
    rule: FeedRule, items: Sequence[FeedItem], now: datetime, tz: ZoneInfo
) -> tuple[Alert, ...]:
    """A burst as grouped messages listing every item, oldest first, in as few parts as fit
    ``GROUP_MAX_ITEMS`` and ``GROUP_MAX_CHARS`` (an item longer than that alone is a part of
    its own). Each part's id is derived from its items, so planning again gives the same ids."""
    entries = [messages.news_group_entry(item, tz) for item in items]
    total = len(items)
    widest = messages.news_group_body(
        rule.name, [], total=total, first=total, part=total, parts=total
    )
    budget = GROUP_MAX_CHARS - len(render_plain(widest))
    widths = [len(render_spans_plain(entry)) + 3 for entry in entries]  # "• ", line break
    chunks = _chunks(widths, GROUP_MAX_ITEMS, budget)
    # as few parts, but of even sizes (not 14, 14 and 2) where the characters allow it
    for cap in range(-(-total // len(chunks)), GROUP_MAX_ITEMS):
        even = _chunks(widths, cap, budget)
        if len(even) == len(chunks):
            chunks = even
            break
    alerts = []
    for part, chunk in enumerate(chunks, start=1):
        body = messages.news_group_body(
            rule.name,
            [entries[i] for i in chunk],
            total=total,
            first=chunk[0] + 1,
            part=part,
            parts=len(chunks),
        )
        keys = sorted(items[i].key for i in chunk)
        alerts.append(
            Alert(
                kind="news",
                id=AlertId(f"news-group:{rule.source}:{digest(*keys)}"),
                channels=rule.channels,
                source=rule.source,
                title=messages.news_group_title(rule.name, total, part, len(chunks)),
                url=None,
                text=render_plain(body),
                at=now,
                body=body,
            )
        )
    return tuple(alerts)


def _chunks(widths: Sequence[int], most: int, budget: int) -> list[list[int]]:
    """Indexes of ``widths`` cut in order into runs of at most ``most`` items and ``budget``
    characters (an item wider than that alone is a run of its own)."""
    chunks: list[list[int]] = []
    size = 0
    for index, width in enumerate(widths):
        if not chunks or len(chunks[-1]) >= most or size + width > budget:
            chunks.append([])
            size = 0
        chunks[-1].append(index)
        size += width
    return chunks


def _reissue_alert(
    rule: FeedRule,
    dropped: Sequence[FeedItem],
    repeated: set[str],
    last_success: datetime | None,
    posted: int,
    now: datetime,
    tz: ZoneInfo,
) -> Alert:
    again = sum(1 for item in dropped if item.key in repeated)
    body = messages.news_reissue_body(
        rule.name,
        repeated=again,
        older=len(dropped) - again,
        last_success=last_success,
        posted=posted,
        tz=tz,
    )
    return Alert(
        kind="news",
        id=AlertId(f"news-reissue:{rule.source}:{digest(*sorted(i.key for i in dropped))}"),
        channels=rule.channels,
        source=rule.source,
        title=messages.news_reissue_title(rule.name, len(dropped)),
        url=None,
        text=render_plain(body),
        at=now,
        body=body,
    )


@dataclass(frozen=True, slots=True)
class HealthRule:
    source: str
    name: str
    kind: str
    threshold: int
    channels: tuple[ChannelName, ...]


@dataclass(frozen=True, slots=True)
class HealthPlan:
    health: SourceHealth
    alerts: tuple[Alert, ...]
    changed: bool


def plan_health(
    rule: HealthRule,
    health: SourceHealth,
    error: str | None,
    now: datetime,
    *,
    not_before: datetime | None = None,
) -> HealthPlan:
    """Track consecutive failures; one alert when failing starts, one when it recovers.

    ``error`` is ``None`` for a successful poll. ``changed`` is false when nothing worth keeping
    changed (a success after a success), so that a quiet round writes nothing.
    """
    if error is None:
        recovered = health.alerted
        new = SourceHealth(
            last_success=now, last_error=health.last_error, last_error_at=health.last_error_at
        )
        alerts: tuple[Alert, ...] = ()
        if recovered and rule.channels:
            since = health.failing_since or now
            body = messages.health_recovered_body(rule.kind, rule.name, rule.source, since, now)
            alerts = (
                Alert(
                    kind="source-health",
                    id=AlertId(f"health:{rule.source}:up:{since.isoformat()}"),
                    channels=rule.channels,
                    source=rule.source,
                    title=messages.health_recovered_title(rule.kind, rule.name),
                    url=None,
                    text=render_plain(body),
                    at=now,
                    body=body,
                ),
            )
        changed = health.failures > 0 or health.alerted or health.not_before is not None
        return HealthPlan(new, alerts, changed)

    failures = health.failures + 1
    new = replace(
        health,
        failures=failures,
        last_error=error,
        last_error_at=now,
        failing_since=health.failing_since or now,
        not_before=not_before,
    )
    alerts = ()
    if failures >= rule.threshold and not health.alerted:
        new = replace(new, alerted=True)
        if rule.channels:
            since = new.failing_since or now
            body = messages.health_failing_body(
                rule.kind, rule.name, rule.source, failures, error, health.last_success
            )
            alerts = (
                Alert(
                    kind="source-health",
                    id=AlertId(f"health:{rule.source}:down:{since.isoformat()}"),
                    channels=rule.channels,
                    source=rule.source,
                    title=messages.health_failing_title(rule.kind, rule.name),
                    url=None,
                    text=render_plain(body),
                    at=now,
                    body=body,
                ),
            )
    return HealthPlan(new, alerts, True)


def next_poll_delay(every: timedelta, failures: int, cap: timedelta) -> timedelta:
    """The wait before the next poll: ``every``, doubled per consecutive failure up to ``cap``."""
    if failures <= 0:
        return every
    factor: int = 1 << min(failures - 1, 16)
    return min(every * factor, max(cap, every))
