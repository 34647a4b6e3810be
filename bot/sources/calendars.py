"""iCalendar bytes -> ``SessionEvent`` values, bounded in time and memory.

``parse_calendar`` reads the bytes with icalendar and expands repetitions with
recurring_ical_events. It is pure (no I/O, no asyncio) and meant to run in a worker thread.

What it produces
    One ``SessionEvent`` per occurrence that ends after ``window_start`` (an occurrence without
    length: starts at or after it). The window's end bounds only repetitions: an occurrence of
    a repeating event (RRULE, RDATE) is listed if it starts before ``window_end``, while a
    single event, and a moved occurrence given as a one-off override (RECURRENCE-ID without an
    RRULE or RDATE of its own, also one whose series is not in the file), is listed whatever
    its date, so an event far ahead is known from the first listing on and is never reported
    as added when the window reaches it. What lies before the window is left out, single or
    not: the bot neither shows nor reports events that are over. Sorted by start. A cancelled
    event (``STATUS:CANCELLED``) is kept with ``status="cancelled"`` so that the planner can
    report the change.

Keys
    ``<source>:<UID>`` for a single event; ``<source>:<UID>@<slot>`` for each occurrence of a
    repeating one, where the slot is the occurrence's original start (its RECURRENCE-ID) in UTC,
    as ``2026-03-01T09:00:00Z``. A moved occurrence keeps the key of the slot it replaces, also
    when the move is given in another TZID or as part of a ``RANGE=THISANDFUTURE`` change. An
    all-day slot is midnight in the calendar's zone. An event without UID gets
    ``sha256:<digest of SUMMARY and DTSTART>`` as its UID; a UID longer than 255 characters is
    replaced by its digest.

Time zones
    A ``TZID`` names an IANA zone or a ``VTIMEZONE`` of the file. Floating times (no TZID, no
    ``Z``) and all-day dates are read in ``X-WR-TIMEZONE`` when the calendar has a valid one,
    else in ``default_tz``; an unknown TZID is read as floating. ``timezone`` of an event is the
    IANA name of its start's zone, else ``X-WR-TIMEZONE``, else ``None``.

Daylight saving time (the rule)
    A local time is resolved as ``zoneinfo`` does with ``fold=0``: an ambiguous time (the hour
    repeated when clocks go back) is the *first* of the two instants, e.g. 02:30 on 2026-10-25
    in Europe/Berlin is 02:30+02:00 (00:30 UTC); a time that does not exist (the hour skipped
    when clocks go forward) is read with the offset in force before the change, which shifts it
    forward by the gap, e.g. 02:30 on 2026-03-29 in Europe/Berlin is 03:30+02:00 (01:30 UTC).
    A repeating event keeps its local wall-clock time across a change; its UTC instant moves.

Bounds (what makes a hostile file cheap)
    * Reading: the text is unfolded and cut into one block per VEVENT without parsing it.
      A block that repeats nothing and that ended more than two days before the window is
      dropped unparsed; so are single events after the ``max_events`` earliest (unless
      ``match`` is given, which could still drop some of those). At most
      ``max(1000, 10 * max_events)`` blocks are parsed, in batches.
    * What bounds single events and one-off overrides, since the window's end does not: the
      size of the file (the caller's byte cap), the number of blocks parsed (above), one
      occurrence each, and ``max_events``: the first pass below counts them with the
      occurrences of series, and the listing is cut to the ``max_events`` earliest.
    * Expanding: each series' rules are iterated lazily, one instant at a time, behind a
      counter: a series that needs more than ``SERIES_STEPS`` instants (before or inside the
      window) is skipped with a warning. A first pass finds the ``max_events`` earliest
      instants over all series; occurrences are then produced only up to the last of them, so
      ``FREQ=SECONDLY`` without end or ``COUNT=1000000`` cost about ``max_events`` steps, never
      a million. (recurring_ical_events' own lazy ``after()`` queries every series again for
      each time slice it looks at, minutes for 10 000 events; its ``between()`` builds whole
      lists; and dateutil, under both, walks every rule from its DTSTART.)
    * Time: ``deadline_seconds`` is CPU time of the calling thread, shared out: reading until
      40 %, building the series until 55 %, the first pass until 80 %, the rest for producing
      occurrences. It is checked between batches, between series and every 256 instants, but
      cannot interrupt a single call into a library, so it can be overrun by the longest such
      call; ``VTIMEZONE`` rules other than plain yearly ones, and a ``BYMONTHDAY`` that none
      of the rule's months has, are refused up front because dateutil would spin through
      every day up to the year 9999 on them.
    * ``truncated`` is true when any bound cut the listing short (``max_events``, the number of
      blocks, the time, or a series' step budget): the listing may then be incomplete, and an
      event missing from it must not be taken as removed.

Broken input
    Not iCalendar at all (empty, an HTML page, junk, no ``END:VCALENDAR``) is a
    ``CalendarFailed``. A broken event (missing or unreadable DTSTART, an RRULE that cannot be
    used, an unterminated VEVENT) is skipped with a warning naming its UID, together with the
    rest of its series; everything else is used. Unreadable lines icalendar can skip are skipped.

Caution: icalendar caches each custom ``VTIMEZONE`` process-wide under its TZID the first time
it is seen, so a later, different definition under the same (non-IANA) TZID is not picked up
until the process restarts.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

import recurring_ical_events  # type: ignore[import-untyped]
from icalendar import Calendar, Component
from recurring_ical_events import EventAdapter, Occurrence, Series

from bot.domain.matching import Matcher
from bot.domain.model import EventKind, EventStatus, SessionEvent
from bot.sources.parsed import CalendarFailed, ParsedCalendar

__all__ = ["CalendarFailed", "ParsedCalendar", "parse_calendar"]

#: Instants one series may iterate (before and inside the window together).
SERIES_STEPS = 100_000
#: Shares of ``deadline_seconds`` by which reading, building the series and the first pass
#: over them must be done; producing the occurrences may use the rest.
READ_SHARE = 0.4
COLLECT_SHARE = 0.55
SURVEY_SHARE = 0.8
MAX_WARNINGS = 100
MAX_TIMEZONES = 100
BATCH_BYTES = 256 * 1024
BATCH_BLOCKS = 500
TITLE_MAX = 300
LOCATION_MAX = 300
DESCRIPTION_MAX = 2000
URL_MAX = 2048
UID_MAX = 255
#: Days of slack when dropping blocks by their raw dates (covers any UTC offset).
SLACK = timedelta(days=2)

_ESSENTIAL = frozenset(
    {"DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "RECURRENCE-ID"}
)
_UTC_NAMES = frozenset(
    f"{prefix}{name}"
    for prefix in ("", "ETC/")
    for name in ("UTC", "UCT", "UNIVERSAL", "ZULU", "GMT", "GMT0", "GMT+0", "GMT-0", "GREENWICH")
)
_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(?:/[A-Za-z0-9_+\-]+)*$")
_UNUSUAL_IN_ZONES = frozenset(
    {b"BYSECOND", b"BYMINUTE", b"BYHOUR", b"BYYEARDAY", b"BYWEEKNO", b"BYSETPOS"}
)
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_FOLD = re.compile(rb"(?:\r?\n)+[ \t]")
_PROP_NAME = re.compile(rb"[A-Za-z0-9-]+")
_RAW_DATE = re.compile(rb":(\d{4})(\d{2})(\d{2})(?:T\d{6}Z?)?\s*$")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TAG = re.compile(r"<(?:[A-Za-z][A-Za-z0-9]*|/[A-Za-z][A-Za-z0-9]*|!--)[^<>]*>")
_HTTP = re.compile(r"^https?://[^\s\x00-\x1f\x7f]+$", re.IGNORECASE)
_BEGIN = b"BEGIN:"
_END = b"END:"


# ------------------------------------------------------------------------------ housekeeping


class _Clock:
    """CPU time of this thread since the start, against a limit."""

    def __init__(self, seconds: float) -> None:
        self._start = time.thread_time()
        self._limit = max(seconds, 0.0)

    def over(self, share: float = 1.0) -> bool:
        return time.thread_time() - self._start >= self._limit * share


class _Notes:
    """Warnings, at most ``MAX_WARNINGS`` of them, then a count of the rest."""

    def __init__(self) -> None:
        self._items: list[str] = []
        self._dropped = 0
        self._timed_out = False
        self.truncated = False

    def add(self, message: str) -> None:
        if len(self._items) < MAX_WARNINGS:
            self._items.append(message)
        else:
            self._dropped += 1

    def cut(self, message: str) -> None:
        """A bound was hit: say so, and mark the listing as possibly incomplete."""
        self.truncated = True
        self.add(message)

    def time_up(self, what: str) -> None:
        """The deadline passed; said once, for the first phase that ran out of time."""
        if not self._timed_out:
            self._timed_out = True
            self.cut(f"time limit reached: {what}")
        self.truncated = True

    def all(self) -> tuple[str, ...]:
        if self._dropped:
            return (*self._items, f"{self._dropped} more warnings not shown")
        return tuple(self._items)


class _OutOfSteps(Exception):
    """A series needed more instants than ``SERIES_STEPS``."""


class _OutOfTime(Exception):
    """The deadline passed while iterating instants."""


class _Steps:
    """The step budget of one series; also checks the clock every 256 steps."""

    __slots__ = ("_clock", "_count", "left", "share")

    def __init__(self, clock: _Clock, share: float) -> None:
        self._clock = clock
        self._count = 0
        self.left = SERIES_STEPS
        self.share = share

    def spend(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _OutOfSteps
        self._count += 1
        if not self._count & 255 and self._clock.over(self.share):
            raise _OutOfTime


class _CountedRule:
    """A dateutil rule behind a step counter, standing in for it inside a series.

    The series calls ``between(after, before, inc=True)`` and reads ``until``. Instants are
    pulled from the rule's own iterator one at a time and kept in order, so a later query
    costs a binary search instead of a walk from DTSTART, and no query can make the rule run
    away from the counter.
    """

    def __init__(self, rule: Any, steps: _Steps) -> None:
        self._iterator: Iterator[datetime] = iter(rule)
        self._seen: list[datetime] = []
        self._done = False
        self._steps = steps
        self.until = getattr(rule, "until", None)

    def _pull(self) -> bool:
        if self._done:
            return False
        self._steps.spend()
        try:
            self._seen.append(next(self._iterator))
        except StopIteration:
            self._done = True
            return False
        return True

    def instants(self) -> Iterator[datetime]:
        index = 0
        while index < len(self._seen) or self._pull():
            yield self._seen[index]
            index += 1

    def between(self, after: datetime, before: datetime, inc: bool = False) -> list[datetime]:
        while (not self._seen or self._seen[-1] <= before) and self._pull():
            pass
        if inc:
            return self._seen[bisect_left(self._seen, after) : bisect_right(self._seen, before)]
        return self._seen[bisect_right(self._seen, after) : bisect_left(self._seen, before)]


# ------------------------------------------------------------------------------ text


class _TextOfHtml(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template"})
    _BREAKS = frozenset(
        {"p", "br", "div", "li", "ul", "ol", "tr", "td", "th", "table", "hr", "blockquote"}
        | {f"h{n}" for n in range(1, 7)}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _plain(value: str, limit: int, *, html: bool = False) -> str:
    """One line of plain text: no control characters, whitespace collapsed, cut at ``limit``."""
    value = value[: limit * 10]
    if html and _TAG.search(value):
        parser = _TextOfHtml()
        parser.feed(value)
        parser.close()
        value = "".join(parser.parts)
    text = " ".join(_CONTROL.sub("", value).split())
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _first(component: Component, name: str) -> Any:
    value = component.get(name)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(component: Component, name: str, limit: int, *, html: bool = False) -> str:
    value = _first(component, name)
    return _plain(str(value), limit, html=html) if value is not None else ""


def _url(component: Component) -> str | None:
    value = _first(component, "URL")
    if value is None:
        return None
    text = str(value).strip()
    return text if len(text) <= URL_MAX and _HTTP.match(text) else None


def _status(component: Component) -> EventStatus:
    value = str(_first(component, "STATUS") or "").strip().upper()
    if value == "CANCELLED":
        return "cancelled"
    if value == "TENTATIVE":
        return "tentative"
    return "scheduled"


def _digest(*parts: str) -> str:
    return "sha256:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def _uid(component: Component) -> str:
    raw = _first(component, "UID")
    uid = _CONTROL.sub("", str(raw)).strip() if raw is not None else ""
    if not uid:
        start = _first(component, "DTSTART")
        start_text = ""
        if start is not None:
            tzid = getattr(start, "params", {}).get("TZID", "")
            start_text = f"{tzid}:{start.to_ical().decode(errors='replace')}"
        return _digest(str(_first(component, "SUMMARY") or ""), start_text)
    return uid if len(uid) <= UID_MAX else _digest(uid)


def _shown(uid: str) -> str:
    """A UID as a warning shows it: short, and without anything that could forge a log line."""
    return repr(uid if len(uid) <= 80 else uid[:79] + "…")


# ------------------------------------------------------------------------------ instants


def _utc(value: date, zone: tzinfo) -> datetime:
    """The instant of a date (midnight) or datetime (naive: in ``zone``), in UTC, fold=0."""
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return aware.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=zone).astimezone(UTC)


def _in_frame(bound: datetime, sample: date, zone: tzinfo) -> datetime:
    """``bound`` (aware) as the series compares it: naive local time if its times are naive."""
    if isinstance(sample, datetime) and sample.tzinfo is not None:
        return bound
    return bound.astimezone(zone).replace(tzinfo=None)


def _zone_name(value: date) -> str | None:
    zone = value.tzinfo if isinstance(value, datetime) else None
    if isinstance(zone, ZoneInfo) and zone.key and zone.key.upper() not in _UTC_NAMES:
        return zone.key
    return None


def _wall(value: date) -> datetime:
    """The local wall-clock reading of a date or datetime, without its zone."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    return datetime(value.year, value.month, value.day)


