"""Pure decisions about sessions: change alerts between two snapshots, and the reminder ladder.

Snapshots
    A source of events (``sessions.yaml`` or one calendar) is compared with what the bot saw
    last time, event by event (keyed by ``SessionEvent.key``): added, rescheduled, moved,
    cancelled, status changed, removed. The first snapshot of a source only remembers.
    Events that disappear count only when the caller says the listing is complete
    (``complete=True``: a successful, non-truncated fetch that still lists other events), and
    only for events still ahead; a failed or empty fetch never reads as "all cancelled".
    Each event also keeps its revision for calendar subscribers (``Snapshot.revision``): a
    ``sequence`` raised at each change of its title, dates, venue or status (RFC 5545's
    SEQUENCE), and the time of its last change of anything a calendar shows; both are stored
    only once they differ from "never changed", so a snapshot written before they existed
    reads the same.

Reminders
    At each lead time before an event's start (``0`` = at the start) exactly one reminder is
    sent, across restarts: ``ReminderState`` records, per event and lead time, the start it was
    sent for. A moment missed while the bot was not running is sent late, saying so, only while
    the event has not started, and only the latest missed moment (never a burst). Moments from
    before the bot knew the event are never sent. A rescheduled event gets a new ladder: lead
    times already sent whose new moment is in the past are not repeated.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain import messages
from bot.domain.model import Alert, AlertId, ChannelName, SessionEvent
from bot.domain.planner import digest
from bot.domain.text import render_plain

#: A reminder later than this after its moment is marked as late.
LATE_AFTER = timedelta(minutes=15)
#: The "at the start" reminder is still worth sending this long after the start.
START_GRACE = timedelta(minutes=30)
NO_REMINDERS = frozenset({"cancelled", "postponed", "concluded"})


@dataclass(frozen=True, slots=True)
class Revision:
    """An event's version as a calendar shows it: how many times it changed (title, dates,
    venue, status), since when it is known and when it last changed (``None``: unknown)."""

    sequence: int = 0
    first_seen: datetime | None = None
    modified: datetime | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What a source listed last time, since when each event has been known, and, for an
    event that changed since, how many times (``sequence``) and when last (``changed_at``)."""

    initialized: bool = False
    events: Mapping[str, SessionEvent] = field(default_factory=dict)
    first_seen: Mapping[str, datetime] = field(default_factory=dict)
    sequence: Mapping[str, int] = field(default_factory=dict)
    changed_at: Mapping[str, datetime] = field(default_factory=dict)

    def revision(self, key: str) -> Revision:
        first = self.first_seen.get(key)
        return Revision(self.sequence.get(key, 0), first, self.changed_at.get(key, first))


@dataclass(frozen=True, slots=True)
class ChangePlan:
    snapshot: Snapshot
    alerts: tuple[Alert, ...]
    changed: bool


def _ahead(event: SessionEvent, now: datetime) -> bool:
    return (event.end or event.start) > now


def plan_changes(
    source: str,
    previous: Snapshot,
    current: Sequence[SessionEvent],
    now: datetime,
    tz: ZoneInfo,
    *,
    complete: bool,
    may_be_empty: bool = False,
    channels: tuple[ChannelName, ...] = (),
) -> ChangePlan:
    """Compare ``current`` with ``previous``; alerts go to each event's channels (or these).

    An empty listing is never "everything removed", unless ``may_be_empty`` says that it can
    truly be empty (dates computed by the bot itself, which can all cease to apply)."""
    events = {e.key: e for e in current}
    complete = complete and (bool(events) or may_be_empty)
    first_seen = {k: previous.first_seen.get(k, now) for k in events}
    alerts: list[Alert] = []
    if previous.initialized:
        horizon = _series_horizon(previous.events)
        for key, new in events.items():
            old = previous.events.get(key)
            if old is None:
                if _ahead(new, now) and not _next_occurrence(key, horizon):
                    alerts.append(_change(source, None, new, "added", now, tz, channels))
                continue
            if not (_ahead(old, now) or _ahead(new, now)):
                continue  # history edits are not news
            for what in _differences(old, new):
                alerts.append(_change(source, old, new, what, now, tz, channels))
        if complete:
            for key, old in previous.events.items():
                if key not in events and old.start > now and old.status != "cancelled":
                    alerts.append(_change(source, old, None, "removed", now, tz, channels))
    sequence, changed_at = _revisions(previous, events, now)
    if not complete:
        # keep what an incomplete listing did not mention, so nothing is forgotten
        for key, old in previous.events.items():
            if key not in events:
                events[key] = old
                first_seen[key] = previous.first_seen.get(key, now)
                if key in previous.sequence:
                    sequence[key] = previous.sequence[key]
                if key in previous.changed_at:
                    changed_at[key] = previous.changed_at[key]
    snapshot = Snapshot(True, events, first_seen, sequence, changed_at)
    changed = (
        not previous.initialized
        or dict(previous.events) != events
        or dict(previous.first_seen) != first_seen
        or dict(previous.sequence) != sequence
        or dict(previous.changed_at) != changed_at
    )
    return ChangePlan(snapshot, tuple(alerts), changed)


