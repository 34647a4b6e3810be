"""Showing instants to people, in a given time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo


def format_local(instant: datetime, tz: ZoneInfo) -> str:
    """``Sat 28 Nov 2026, 10:00 CET``."""
    local = instant.astimezone(tz)
    return local.strftime("%a %d %b %Y, %H:%M ") + (local.tzname() or tz.key)


def format_day(instant: datetime, tz: ZoneInfo) -> str:
    local = instant.astimezone(tz)
    return local.strftime("%a %d %b %Y")