def _just_after(value: date) -> datetime:
    """A moment just after a start, naive or aware as the start is (midnight for a date)."""
    return _wall(value).replace(tzinfo=getattr(value, "tzinfo", None)) + timedelta(microseconds=1)


def _slot_text(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _known_zone(name: str) -> ZoneInfo | None:
    if not _ZONE_NAME.match(name) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        return None


# ------------------------------------------------------------------------------ reading


@dataclass(slots=True)
class _Block:
    """The raw lines of one VEVENT and what a glance at them tells."""

    lines: list[bytes]
    uid: str | None = None
    start_day: date | None = None
    end_day: date | None = None
    open_end: bool = False  # DURATION: the end is not known without parsing
    repeats: bool = False  # RRULE, RDATE or RECURRENCE-ID
    complete: bool = False


@dataclass(slots=True)
class _Split:
    properties: list[bytes] = field(default_factory=list)
    timezones: list[list[bytes]] = field(default_factory=list)
    events: list[_Block] = field(default_factory=list)


def _begin(line: bytes) -> bytes | None:
    if line[:6].upper() == _BEGIN:
        return line[6:].strip().upper()
    return None


def _end(line: bytes) -> bytes | None:
    if line[:4].upper() == _END:
        return line[4:].strip().upper()
    return None


def _name(line: bytes) -> bytes:
    found = _PROP_NAME.match(line)
    return found.group().upper() if found else b""


def _raw_day(line: bytes) -> date | None:
    found = _RAW_DATE.search(line)
    if not found:
        return None
    try:
        return date(int(found[1]), int(found[2]), int(found[3]))
    except ValueError:
        return None


def _glance(block: _Block, line: bytes) -> None:
    if line[:1] not in b"UDRudr":
        return
    name = _name(line)
    if name == b"UID" and block.uid is None:
        block.uid = _plain(line.split(b":", 1)[-1].decode("utf-8", "replace"), UID_MAX)
    elif name == b"DTSTART":
        block.start_day = _raw_day(line)
    elif name == b"DTEND":
        block.end_day = _raw_day(line)
    elif name == b"DURATION":
        block.open_end = True
    elif name in (b"RRULE", b"RDATE", b"RECURRENCE-ID"):
        block.repeats = True


def _timezone_problem(lines: list[bytes]) -> str | None:
    """Why a VTIMEZONE is refused: only plain yearly rules are cheap to evaluate."""
    if len(lines) > 2000:
        return "it is too long"
    for line in lines:
        if _name(line) != b"RRULE":
            continue
        parts: dict[bytes, bytes] = {}
        for part in line.split(b":", 1)[-1].strip().upper().split(b";"):
            key, _, value = part.partition(b"=")
            parts[key] = value
        if parts.get(b"FREQ") != b"YEARLY":
            return "its RRULE is not yearly"
        if _UNUSUAL_IN_ZONES & parts.keys():
            return "its RRULE is unusual"
        if sum(value.count(b",") + 1 for key, value in parts.items() if key.startswith(b"BY")) > 16:
            return "its RRULE is unusual"
    return None


def _lines(body: bytes) -> list[bytes]:
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    if b"\n" not in body:
        body = body.replace(b"\r", b"\n")
    body = _FOLD.sub(b"", body)
    return body.split(b"\n")


def _not_icalendar(first: bytes) -> CalendarFailed:
    head = first.strip()[:200].lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head or b"<head" in head:
        return CalendarFailed("not an iCalendar file: the server sent an HTML page")
    if head.startswith(b"<"):
        return CalendarFailed("not an iCalendar file: it looks like XML or HTML")
    if head.startswith((b"{", b"[")):
        return CalendarFailed("not an iCalendar file: it looks like JSON")
    shown = _plain(first[:40].decode("utf-8", "replace"), 40)
    return CalendarFailed(
        f"not an iCalendar file: it does not begin with BEGIN:VCALENDAR ({shown!r})"
    )


def _split(body: bytes, clock: _Clock, notes: _Notes) -> _Split | CalendarFailed:
    """Cut the text into calendar properties, VTIMEZONEs and VEVENT blocks, without parsing."""
    if not body.strip():
        return CalendarFailed("not an iCalendar file: the response was empty")
    lines = _lines(body)
    first = next((i for i, line in enumerate(lines) if line.strip()), 0)
    if _begin(lines[first].rstrip(b"\r")) != b"VCALENDAR":
        return _not_icalendar(lines[first])
    last = next(i for i in range(len(lines) - 1, -1, -1) if lines[i].strip())
    if last == first or _end(lines[last].rstrip(b"\r")) != b"VCALENDAR":
        return CalendarFailed(
            "not a complete iCalendar file: END:VCALENDAR is missing (was the download cut short?)"
        )
    split = _Split()
    seen_properties: set[bytes] = set()
    current: list[bytes] | None = None
    block: _Block | None = None
    kind = b""
    depth = 0
    for number in range(first + 1, last):
        line = lines[number].rstrip(b"\r")
        if not number & 4095 and clock.over(READ_SHARE):
            notes.time_up(f"the calendar was read up to line {number} of {last + 1}")
            block = None
            break
        if not line.strip():
            continue
        begin = _begin(line)
        if current is None:
            if begin is not None and begin != b"VCALENDAR":
                current, kind, depth = [line], begin, 1
                if kind == b"VEVENT":
                    block = _Block(current)
                continue
            name = _name(line)
            if name in (b"X-WR-TIMEZONE", b"CALSCALE") and name not in seen_properties:
                seen_properties.add(name)
                split.properties.append(line)
            continue  # other properties, stray END lines, a second BEGIN:VCALENDAR
        if begin in (b"VEVENT", b"VCALENDAR"):
            # nothing holds a VEVENT or a VCALENDAR: what is open never ended
            if block is not None:
                split.events.append(block)
            current, block, depth = None, None, 0
            if begin == b"VEVENT":
                current, kind, depth = [line], begin, 1
                block = _Block(current)
            continue
        current.append(line)
        if begin is not None:
            depth += 1
        elif _end(line) is not None:
            depth -= 1
            if depth == 0:
                if block is not None:
                    block.complete = True
                    split.events.append(block)
                elif kind == b"VTIMEZONE":
                    split.timezones.append(current)
                current, block = None, None
        elif block is not None and depth == 1:
            _glance(block, line)
    if block is not None:
        split.events.append(block)
    return split


def _single(block: _Block, shared: set[str]) -> bool:
    """A block that is a whole event on its own, with a start day known from a glance."""
    return (
        not block.repeats
        and block.start_day is not None
        and block.uid is not None
        and block.uid not in shared
    )


def _keep(block: _Block, shared: set[str], low: date) -> bool:
    """Whether a block can be listed (when in doubt, it can).

    Only a single event that ended before the window is dropped here: one that starts after
    the window's end is still listed (the window bounds repetitions, not single events).
    """
    if not _single(block, shared) or block.start_day is None:
        return True
    if block.open_end:
        return True
    return max(block.start_day, block.end_day or block.start_day) >= low


def _choose(
    blocks: list[_Block],
    window_start: datetime,
    max_events: int,
    ranked: bool,
    notes: _Notes,
) -> list[_Block]:
    """The blocks worth parsing, in file order."""
    uids: dict[str, int] = {}
    for block in blocks:
        if block.uid is not None:
            uids[block.uid] = uids.get(block.uid, 0) + 1
    shared = {uid for uid, count in uids.items() if count > 1}
    low = (window_start.astimezone(UTC) - SLACK).date()
    wanted: list[_Block] = []
    singles: list[date] = []
    for block in blocks:
        if not block.complete:
            notes.add(f"event {_shown(block.uid or '?')} skipped: its VEVENT never ends")
        elif _keep(block, shared, low):
            wanted.append(block)
            if block.start_day is not None and _single(block, shared):
                singles.append(block.start_day)
    if ranked and len(singles) > max_events:
        # the raw day is off by at most a day either way: keep two days more than needed
        last = sorted(singles)[max_events - 1] + SLACK if max_events else low - SLACK
        later = [
            b
            for b in wanted
            if b.start_day is not None and b.start_day > last and _single(b, shared)
        ]
        if later:
            notes.cut(f"more than {max_events} events ahead; {len(later)} later ones left out")
            left_out = {id(b) for b in later}
            wanted = [b for b in wanted if id(b) not in left_out]
    limit = max(1000, 10 * max_events)
    if len(wanted) > limit:
        notes.cut(f"{len(wanted)} events could be listed; only the first {limit} were read")
        wanted = wanted[:limit]
    return wanted


def _envelope(parts: Sequence[bytes]) -> bytes:
    return b"BEGIN:VCALENDAR\r\n" + b"".join(parts) + b"END:VCALENDAR\r\n"


def _read(
    split: _Split,
    window_start: datetime,
    max_events: int,
    ranked: bool,
    clock: _Clock,
    notes: _Notes,
) -> Calendar | CalendarFailed:
    """Parse the calendar properties, its time zones and the blocks that matter.

    ``ranked``: single events beyond the ``max_events`` earliest may be left unread (not when
    a filter may still throw out some of the earliest).
    """
    zones: list[bytes] = []
    for lines in split.timezones[:MAX_TIMEZONES]:
        tzid = next((line for line in lines if _name(line) == b"TZID"), b"TZID:?")
        problem = _timezone_problem(lines)
        if problem:
            shown = _plain(tzid.split(b":", 1)[-1].decode("utf-8", "replace"), 80)
            notes.add(f"time zone {shown!r} ignored: {problem}; its times are read as floating")
        else:
            zones.append(b"\r\n".join(lines) + b"\r\n")
    if len(split.timezones) > MAX_TIMEZONES:
        notes.add(f"only the first {MAX_TIMEZONES} of {len(split.timezones)} time zones were read")
    properties = [line + b"\r\n" for line in split.properties]
    try:
        calendar = Calendar.from_ical(_envelope(properties + zones))
    except (ValueError, TypeError, KeyError) as err:
        try:
            calendar = Calendar.from_ical(_envelope(properties))
        except (ValueError, TypeError, KeyError):
            return CalendarFailed(f"not a readable iCalendar file: {_plain(str(err), 200)}")
        notes.add(f"time zones ignored, they cannot be read: {_plain(str(err), 200)}")

    wanted = _choose(split.events, window_start, max_events, ranked, notes)
    batch: list[_Block] = []
    size = 0
    for index, block in enumerate(wanted):
        if not batch and clock.over(READ_SHARE):
            notes.time_up(f"{len(wanted) - index} events were not read")
            break
        batch.append(block)
        size += sum(len(line) + 2 for line in block.lines)
        if size >= BATCH_BYTES or len(batch) >= BATCH_BLOCKS or index == len(wanted) - 1:
            _read_batch(calendar, batch, notes)
            batch, size = [], 0
    return calendar


def _read_batch(calendar: Calendar, batch: list[_Block], notes: _Notes) -> None:
    texts = [b"\r\n".join(block.lines) + b"\r\n" for block in batch]
    try:
        parsed = [Calendar.from_ical(_envelope(texts))]
    except (ValueError, TypeError, KeyError):
        parsed = []
        for block, text in zip(batch, texts, strict=True):
            try:
                parsed.append(Calendar.from_ical(_envelope([text])))
            except (ValueError, TypeError, KeyError) as err:
                notes.add(
                    f"event {_shown(block.uid or '?')} skipped: it cannot be parsed: "
                    f"{_plain(str(err), 200)}"
                )
    for one in parsed:
        for component in one.subcomponents:
            if component.name == "VEVENT":
                calendar.add_component(component)


# ------------------------------------------------------------------------------ series


@dataclass(frozen=True, slots=True)
class _Details:
    """What one VEVENT (a master or an override) says besides its times."""

    title: str
    description: str
    location: str | None
    url: str | None
    status: EventStatus
    matched: bool
    recurrence_id: date | None
    rules: bool  # RRULE or RDATE: it repeats by itself


class _Occurrence(Occurrence):  # type: ignore[misc]
    """An occurrence that remembers its component and whether it is an explicit override."""

    def __init__(
        self, adapter: Any, start: Any, end: Any, sequence: int, *, explicit: bool
    ) -> None:
        super().__init__(adapter, start, end, sequence)
        self.adapter = adapter
        self.explicit = explicit


class _Series(Series):  # type: ignore[misc]
    """A series whose occurrences are ``_Occurrence`` (the library's documented hook)."""

    def occurrence(self, adapter: Any, start: Any = None, end: Any = None) -> _Occurrence:
        return _Occurrence(adapter, start, end, self.sequence, explicit=start is None)


@dataclass(slots=True)
class _Found:
    uid: str
    series: Any
    repeats: bool
    details: dict[int, _Details]  # id(adapter) -> details
    sample: date  # a start, to know whether the series' times are naive
    steps: _Steps
    rules: list[_CountedRule]


def _never(rule: Any) -> bool:
    """Whether an RRULE's BYMONTHDAY fits none of its months (dateutil would spin to 9999)."""
    days = rule.get("BYMONTHDAY")
    if not days:
        return False
    months = [int(str(m).rstrip("Ll")) for m in rule.get("BYMONTH") or range(1, 13)]
    lengths = [_MONTH_DAYS[m - 1] for m in months if 1 <= m <= 12]
    return not any(abs(int(d)) <= n for d in days for n in lengths)


def _problem(components: list[Component]) -> str | None:
    for component in components:
        if "DTSTART" not in component:
            return "DTSTART is missing"
        for name, message in component.errors:
            if name in _ESSENTIAL:
                return f"{name} cannot be read: {_plain(message, 200)}"
        rules = component.get("RRULE")
        for rule in rules if isinstance(rules, list) else [rules] if rules is not None else []:
            if not hasattr(rule, "get") or not rule.get("FREQ"):
                return "its RRULE has no FREQ"
            if _never(rule):
                return f"its RRULE can never occur ({rule.to_ical().decode(errors='replace')})"
    return None


def _why(err: Exception) -> str:
    """The most telling message of a library error (a rule error hides dateutil's reason)."""
    context = err.__context__
    inner = context if isinstance(context, ValueError) and str(context) else err
    return _plain(str(inner) or type(inner).__name__, 200)


class _Collector:
    """Groups VEVENTs into series for recurring_ical_events, skipping broken ones with a note.

    Handed to ``recurring_ical_events.of`` as a component selection, so that it sees the
    calendar after the library's X-WR-TIMEZONE conversion.
    """

    def __init__(self, match: Matcher | None, clock: _Clock, notes: _Notes) -> None:
        self.match = match
        self.clock = clock
        self.notes = notes
        self.found: list[_Found] = []

    def collect_series_from(self, source: Component, suppress_errors: Any) -> list[Any]:
        groups: dict[str, list[Component]] = {}
        for component in source.subcomponents:
            if component.name == "VEVENT":
                groups.setdefault(_uid(component), []).append(component)
        for done, (uid, components) in enumerate(groups.items()):
            if self.clock.over(COLLECT_SHARE):
                self.notes.time_up(f"{len(groups) - done} events were not expanded")
                break
            self._collect(uid, components)
        return [found.series for found in self.found]

    def _collect(self, uid: str, components: list[Component]) -> None:
        problem = _problem(components)
        if problem:
            self.notes.add(f"event {_shown(uid)} skipped: {problem}")
            return
        adapters = [EventAdapter(component) for component in components]
        details = {id(a): self._details(c) for a, c in zip(adapters, components, strict=True)}
        if self.match is not None and not any(d.matched for d in details.values()):
            return
        try:
            series = _Series(adapters)
            sample = adapters[0].start
        except Exception as err:  # the library raises many kinds for one bad series
            self.notes.add(f"event {_shown(uid)} skipped: {_why(err)}")
            return
        repeats = any(d.rules or d.recurrence_id is not None for d in details.values())
        steps = _Steps(self.clock, SURVEY_SHARE)
        rules: list[_CountedRule] = []
        recurrence = series.recurrence
        if getattr(recurrence, "has_core", False):
            rules = [_CountedRule(rule, steps) for rule in recurrence.rrules]
            recurrence.rrules = rules
        self.found.append(_Found(uid, series, repeats, details, sample, steps, rules))

    def _details(self, component: Component) -> _Details:
        title = _text(component, "SUMMARY", TITLE_MAX) or "(untitled)"
        description = _text(component, "DESCRIPTION", DESCRIPTION_MAX, html=True)
        matched = self.match is None or self.match.matches(title, description) is not None
        recurrence = _first(component, "RECURRENCE-ID")
        return _Details(
            title=title,
            description=description,
            location=_text(component, "LOCATION", LOCATION_MAX) or None,
            url=_url(component),
            status=_status(component),
            matched=matched,
            recurrence_id=getattr(recurrence, "dt", None) if recurrence is not None else None,
            rules="RRULE" in component or "RDATE" in component,
        )


# ------------------------------------------------------------------------------ expanding


def _survey(
    found: list[_Found],
    window_start: datetime,
    window_end: datetime,
    max_events: int,
    zone: tzinfo,
    clock: _Clock,
    notes: _Notes,
) -> tuple[list[_Found], datetime | None]:
    """First pass: the series that stay within bounds, and where the listing must stop.

    Keeps the ``max_events`` earliest instants from ``window_start`` on (a max-heap of negated
    timestamps): a repeating series' up to ``window_end``, a single event's whatever its date.
    When there are more, the listing stops just after the last of them, so that occurrences at
    the same instant are all in or all out before the final cut; else the stop is ``None``.
    """
    heap: list[float] = []
    first = window_start.timestamp()
    window = window_end.timestamp()
    more = False
    kept: list[_Found] = []
    for index, item in enumerate(found):
        if clock.over(SURVEY_SHARE):
            notes.time_up(f"{len(found) - index} events were not expanded")
            break
        end = window if item.repeats else math.inf  # a single event has one instant
        pushed: set[float] = set()  # DTSTART comes from the RRULE and as an RDATE
        try:
            for rule in item.rules:
                for instant in rule.instants():
                    stamp = _utc(instant, zone).timestamp()
                    if stamp >= end:
                        break
                    if stamp < first or stamp in pushed:
                        continue
                    if len(heap) >= max_events and (not heap or stamp >= -heap[0]):
                        more = True
                        break
                    pushed.add(stamp)
                    heapq.heappush(heap, -stamp)
                    if len(heap) > max_events:
                        heapq.heappop(heap)
                        more = True
        except _OutOfSteps:
            notes.cut(
                f"event {_shown(item.uid)} skipped: it repeats more than {SERIES_STEPS} times "
                "before or inside the window"
            )
            continue
        except _OutOfTime:
            notes.time_up(f"{len(found) - index} events were not expanded")
            break
        kept.append(item)
    if not more:
        return kept, None
    last = datetime.fromtimestamp(-heap[0], UTC) if heap else window_start
    notes.cut(f"more than {max_events} occurrences; the listing ends at {_slot_text(last)}")
    return kept, last + timedelta(microseconds=1)


def _event(
    occurrence: _Occurrence,
    item: _Found,
    source: str,
    kind: EventKind,
    zone: tzinfo,
    zone_name: str | None,
) -> SessionEvent | None:
    details = item.details[id(occurrence.adapter)]
    if not details.matched:
        return None
    start_value: date = occurrence.start
    end_value: date = occurrence.end
    all_day = not isinstance(start_value, datetime)
    start = _utc(start_value, zone)
    end: datetime | None = _utc(end_value, zone)
    if end is not None and end <= start and not all_day:
        # no length, or an end pushed before the start by a clock change in between
        # (02:30 + 30 min on a spring-forward day): keep the length on the wall clock
        length = _wall(end_value) - _wall(start_value)
        end = start + length if length > timedelta(0) else None
    key = f"{source}:{item.uid}"
    if item.repeats:
        if occurrence.explicit and details.recurrence_id is not None:
            slot_value = details.recurrence_id
        else:
            slot_value = start_value - occurrence.adapter.move_recurrences_by
        # a floating RECURRENCE-ID names a slot of a zoned series in that series' zone
        sample = item.sample
        slot_zone = sample.tzinfo if isinstance(sample, datetime) and sample.tzinfo else zone
        key += "@" + _slot_text(_utc(slot_value, slot_zone))
    return SessionEvent(
        key=key,
        source=source,
        title=details.title,
        start=start,
        end=end,
        kind=kind,
        all_day=all_day,
        timezone=_zone_name(start_value) or zone_name,
        location=details.location,
        url=details.url,
        status=details.status,
        description=details.description,
    )


def _overrides(item: _Found) -> Iterator[_Occurrence]:
    """The one-off overrides of a series (a RECURRENCE-ID without RRULE or RDATE of its own).

    Each is listed wherever it was moved to, as a single event is; the library's ``between``
    would only find those that start before the end of the span it is asked for.
    """
    series = item.series
    excluded = series.recurrence.check_exdates_datetime
    for adapter in series.modifications:
        if item.details[id(adapter)].rules or excluded & set(adapter.recurrence_ids):
            continue
        yield series.occurrence(adapter)


def _inside(event: SessionEvent, window_start: datetime, stop: datetime | None) -> bool:
    """Whether an occurrence is listed: it ends after ``window_start`` and starts before ``stop``.

    An occurrence without length (or with its end before its start) must start at or after
    ``window_start``.
    """
    if stop is not None and event.start >= stop:
        return False
    if event.end is not None and event.end > event.start:
        return event.end > window_start
    return event.start >= window_start


def _expand(
    kept: list[_Found],
    window_start: datetime,
    window_end: datetime,
    stop: datetime | None,
    source: str,
    kind: EventKind,
    zone: tzinfo,
    zone_name: str | None,
    clock: _Clock,
    notes: _Notes,
) -> list[SessionEvent]:
    """Second pass: the occurrences of each series from ``window_start`` on, before ``stop``.

    A repeating series is expanded up to ``window_end`` (or ``stop`` if sooner); a single event
    and a one-off override are listed whatever their date (before ``stop``, if any).
    """
    bound = window_end if stop is None else min(stop, window_end)
    events: list[SessionEvent] = []
    for index, item in enumerate(kept):
        if clock.over():
            notes.time_up(f"{len(kept) - index} events were not expanded")
            break
        item.steps.share = 1.0
        produced: dict[str, SessionEvent] = {}
        try:
            lo = _in_frame(window_start, item.sample, zone)
            if item.repeats:
                limit: datetime | None = bound
                hi = _in_frame(bound, item.sample, zone)
            else:  # a single event: a span that reaches just past its one start, wherever
                limit = stop
                hi = max(_in_frame(window_end, item.sample, zone), _just_after(item.sample))
            for occurrence in item.series.between(lo, hi):
                event = _event(occurrence, item, source, kind, zone, zone_name)
                if event is not None and _inside(event, window_start, limit):
                    produced.setdefault(event.key, event)
            if item.repeats:
                for occurrence in _overrides(item):
                    event = _event(occurrence, item, source, kind, zone, zone_name)
                    if event is not None and _inside(event, window_start, stop):
                        produced.setdefault(event.key, event)
        except _OutOfSteps:
            notes.cut(
                f"event {_shown(item.uid)} skipped: it repeats more than {SERIES_STEPS} times "
                "before or inside the window"
            )
            continue
        except _OutOfTime:
            notes.time_up(f"{len(kept) - index} events were not expanded")
            break
        except Exception as err:  # the library raises many kinds for one bad series
            notes.add(f"event {_shown(item.uid)} skipped: {_why(err)}")
            continue
        events.extend(produced.values())
    return events


# ------------------------------------------------------------------------------ entry point


def parse_calendar(
    body: bytes,
    *,
    source: str,
    kind: EventKind = "session",
    default_tz: ZoneInfo,
    window_start: datetime,
    window_end: datetime,
    max_events: int = 2000,
    deadline_seconds: float = 5.0,
    match: Matcher | None = None,
) -> ParsedCalendar | CalendarFailed:
    """The occurrences of an iCalendar file from ``window_start`` on (see the module).

    Repetitions are expanded up to ``window_end``; single events are listed whatever their date.

    ``window_start`` and ``window_end`` must be aware. ``match`` keeps the events whose summary
    and description it matches. A file that is not iCalendar is a ``CalendarFailed``; broken
    events are left out with a warning each.
    """
    if window_start.tzinfo is None or window_end.tzinfo is None:
        raise ValueError("window_start and window_end must be aware datetimes")
    try:
        return _parse(
            body,
            source,
            kind,
            default_tz,
            window_start,
            window_end,
            max(0, max_events),
            _Clock(deadline_seconds),
            match,
        )
    except Exception as err:  # a library tripping over hostile input: this source fails alone
        return CalendarFailed(
            f"cannot read the calendar: {_plain(f'{type(err).__name__}: {err}', 200)}"
        )


def _parse(
    body: bytes,
    source: str,
    kind: EventKind,
    default_tz: ZoneInfo,
    window_start: datetime,
    window_end: datetime,
    max_events: int,
    clock: _Clock,
    match: Matcher | None,
) -> ParsedCalendar | CalendarFailed:
    notes = _Notes()
    split = _split(body, clock, notes)
    if isinstance(split, CalendarFailed):
        return split
    calendar = _read(split, window_start, max_events, match is None, clock, notes)
    if isinstance(calendar, CalendarFailed):
        return calendar

    zone: tzinfo = default_tz
    zone_name: str | None = None
    declared = _first(calendar, "X-WR-TIMEZONE")
    if declared is not None:
        name = str(declared).strip()
        known = _known_zone(name)
        del calendar["X-WR-TIMEZONE"]
        if known is None:
            notes.add(
                f"X-WR-TIMEZONE {_plain(name, 80)!r} is not a known time zone; floating times "
                f"are read in {default_tz}"
            )
        else:
            calendar["X-WR-TIMEZONE"] = name
            zone, zone_name = known, name

    collector = _Collector(match, clock, notes)
    try:
        recurring_ical_events.of(calendar, components=[collector])
    except recurring_ical_events.InvalidCalendar as err:
        return CalendarFailed(f"unsupported calendar: {_plain(str(err), 200)}")

    kept, stop = _survey(collector.found, window_start, window_end, max_events, zone, clock, notes)
    events = _expand(
        kept, window_start, window_end, stop, source, kind, zone, zone_name, clock, notes
    )
    events.sort(key=lambda e: (e.start, e.key))
    unique: dict[str, SessionEvent] = {}
    for event in events:
        unique.setdefault(event.key, event)
    listed = list(unique.values())
    if len(listed) > max_events:
        if not notes.truncated:
            notes.cut(f"more than {max_events} occurrences; the rest left out")
        notes.truncated = True
        listed = listed[:max_events]
    return ParsedCalendar(tuple(listed), notes.all(), notes.truncated)
