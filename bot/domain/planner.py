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
from bot.domain.text import render_plain

#: Seen keys no longer in the feed are forgotten after this long.
SEEN_RETENTION = timedelta(days=180)
#: At most this many seen keys per item the feed lists (keys no longer listed go first, oldest
#: first), but never fewer than ``SEEN_AT_LEAST``: what the bot remembers of a feed stays
#: proportional to the feed, however long it runs.
SEEN_PER_ITEM = 10
SEEN_AT_LEAST = 100


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


def _order_oldest_first(items: Sequence[FeedItem]) -> list[FeedItem]:
    """Oldest first: by publication time when known, else reverse document order."""
    indexed = list(enumerate(items))
    indexed.reverse()  # feeds list newest first; undated items keep that order reversed
    if all(item.published is not None for _, item in indexed):
        indexed.sort(key=lambda pair: (pair[1].published, -pair[0]))
    return [item for _, item in indexed]


def plan_feed(
    rule: FeedRule, state: FeedState, items: Sequence[FeedItem], now: datetime, tz: ZoneInfo
) -> FeedPlan:
    """Decide which items are new, which of them to announce, and what to remember.

    - The first successful poll (even an empty one) only remembers what exists, except the
      ``backfill`` newest matching items.
    - An item is new when its key was never seen; an edited title or link keeps its key.
    - More than ``max_new_items`` new matching items in one poll collapse into one summary.
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

    matched: list[tuple[FeedItem, tuple[str, ...]]] = []
    if state.initialized or rule.backfill > 0:  # a first poll only remembers, unless backfill
        for item in _order_oldest_first(new_items):
            terms = rule.matcher.matches(item.title, item.summary)
            if terms is not None:
                matched.append((item, terms))
    if not state.initialized:
        matched = matched[-rule.backfill :] if rule.backfill > 0 else []

    news = tuple(
        NewsRecord(rule.source, item.key, item.title, item.link, item.published, now, terms)
        for item, terms in matched
    )
    if len(matched) > rule.max_new_items:
        alerts: tuple[Alert, ...] = (_news_batch_alert(rule, [m[0] for m in matched], now),)
    else:
        alerts = tuple(_news_alert(rule, item, terms, now, tz) for item, terms in matched)

    new_state = FeedState(initialized=True, seen=seen)
    changed = (not state.initialized) or seen != dict(state.seen)
    return FeedPlan(new_state, alerts, news, changed)


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


def _news_batch_alert(rule: FeedRule, items: Sequence[FeedItem], now: datetime) -> Alert:
    body = messages.news_batch_body(rule.name, items)
    return Alert(
        kind="news",
        id=AlertId(f"news-batch:{rule.source}:{digest(*sorted(i.key for i in items))}"),
        channels=rule.channels,
        source=rule.source,
        title=messages.news_batch_title(rule.name, len(items)),
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
