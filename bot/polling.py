"""One poll of one feed: fetch, recognise unchanged bodies, parse off the loop, plan.

The result is a value: the record to keep, the alerts to queue, and whether anything changed.
Nothing is written here; the caller commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from bot.configuration.models import CalendarConfig, DepositaryConfig, FeedConfig
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
from bot.domain.sessions import Snapshot, plan_changes
from bot.domain.treaty import EntryIntoForceRule, TreatySnapshot, TreatySource, plan_treaty
from bot.domain.websub import Hub
from bot.sources.http import Fetched, FetchFailed, FetchResult, HttpFetcher, NotModified
from bot.sources.parsed import CalendarFailed, DepositaryFailed, ParseFailed
from bot.sources.parsing import ParserCrashed, Parsers
from bot.sources.websub import discover as discover_hub

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
    snapshot: Snapshot | None = None
    treaty: TreatySnapshot | None = None
    #: how long the server asked to be left alone (Cache-Control max-age, Retry-After)
    wait: timedelta | None = None
    #: items a feed had not listed before: what adaptive polling counts as a change (a body
    #: that differs only by a build date or an edit does not bring a feed's next poll closer)
    new_items: int = 0
    #: the WebSub hub the feed advertises, when the poll looked for one (``hub_checked``)
    hub: Hub | None = None
    hub_checked: bool = False


#: Parsing in threads, for callers that bring no ``Parsers`` of their own.
_THREADS = Parsers(workers=0)


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


def _without_new_content(
    source: str,
    record: SourceRecord,
    hrule: HealthRule,
    result: FetchResult,
    now: datetime,
    *,
    initialized: bool,
) -> PollOutcome | tuple[Fetched, str]:
    """The outcome of a poll that brought nothing new (a failure, a 304, the same body as last
    time), or the fetched body and its digest when there is something to parse."""
    if isinstance(result, FetchFailed):
        not_before = now + result.retry_after if result.retry_after else None
        h = plan_health(hrule, record.health, result.reason, now, not_before=not_before)
        return PollOutcome(
            source,
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
            source,
            replace(record, health=h.health),
            h.alerts,
            (),
            h.changed,
            "not_modified",
            wait=result.wait,
        )
    body_hash = result.digest or hashlib.sha256(result.body).hexdigest()
    if body_hash == record.validators.body_hash and initialized:
        h = plan_health(hrule, record.health, None, now)
        return PollOutcome(
            source,
            replace(record, health=h.health),
            h.alerts,
            (),
            h.changed,
            "unchanged",
            wait=result.wait,
        )
    return result, body_hash


def _parse_failed(
    source: str, record: SourceRecord, hrule: HealthRule, reason: str, now: datetime
) -> PollOutcome:
    h = plan_health(hrule, record.health, reason, now)
    return PollOutcome(
        source, replace(record, health=h.health), h.alerts, (), True, "parse_error", reason
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
    parsers: Parsers | None = None,
    discover: bool = False,
) -> PollOutcome:
    """Fetch and plan one feed. With ``discover``, the feed is fetched whole (not
    conditionally) and the WebSub hub it advertises is part of the outcome."""
    if respect_retry_after and record.health.not_before and now < record.health.not_before:
        return PollOutcome(feed.id, record, (), (), False, "skipped")

    result = await fetcher.fetch(feed.url, None if discover else record.validators)
    outcome = await read_feed(feed, record, result, now, tz, ops, rule=rule, parsers=parsers)
    if discover and isinstance(result, Fetched):
        hub = discover_hub(result.body, result.links, result.url)
        outcome = replace(outcome, hub=hub, hub_checked=True)
    return outcome


async def push_feed(
    feed: FeedConfig,
    record: SourceRecord,
    body: bytes,
    content_type: str | None,
    now: datetime,
    tz: ZoneInfo,
    ops: tuple[str, ...],
    *,
    rule: FeedRule | None = None,
    parsers: Parsers | None = None,
) -> PollOutcome:
    """Plan a body a WebSub hub pushed exactly as a polled one: the same item keys, so nothing
    is posted twice by the next poll or by a replayed push. The validators of the last poll
    are kept (the pushed body may hold only the new entries)."""
    pushed = Fetched(
        body, record.validators.etag, record.validators.last_modified, content_type, feed.url
    )
    return await read_feed(feed, record, pushed, now, tz, ops, rule=rule, parsers=parsers)


async def read_feed(
    feed: FeedConfig,
    record: SourceRecord,
    result: FetchResult,
    now: datetime,
    tz: ZoneInfo,
    ops: tuple[str, ...],
    *,
    rule: FeedRule | None = None,
    parsers: Parsers | None = None,
) -> PollOutcome:
    """Plan what a fetch (or a push) brought: parse off the loop, then ``plan_feed``."""
    hrule = health_rule(feed, ops)
    settled = _without_new_content(
        feed.id, record, hrule, result, now, initialized=record.feed.initialized
    )
    if isinstance(settled, PollOutcome):
        return settled
    fetched, body_hash = settled
    try:
        parsed = await (parsers or _THREADS).feed(fetched.body, fetched.content_type)
    except ParserCrashed as err:
        return _parse_failed(feed.id, record, hrule, str(err), now)
    if isinstance(parsed, ParseFailed):
        return _parse_failed(feed.id, record, hrule, parsed.reason, now)
    if parsed.warning:
        log.info("feed parsed with a warning source=%s warning=%s", feed.id, parsed.warning)

    plan = plan_feed(
        rule or feed_rule(feed),
        record.feed,
        parsed.items,
        now,
        tz,
        last_success=record.health.last_success,
    )
    h = plan_health(hrule, record.health, None, now)
    validators = Validators(fetched.etag, fetched.last_modified, body_hash)
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
        wait=fetched.wait,
        new_items=plan.new_items,
    )


# ------------------------------------------------------------------------------- calendars

#: Occurrences of recurring events are expanded over this window around now.
CALENDAR_PAST = timedelta(days=30)
CALENDAR_AHEAD = timedelta(days=400)
CALENDAR_MAX_EVENTS = 2000
CALENDAR_DEADLINE = 5.0


def _read_file(path: str, max_bytes: int) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"file larger than {max_bytes // 1024} KiB (fetch.max_bytes)")
    return data


async def fetch_calendar(
    fetcher: HttpFetcher, calendar: CalendarConfig | DepositaryConfig, validators: Validators
) -> FetchResult:
    """An http(s) source through the shared fetcher, or a local file, as a fetch result."""
    if not calendar.is_file:
        return await fetcher.fetch(calendar.url, validators)
    try:
        body = await asyncio.to_thread(_read_file, calendar.url, fetcher.max_bytes)
    except FileNotFoundError:
        return FetchFailed(f"file not found: {calendar.url}", "http_error")
    except (OSError, ValueError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        return FetchFailed(f"cannot read {calendar.url}: {reason}", "http_error")
    kind = "text/calendar" if isinstance(calendar, CalendarConfig) else "application/xml"
    return Fetched(body, None, None, kind, calendar.url)


def _health_rule(
    source: CalendarConfig | DepositaryConfig, kind: str, ops: tuple[str, ...]
) -> HealthRule:
    return HealthRule(
        source.id,
        source.name,
        kind,
        source.failures_before_alert,
        tuple(ChannelName(c) for c in ops),
    )


async def _new_body(
    fetcher: HttpFetcher,
    source: CalendarConfig | DepositaryConfig,
    record: SourceRecord,
    hrule: HealthRule,
    now: datetime,
    initialized: bool,
    respect_retry_after: bool,
) -> PollOutcome | tuple[Fetched, str]:
    """The outcome of a poll that brings nothing to parse (backing off, failed, unchanged),
    or the new body and its digest."""
    if respect_retry_after and record.health.not_before and now < record.health.not_before:
        return PollOutcome(source.id, record, (), (), False, "skipped")
    result = await fetch_calendar(fetcher, source, record.validators)
    return _without_new_content(source.id, record, hrule, result, now, initialized=initialized)


async def poll_calendar(
    fetcher: HttpFetcher,
    calendar: CalendarConfig,
    record: SourceRecord,
    snapshot: Snapshot,
    now: datetime,
    tz: ZoneInfo,
    ops: tuple[str, ...],
    *,
    respect_retry_after: bool = True,
    parsers: Parsers | None = None,
) -> PollOutcome:
    """Fetch, parse (bounded) and diff one calendar against its last snapshot."""
    hrule = _health_rule(calendar, "calendar", ops)
    settled = await _new_body(
        fetcher, calendar, record, hrule, now, snapshot.initialized, respect_retry_after
    )
    if isinstance(settled, PollOutcome):
        return settled
    fetched, body_hash = settled
    default_tz = ZoneInfo(calendar.timezone) if calendar.timezone else tz
    try:
        parsed = await (parsers or _THREADS).calendar(
            fetched.body,
            source=calendar.id,
            kind=calendar.kind,
            default_tz=default_tz,
            window_start=now - CALENDAR_PAST,
            window_end=now + CALENDAR_AHEAD,
            max_events=CALENDAR_MAX_EVENTS,
            deadline_seconds=CALENDAR_DEADLINE,
            match=Matcher.build(calendar.match, calendar.exclude)
            if calendar.match or calendar.exclude
            else None,
        )
    except ParserCrashed as err:
        return _parse_failed(calendar.id, record, hrule, str(err), now)
    if isinstance(parsed, CalendarFailed):
        return _parse_failed(calendar.id, record, hrule, parsed.reason, now)
    for warning in parsed.warnings:
        log.warning("calendar event skipped source=%s warning=%s", calendar.id, warning)
    events = [
        replace(e, channels=calendar.channels, lead_times=calendar.lead_times)
        for e in parsed.events
    ]
    plan = plan_changes(
        calendar.id,
        snapshot,
        events,
        now,
        tz,
        complete=not parsed.truncated,
        channels=calendar.channels,
    )
    h = plan_health(hrule, record.health, None, now)
    validators = Validators(fetched.etag, fetched.last_modified, body_hash)
    new_record = replace(record, validators=validators, health=h.health)
    return PollOutcome(
        calendar.id,
        new_record,
        plan.alerts + h.alerts,
        (),
        plan.changed or h.changed or validators != record.validators,
        "ok",
        None,
        len(events),
        snapshot=plan.snapshot if plan.changed else None,
    )


# ------------------------------------------------------------------------------- depositary


async def poll_depositary(
    fetcher: HttpFetcher,
    depositary: DepositaryConfig,
    record: SourceRecord,
    snapshot: TreatySnapshot,
    now: datetime,
    ops: tuple[str, ...],
    *,
    rule: EntryIntoForceRule,
    source: TreatySource,
    respect_retry_after: bool = True,
    parsers: Parsers | None = None,
) -> PollOutcome:
    """Fetch and read the depositary's record; plan its treaty actions against the last one.

    A document that is not the record, or one that lost too many rows, changes nothing and is
    a failed poll (its validators are not kept, so the next poll reads the document again)."""
    hrule = _health_rule(depositary, "depositary", ops)
    settled = await _new_body(
        fetcher, depositary, record, hrule, now, snapshot.initialized, respect_retry_after
    )
    if isinstance(settled, PollOutcome):
        return settled
    fetched, body_hash = settled
    try:
        parsed = await (parsers or _THREADS).depositary(fetched.body)
    except ParserCrashed as err:
        return _parse_failed(depositary.id, record, hrule, str(err), now)
    if isinstance(parsed, DepositaryFailed):
        return _parse_failed(depositary.id, record, hrule, parsed.reason, now)
    plan = plan_treaty(snapshot, parsed.status, now, rule, source)
    if plan.problem is not None:
        return _parse_failed(depositary.id, record, hrule, plan.problem, now)
    h = plan_health(hrule, record.health, None, now)
    validators = Validators(fetched.etag, fetched.last_modified, body_hash)
    new_record = replace(record, validators=validators, health=h.health)
    return PollOutcome(
        depositary.id,
        new_record,
        plan.alerts + h.alerts,
        (),
        plan.changed or h.changed or validators != record.validators,
        "ok",
        None,
        len(parsed.status.participants),
        treaty=plan.snapshot if plan.changed else None,
    )
