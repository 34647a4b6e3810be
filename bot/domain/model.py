"""Domain values. Frozen, slotted, aware datetimes in UTC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal, NewType

from bot.domain.text import Rich

SourceId = NewType("SourceId", str)
AlertId = NewType("AlertId", str)
ChannelName = NewType("ChannelName", str)

AlertKind = Literal[
    "news", "session-reminder", "session-change", "clause-change", "source-health", "treaty-action"
]
SourceKind = Literal["feed", "calendar", "depositary"]
EventKind = Literal["session", "informal", "deadline"]
EventStatus = Literal["scheduled", "tentative", "postponed", "cancelled", "concluded"]
ClauseStatus = Literal["open", "contested", "agreed", "adopted", "reserved", "deferred"]


@dataclass(frozen=True, slots=True)
class Alert:
    """Something to tell one or more logical channels.

    ``id`` is stable: planning the same event twice yields the same id, which is what makes
    delivery idempotent. ``text`` is the plain-text message; ``body`` the same as neutral rich
    text for transports that can format.
    """

    kind: AlertKind
    id: AlertId
    channels: tuple[ChannelName, ...]
    source: str
    title: str
    url: str | None
    text: str
    at: datetime
    body: Rich = ()
    #: when the session, meeting or deadline the alert is about starts (reminders, changes):
    #: what tells an urgent alert from one that can wait through a channel's quiet hours
    event_start: datetime | None = None
    #: what the alert is about, for people who follow it (a treaty action: the state's name)
    subjects: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One entry of a feed, already reduced to plain text."""

    key: str
    title: str
    link: str | None
    summary: str
    published: datetime | None


@dataclass(frozen=True, slots=True)
class NewsRecord:
    """A matched news item, remembered for the ``news`` command."""

    source: SourceId
    key: str
    title: str
    link: str | None
    published: datetime | None
    seen_at: datetime
    matched: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedState:
    """What the bot remembers of one feed's items: their keys and when each was first seen.

    ``fingerprints`` maps a seen key to a short digest of the normalised title and link the item
    had when first seen (items without a link have none): what tells a re-issue of an item under
    a new key. It holds only seen keys, so it is bounded as they are; a state written before
    fingerprints were kept has none, and they fill as the feed is polled.
    """

    initialized: bool = False
    seen: Mapping[str, datetime] = field(default_factory=dict)
    fingerprints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SourceHealth:
    """How polling a source has been going.

    ``failures`` counts consecutive failed polls; ``alerted`` is true while a "failing" alert has
    been sent and no "recovered" alert yet.
    """

    failures: int = 0
    last_success: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failing_since: datetime | None = None
    alerted: bool = False
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class Validators:
    """What lets the next fetch of a source be cheap: HTTP validators and a body digest."""

    etag: str | None = None
    last_modified: str | None = None
    body_hash: str | None = None


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """Everything the bot keeps about one feed or calendar between polls."""

    id: str
    validators: Validators = Validators()
    feed: FeedState = FeedState()
    health: SourceHealth = SourceHealth()


DeliveryState = Literal["pending", "sending", "sent", "failed", "held", "grouped"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert on its way to one logical channel through one transport (an outbox row)."""

    key: str
    seq: int
    alert: Alert
    channel: ChannelName
    transport: str
    state: DeliveryState = "pending"
    attempts: int = 0
    next_try: datetime | None = None
    last_error: str | None = None
    sent_at: datetime | None = None
    #: a ``held`` row waits for its channel's digest or the end of its quiet hours
    #: (``next_try`` says until when); released, it becomes ``grouped`` into one message
    held_for: Literal["digest", "quiet"] | None = None


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A negotiation session, an informal meeting or a deadline, from YAML or a calendar.

    ``key`` identifies the event across versions of its source: ``<source>:<yaml id>`` for
    sessions.yaml, ``<calendar id>:<UID>`` plus ``@<RECURRENCE-ID in UTC>`` for one occurrence
    of a recurring calendar event. ``start``/``end`` are aware UTC; for an all-day event they are
    midnight in ``timezone`` (end exclusive, as in iCalendar). ``timezone`` is the venue's zone.
    """

    key: str
    source: str
    title: str
    start: datetime
    end: datetime | None = None
    kind: EventKind = "session"
    all_day: bool = False
    timezone: str | None = None
    location: str | None = None
    url: str | None = None
    status: EventStatus = "scheduled"
    description: str = ""
    channels: tuple[ChannelName, ...] = ()
    lead_times: tuple[timedelta, ...] | None = None


@dataclass(frozen=True, slots=True)
class Clause:
    """One provision of the Convention and where the coalition stands on it."""

    id: str
    article: str
    title: str
    status: ClauseStatus
    summary: str = ""
    concerns: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    updated: date | None = None


@dataclass(frozen=True, slots=True)
class SourceView:
    """A watched source as the ``feeds`` and ``status`` commands show it."""

    id: str
    name: str
    kind: SourceKind
    url: str
    every: timedelta
    health: SourceHealth
    last_poll: datetime | None = None
    last_outcome: str | None = None
    #: where the source's URL now redirects permanently (the configuration should say so)
    moved_to: str | None = None
    #: when the next poll is due, how it was planned (fixed, adaptive, sessions, backing
    #: off) and the interval adaptive polling has reached
    next_poll: datetime | None = None
    schedule: str | None = None
    interval: timedelta | None = None
    #: a WebSub hub pushes the feed (polling is the safety net, at its longest interval)
    pushed: bool = False


@dataclass(frozen=True, slots=True)
class SourceCounts:
    """How many sources are watched and how many of them fail, for a reply that describes
    only some of them (thousands of sources are counted, not described)."""

    total: int
    failing: int
