"""Showing instants to people, in a given time zone."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.model import SessionEvent


def format_local(instant: datetime, tz: ZoneInfo) -> str:
    """``Sat 28 Nov 2026, 10:00 CET``."""
    local = _local(instant, tz)
    return local.strftime("%a %d %b %Y, %H:%M ") + (local.tzname() or tz.key)


def _local(instant: datetime, tz: ZoneInfo) -> datetime:
    """``instant`` in ``tz``; at the edges of the calendar (year 9999, from a feed), as it is."""
    try:
        return instant.astimezone(tz)
    except (OverflowError, ValueError):
        return instant


def format_span(
    start: datetime, end: datetime | None, tz: ZoneInfo, *, all_day: bool = False
) -> str:
    """A date range for people. All-day ends are exclusive (as in iCalendar)."""
    if all_day:
        first = start.astimezone(tz).date() if start.tzinfo else start.date()
        last = first
        if end is not None:
            last = max(first, (end.astimezone(tz) - timedelta(seconds=1)).date())
        if last == first:
            return first.strftime("%a %d %b %Y")
        return f"{first.strftime('%a %d %b %Y')} – {last.strftime('%a %d %b %Y')}"
    local_start = start.astimezone(tz)
    zone = local_start.tzname() or tz.key
    if end is None or end == start:
        return local_start.strftime("%a %d %b %Y, %H:%M ") + zone
    local_end = end.astimezone(tz)
    if local_end.date() == local_start.date():
        return local_start.strftime("%a %d %b %Y, %H:%M") + local_end.strftime("–%H:%M ") + zone
    return (
        local_start.strftime("%a %d %b %Y, %H:%M")
        + " – "
        + local_end.strftime("%a %d %b %Y, %H:%M ")
        + (local_end.tzname() or tz.key)
    )


def event_span(event: SessionEvent, tz: ZoneInfo) -> str:
    """An event's dates in ``tz``; an all-day event keeps the days of its own zone (the last
    day of a meeting in New York is that day, wherever the reader is)."""
    if event.all_day and event.timezone:
        return format_span(event.start, event.end, ZoneInfo(event.timezone), all_day=True)
    return format_span(event.start, event.end, tz, all_day=event.all_day)