def _revised(old: SessionEvent, new: SessionEvent) -> bool:
    """A change a calendar subscriber must see (RFC 5545: raise SEQUENCE)."""
    return (old.title, old.start, old.end, old.all_day, old.location or "", old.status) != (
        new.title,
        new.start,
        new.end,
        new.all_day,
        new.location or "",
        new.status,
    )


def _edited(old: SessionEvent, new: SessionEvent) -> bool:
    """Any change of what a calendar shows of the event (LAST-MODIFIED)."""
    return _revised(old, new) or (old.kind, old.url, old.description) != (
        new.kind,
        new.url,
        new.description,
    )


def _revisions(
    previous: Snapshot, events: Mapping[str, SessionEvent], now: datetime
) -> tuple[dict[str, int], dict[str, datetime]]:
    """Each listed event's sequence and time of last change; only those that changed."""
    sequence: dict[str, int] = {}
    changed_at: dict[str, datetime] = {}
    for key, new in events.items():
        old = previous.events.get(key)
        if old is None:
            continue  # new (or back after its removal): a fresh revision
        count = previous.sequence.get(key, 0) + (1 if _revised(old, new) else 0)
        at = now if _edited(old, new) else previous.changed_at.get(key)
        if count:
            sequence[key] = count
        if at is not None:
            changed_at[key] = at
    return sequence, changed_at


#: The end of an occurrence's key: ``@`` and the slot it fills in its series (UTC).
_SLOT = re.compile(r"@(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)$")


def _series_horizon(events: Mapping[str, SessionEvent]) -> dict[str, str]:
    """For each recurring series, the latest slot of it that was listed."""
    horizon: dict[str, str] = {}
    for key in events:
        match = _SLOT.search(key)
        if match:
            series = key[: match.start()]
            horizon[series] = max(horizon.get(series, ""), match[1])
    return horizon


def _next_occurrence(key: str, horizon: Mapping[str, str]) -> bool:
    """Whether ``key`` is a later occurrence of a series already listed: one that comes into
    the expansion window as time passes, not an event added to the calendar."""
    match = _SLOT.search(key)
    if match is None:
        return False
    latest = horizon.get(key[: match.start()])
    return latest is not None and match[1] > latest


def _differences(old: SessionEvent, new: SessionEvent) -> list[str]:
    found = []
    if (old.start, old.end) != (new.start, new.end):
        found.append("rescheduled")
    if (old.location or "") != (new.location or ""):
        found.append("moved")
    if old.status != new.status:
        found.append("cancelled" if new.status == "cancelled" else "status")
    return found


def _change(
    source: str,
    old: SessionEvent | None,
    new: SessionEvent | None,
    what: str,
    now: datetime,
    tz: ZoneInfo,
    channels: tuple[ChannelName, ...],
) -> Alert:
    event = new or old
    assert event is not None
    body = messages.session_change_body(what, old, new, tz, now)
    fingerprint = digest(
        what,
        *(repr((e.start, e.end, e.location, e.status)) for e in (old, new) if e is not None),
    )
    return Alert(
        kind="session-change",
        id=AlertId(f"change:{event.key}:{what}:{fingerprint}"),
        channels=event.channels or channels,
        source=source,
        title=messages.session_change_title(what, event),
        url=event.url,
        text=render_plain(body),
        at=now,
        body=body,
        event_start=event.start,
    )


# ------------------------------------------------------------------------------- reminders


