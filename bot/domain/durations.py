"""Durations as maintainers write them: ``30s``, ``15m``, ``2h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)\s*([smhdw])")
_WHOLE = re.compile(r"^(?:\d+\s*[smhdw]\s*)+$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """Parse a duration; raise ``ValueError`` with a helpful message otherwise."""
    value = text.strip().lower()
    if not value or not _WHOLE.match(value):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit, e.g. 30s, 15m, 2h, 7d"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(value))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of ``delta`` in the same notation (``0m`` for zero)."""
    seconds = int(delta.total_seconds())
    if seconds == 0:
        return "0m"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def humanize(delta: timedelta) -> str:
    """A countdown for people: ``3 days 4 hours``, ``45 minutes``, ``now``."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return "less than a minute" if seconds > 0 else "now"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60

    def unit(n: int, name: str) -> str:
        return f"{n} {name}{'' if n == 1 else 's'}"

    if days:
        return unit(days, "day") + (f" {unit(hours, 'hour')}" if hours else "")
    if hours:
        return unit(hours, "hour") + (f" {unit(minutes, 'minute')}" if minutes else "")
    return unit(minutes, "minute")
