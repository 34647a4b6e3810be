"""Pure decisions about when a channel takes an alert: now, at its digest, or after its quiet
hours, and what the grouped message that releases held alerts says.

Digest
    A channel with a digest (``at`` a local time, on some ``days``) takes its news (and the
    other kinds its ``kinds`` lists) as one grouped message at that time. Held until the next
    digest time strictly after the alert was queued.

Quiet hours
    A channel with quiet hours (``from``–``to`` local time, possibly across midnight) holds what
    can wait while quiet, and releases it as one grouped message when the quiet period ends.
    Urgent alerts go through: a reminder for something that starts before the quiet period
    ends, a session change for an event within ``URGENT_CHANGE`` of now, and the kinds the
    channel lists as ``urgent`` (e.g. source-health to an ops channel).

Times are computed on the wall clock of the channel's zone with ``zoneinfo``: a quiet period
from 22:00 to 07:00 ends at 07:00 local time also on the night the clocks change; a wall time
that does not exist that night (02:30 when clocks jump from 02:00 to 03:00) is read forward.

Direct messages (channels ``dm:…``) are never held: a person asked for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from bot.domain import messages
from bot.domain.model import Alert, AlertId, AlertKind, ChannelName
from bot.domain.planner import digest
from bot.domain.text import Span, render_plain

HoldReason = Literal["digest", "quiet"]
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: A session change for an event starting within this long of now goes through quiet hours.
URGENT_CHANGE = timedelta(hours=48)
#: A grouped message lists at most this many alerts; more make several parts.
GROUP_ITEMS = 20
#: ... and at most about this many characters of plain text (every platform takes it).
GROUP_CHARS = 3000
#: The kinds a digest gathers unless the channel says otherwise.
DIGEST_KINDS: tuple[AlertKind, ...] = ("news",)


@dataclass(frozen=True, slots=True)
class DigestRule:
    at: time
    days: frozenset[int]  # 0 = Monday
    tz: ZoneInfo
    kinds: frozenset[str] = frozenset(DIGEST_KINDS)


@dataclass(frozen=True, slots=True)
class QuietRule:
    start: time
    end: time
    tz: ZoneInfo
    urgent: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """How one logical channel takes its alerts."""

    digest: DigestRule | None = None
    quiet: QuietRule | None = None


@dataclass(frozen=True, slots=True)
class Hold:
    until: datetime
    reason: HoldReason


def _wall(day: datetime, at: time, tz: ZoneInfo) -> datetime:
    """``at`` on the local date of ``day`` in ``tz``, as an aware UTC instant. A wall time
    skipped by a clock change is read forward: with fold 0, zoneinfo gives it the offset from
    before the gap, so it lands after the gap (02:30 becomes 03:30)."""
    return datetime.combine(day.date(), at, tz).astimezone(UTC)


def next_digest(rule: DigestRule, now: datetime) -> datetime:
    """The first digest time strictly after ``now``."""
    local = now.astimezone(rule.tz)
    for offset in range(8):
        day = local + timedelta(days=offset)
        if day.weekday() not in rule.days:
            continue
        when = _wall(day, rule.at, rule.tz)
        if when > now:
            return when
    raise ValueError("a digest needs at least one day")  # the configuration ensures it


def quiet_end(rule: QuietRule, now: datetime) -> datetime | None:
    """When the quiet period that ``now`` is in ends, or ``None`` when it is not quiet."""
    local = now.astimezone(rule.tz)
    for offset in (-1, 0):
        day = local + timedelta(days=offset)
        start = _wall(day, rule.start, rule.tz)
        end_day = day if rule.end > rule.start else day + timedelta(days=1)
        end = _wall(end_day, rule.end, rule.tz)
        if start <= now < end:
            return end
    return None


def is_urgent(alert: Alert, rule: QuietRule, until: datetime, now: datetime) -> bool:
    if alert.kind in rule.urgent:
        return True
    if alert.kind == "session-reminder":
        return alert.event_start is not None and alert.event_start < until
    if alert.kind == "session-change":
        return alert.event_start is not None and alert.event_start - now < URGENT_CHANGE
    return False


def hold_for(alert: Alert, channel: ChannelName, rules: ChannelRules, now: datetime) -> Hold | None:
    """Whether ``alert`` waits before going to ``channel``, and until when."""
    if channel.startswith("dm:"):
        return None
    if rules.digest is not None and alert.kind in rules.digest.kinds:
        return Hold(next_digest(rules.digest, now), "digest")
    if rules.quiet is not None:
        end = quiet_end(rules.quiet, now)
        if end is not None and not is_urgent(alert, rules.quiet, end, now):
            return Hold(end, "quiet")
    return None


def grouped_alerts(
    reason: HoldReason,
    channel: ChannelName,
    held: Sequence[Alert],
    now: datetime,
    tz: ZoneInfo,
) -> tuple[Alert, ...]:
    """The message(s) that release ``held`` (oldest first) in ``channel``: every alert's title
    and link, and every item of an alert that lists several (a burst of news), split into parts
    that every platform takes whole. Ids depend only on what is released, so grouping the same
    rows again gives the same alerts."""
    lines: list[tuple[Span, ...]] = []
    for alert in held:
        lines.extend(messages.held_lines(alert, tz))
    parts: list[list[tuple[Span, ...]]] = [[]]
    size = 0
    for line in lines:
        length = sum(len(span.text) + len(span.href or "") for span in line) + 4
        if parts[-1] and (len(parts[-1]) >= GROUP_ITEMS or size + length > GROUP_CHARS):
            parts.append([])
            size = 0
        parts[-1].append(line)
        size += length
    ident = digest(reason, channel, *(a.id for a in held))
    out = []
    for number, part in enumerate(parts, start=1):
        body = messages.grouped_body(reason, part, number, len(parts), len(held))
        out.append(
            Alert(
                kind=_kind(held),
                id=AlertId(f"{reason}:{channel}:{ident}:{number}"),
                channels=(channel,),
                source=reason,
                title=messages.grouped_title(reason, len(held), number, len(parts)),
                url=None,
                text=render_plain(body),
                at=now,
                body=body,
            )
        )
    return tuple(out)


def _kind(alerts: Sequence[Alert]) -> AlertKind:
    kinds = {a.kind for a in alerts}
    return kinds.pop() if len(kinds) == 1 else "news"