@dataclass(frozen=True, slots=True)
class ReminderState:
    """Per event key: lead time in seconds -> the start (ISO) the reminder was sent for."""

    sent: Mapping[str, Mapping[int, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReminderPlan:
    state: ReminderState
    alerts: tuple[Alert, ...]
    changed: bool


def plan_reminders(
    events: Iterable[SessionEvent],
    first_seen: Mapping[str, datetime],
    state: ReminderState,
    now: datetime,
    tz: ZoneInfo,
    *,
    lead_times: Sequence[timedelta],
    channels: tuple[ChannelName, ...],
    calendar_url: str | None = None,
    channel_lead_times: Mapping[ChannelName, Sequence[timedelta]] | None = None,
) -> ReminderPlan:
    """The reminders due at ``now`` and the state that remembers them; with
    ``calendar_url``, each invites to subscribe to the timeline there.

    An event's own lead times apply to all its channels; otherwise a channel listed in
    ``channel_lead_times`` has its own ladder (remembered under ``<event key>#<channels>``),
    and the others share ``lead_times`` (remembered under the event key)."""
    sent: dict[str, dict[int, str]] = {k: dict(v) for k, v in state.sent.items()}
    alerts: list[Alert] = []
    live: set[str] = set()
    own = channel_lead_times or {}
    for event in events:
        if event.status in NO_REMINDERS:
            live.add(event.key)
            continue
        for ladder, targets, state_key in _ladders(event, lead_times, channels, own):
            live.add(state_key)
            record = sent.setdefault(state_key, {})
            alert = _due_reminder(event, ladder, targets, record, first_seen, now, tz, calendar_url)
            if alert is not None:
                if state_key != event.key:  # a channel's own ladder: an alert of its own
                    alert = replace(alert, id=AlertId(f"{alert.id}:{digest(*targets)}"))
                alerts.append(alert)
    for key in list(sent):
        if key not in live or not sent[key]:
            del sent[key]
    new_state = ReminderState({k: v for k, v in sent.items()})
    changed = {k: dict(v) for k, v in state.sent.items()} != sent
    return ReminderPlan(new_state, tuple(alerts), changed)


def _ladders(
    event: SessionEvent,
    lead_times: Sequence[timedelta],
    channels: tuple[ChannelName, ...],
    own: Mapping[ChannelName, Sequence[timedelta]],
) -> list[tuple[list[timedelta], tuple[ChannelName, ...], str]]:
    """(ladder, channels, state key) for each group of the event's channels sharing a ladder."""
    targets = event.channels or channels
    if event.lead_times is not None:
        return [(sorted(set(event.lead_times), reverse=True), targets, event.key)]
    shared = tuple(c for c in targets if c not in own)
    groups: list[tuple[list[timedelta], tuple[ChannelName, ...], str]] = []
    if shared or not targets:
        groups.append((sorted(set(lead_times), reverse=True), shared, event.key))
    for channel in targets:
        if channel in own:
            ladder = sorted(set(own[channel]), reverse=True)
            groups.append((ladder, (channel,), f"{event.key}#{channel}"))
    return groups


def _due_reminder(
    event: SessionEvent,
    ladder: Sequence[timedelta],
    targets: tuple[ChannelName, ...],
    record: dict[int, str],
    first_seen: Mapping[str, datetime],
    now: datetime,
    tz: ZoneInfo,
    calendar_url: str | None,
) -> Alert | None:
    """The reminder due now on one ladder, if any; ``record`` is updated in place."""
    start_iso = event.start.isoformat()
    known_since = first_seen.get(event.key, now)
    due: list[timedelta] = []
    for lead in ladder:
        seconds = int(lead.total_seconds())
        if record.get(seconds) == start_iso:
            continue
        moment = event.start - lead
        if seconds in record:
            # sent for an earlier date of a rescheduled event: a moment that is already
            # past is not repeated; one still ahead is sent again at its new time
            if moment <= now:
                record[seconds] = start_iso
            else:
                del record[seconds]
            continue
        if moment > now:
            continue
        if moment < known_since:
            record[seconds] = start_iso  # from before the bot knew the event
            continue
        due.append(lead)
    if not due:
        return None
    for lead in due:
        record[int(lead.total_seconds())] = start_iso
    lead = min(due)  # the latest moment; earlier missed ones are folded into it
    moment = event.start - lead
    too_late = now >= event.start + (START_GRACE if lead == timedelta(0) else timedelta(0))
    if too_late:
        return None
    late = now - moment > LATE_AFTER
    return _reminder(event, lead, late, now, tz, targets, calendar_url)


def _reminder(
    event: SessionEvent,
    lead: timedelta,
    late: bool,
    now: datetime,
    tz: ZoneInfo,
    channels: tuple[ChannelName, ...],
    calendar_url: str | None,
) -> Alert:
    body = messages.reminder_body(event, lead, late, now, tz, calendar_url=calendar_url)
    return Alert(
        kind="session-reminder",
        id=AlertId(
            f"remind:{event.key}:{int(lead.total_seconds())}:{digest(event.start.isoformat())}"
        ),
        channels=channels,
        source=event.source,
        title=messages.reminder_title(event, lead, now),
        url=event.url,
        text=render_plain(body),
        at=now,
        body=body,
        event_start=event.start,
    )
