"""The timeline as an iCalendar feed (RFC 5545) for calendar apps to subscribe to.

``render_calendar(entries, tz=…, prodid=…) -> bytes`` is what ``/calendar.ics`` serves. Each
event of the timeline is one VEVENT (recurring calendar events arrive expanded, one event per
occurrence), so a subscriber sees what the ``sessions`` command answers:

- ``UID`` is a digest of the event's key: the same event keeps it across reschedules, restarts
  and re-reads of its source;
- ``SEQUENCE``, ``CREATED``, ``LAST-MODIFIED`` and ``DTSTAMP`` come from the event's stored
  revision (``Snapshot.revision``), never from the clock: the same timeline always gives the
  same bytes, so an unchanged calendar is recognised by its ETag;
- all-day events are DATE values (the end exclusive, as iCalendar counts), others are in UTC;
- ``STATUS`` is CONFIRMED, TENTATIVE (tentative or postponed) or CANCELLED: a cancelled event
  stays in the calendar, marked so, and subscribers see it struck out rather than vanish;
- ``TRANSP:TRANSPARENT``: a two-week negotiation session does not mark subscribers busy;
- no ``VALARM``: the bot reminds in the channels; a calendar app adds its own alarms.

Text from calendars and YAML files is untrusted. It goes in as TEXT values, which icalendar
escapes (a line break becomes ``\\n``, ``;`` and ``,`` are escaped), after control characters
are removed; a URL is kept only as a plain http(s) address without spaces or control
characters. No event's text can add a property, a parameter or a component.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from icalendar import Calendar, Event

from bot.domain import messages
from bot.domain.model import SessionEvent
from bot.domain.sessions import Revision

#: The domain part of every UID.
UID_DOMAIN = "treaty-bot"
#: DTSTAMP of an event whose revision was never stored (a YAML edit not evaluated yet).
UNKNOWN_STAMP = datetime(1970, 1, 1, tzinfo=UTC)
#: How often subscribers are asked to fetch the calendar again.
REFRESH = timedelta(hours=1)

STATUSES = {
    "scheduled": "CONFIRMED",
    "concluded": "CONFIRMED",
    "tentative": "TENTATIVE",
    "postponed": "TENTATIVE",
    "cancelled": "CANCELLED",
}

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_URL = re.compile(r"https?://[^\s\x00-\x1f\x7f-\x9f]+", re.IGNORECASE)


def event_uid(key: str) -> str:
    """The UID of the event with this key: stable, opaque, unique per key."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@{UID_DOMAIN}"


def plain_text(value: str) -> str:
    """Text as a TEXT value takes it: line breaks as ``\\n``, no other control character."""
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def _url(value: str | None) -> str | None:
    return value if value is not None and _URL.fullmatch(value) else None


def _zones(event: SessionEvent, tz: ZoneInfo) -> list[ZoneInfo]:
    zones = []
    if event.timezone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            zones.append(ZoneInfo(event.timezone))
    return [*zones, tz, ZoneInfo("UTC")]


def _day(value: datetime, zones: list[ZoneInfo]) -> date:
    """The calendar day of an all-day event's midnight, in the zone it is midnight in."""
    for zone in zones:
        local = value.astimezone(zone)
        if local.time() == time(0):
            return local.date()
    return value.astimezone(zones[0]).date()


def _vevent(event: SessionEvent, revision: Revision, tz: ZoneInfo) -> Event:
    vevent = Event()
    vevent.add("uid", event_uid(event.key))
    vevent.add(
        "dtstamp", (revision.modified or revision.first_seen or UNKNOWN_STAMP).astimezone(UTC)
    )
    if revision.first_seen is not None:
        vevent.add("created", revision.first_seen.astimezone(UTC))
    if revision.modified is not None:
        vevent.add("last-modified", revision.modified.astimezone(UTC))
    vevent.add("sequence", revision.sequence)
    title = plain_text(event.title).strip() or messages.CALENDAR_UNTITLED
    if event.status == "postponed":
        title += messages.CALENDAR_POSTPONED
    vevent.add("summary", title)
    if event.all_day:
        zones = _zones(event, tz)
        first = _day(event.start, zones)
        after = _day(event.end, zones) if event.end is not None else first
        vevent.add("dtstart", first)
        vevent.add("dtend", after if after > first else first + timedelta(days=1))
    else:
        vevent.add("dtstart", event.start.astimezone(UTC))
        if event.end is not None and event.end > event.start:
            vevent.add("dtend", event.end.astimezone(UTC))
    if event.location:
        vevent.add("location", plain_text(event.location))
    url = _url(event.url)
    if url is not None:
        vevent.add("url", url)
    if event.description:
        vevent.add("description", plain_text(event.description))
    vevent.add("status", STATUSES.get(event.status, "CONFIRMED"))
    vevent.add("categories", [messages.CALENDAR_CATEGORIES.get(event.kind, "Session")])
    vevent.add("transp", "TRANSPARENT")
    return vevent


def render_calendar(
    entries: Iterable[tuple[SessionEvent, Revision]], *, tz: ZoneInfo, prodid: str
) -> bytes:
    """The calendar of these events, soonest first; ``tz`` is the zone of an all-day event
    that names none (the coalition's)."""
    calendar = Calendar()
    calendar.add("prodid", prodid)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", messages.CALENDAR_NAME)
    calendar.add("name", messages.CALENDAR_NAME)
    calendar.add("x-wr-caldesc", messages.CALENDAR_DESCRIPTION)
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", "PT1H")
    for event, revision in sorted(entries, key=lambda entry: (entry[0].start, entry[0].key)):
        calendar.add_component(_vevent(event, revision, tz))
    data: bytes = calendar.to_ical()
    return data
