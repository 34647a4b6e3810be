"""One poll of one feed: fetch, recognise unchanged bodies, parse off the loop, plan.

The result is a value: the record to keep, the alerts to queue, and whether anything changed.
Nothing is written here; the caller commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from bot.configuration.models import FeedConfig
from bot.domain.matching import Matcher
from bot.domain.model import (
    Alert,
    ChannelName,
    NewsRecord,
    SourceId,
    SourceRecord,
    Validators,
)
from bot.domain.planner import FeedRule, HealthRule, plan_feed, plan_health
from bot.sources.feeds import ParseFailed, parse_feed
from bot.sources.http import Fetched, FetchFailed, HttpFetcher, NotModified

log = logging.getLogger(__name__)

Outcome = Literal[
    "ok",
    "not_modified",
    "unchanged",
    "http_error",
    "timeout",
    "too_large",
    "connection_error",
    "parse_error",
    "skipped",
]


@dataclass(frozen=True, slots=True)
class PollOutcome:
    source: str
    record: SourceRecord
    alerts: tuple[Alert, ...]
    news: tuple[NewsRecord, ...]
    changed: bool
    outcome: Outcome
    error: str | None = None
    items: int = 0


def feed_rule(feed: FeedConfig) -> FeedRule:
    return FeedRule(
        SourceId(feed.id),
        feed.name,
        tuple(ChannelName(c) for c in feed.channels),
        Matcher.build(feed.match, feed.exclude),
        feed.backfill,
        feed.max_new_items,
    )


def health_rule(feed: FeedConfig, ops: tuple[str, ...]) -> HealthRule:
    return HealthRule(
        feed.id, feed.name, "feed", feed.failures_before_alert, tuple(ChannelName(c) for c in ops)
    )


async def poll_feed(
    fetcher: HttpFetcher,
    feed: FeedConfig,
    record: SourceRecord,
    now: datetime,
    tz: ZoneInfo,
    ops: tuple[str, ...],
    *,
    rule: FeedRule | None = None,
    respect_retry_after: bool = True,
) -> PollOutcome:
    hrule = health_rule(feed, ops)
    if respect_retry_after and record.health.not_before and now < record.health.not_before:
        return PollOutcome(feed.id, record, (), (), False, "skipped")

    result = await fetcher.fetch(feed.url, record.validators)

    if isinstance(result, FetchFailed):
        not_before = now + result.retry_after if result.retry_after else None
        h = plan_health(hrule, record.health, result.reason, now, not_before=not_before)
        return PollOutcome(
            feed.id,
            replace(record, health=h.health),
            h.alerts,
            (),
            True,
            result.kind,
            result.reason,
        )

    if isinstance(result, NotModified):
        h = plan_health(hrule, record.health, None, now)
        return PollOutcome(
            feed.id, replace(record, health=h.health), h.alerts, (), h.changed, "not_modified"
        )

    assert isinstance(result, Fetched)
    body_hash = hashlib.sha256(result.body).hexdigest()
    if body_hash == record.validators.body_hash and record.feed.initialized:
        h = plan_health(hrule, record.health, None, now)
        return PollOutcome(
            feed.id, replace(record, health=h.health), h.alerts, (), h.changed, "unchanged"
        )

    parsed = await asyncio.to_thread(parse_feed, result.body, result.content_type)
    if isinstance(parsed, ParseFailed):
        h = plan_health(hrule, record.health, parsed.reason, now)
        return PollOutcome(
            feed.id,
            replace(record, health=h.health),
            h.alerts,
            (),
            True,
            "parse_error",
            parsed.reason,
        )
    if parsed.warning:
        log.info("feed parsed with a warning source=%s warning=%s", feed.id, parsed.warning)

    plan = plan_feed(rule or feed_rule(feed), record.feed, parsed.items, now, tz)
    h = plan_health(hrule, record.health, None, now)
    validators = Validators(result.etag, result.last_modified, body_hash)
    new_record = SourceRecord(feed.id, validators, plan.state, h.health)
    changed = plan.changed or h.changed or validators != record.validators
    return PollOutcome(
        feed.id,
        new_record,
        plan.alerts + h.alerts,
        plan.news,
        changed,
        "ok",
        None,
        len(parsed.items),
    )
