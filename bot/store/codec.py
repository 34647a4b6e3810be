"""Domain values <-> JSON-ready dicts, for the store."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, cast

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import FOLLOW_KINDS, Follow, FollowKind, Person
from bot.domain.holding import HoldReason
from bot.domain.model import (
    Alert,
    AlertId,
    AlertKind,
    ChannelName,
    Delivery,
    DeliveryState,
    EventKind,
    EventStatus,
    FeedState,
    NewsRecord,
    SessionEvent,
    SourceHealth,
    SourceId,
    SourceRecord,
    Validators,
)
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.text import Block, Bullets, Paragraph, Rich, Span, Style
from bot.domain.treaty import (
    ConsentKind,
    Participant,
    Statement,
    StatementKind,
    TreatySnapshot,
    TreatyStatus,
)
from bot.store.base import DONE_STATES, SENT_ALERT_FIELDS, DeliveryUpdate


def ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def dt(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _span(s: Span) -> list[Any]:
    return [s.text, s.style, s.href]


def _unspan(v: list[Any]) -> Span:
    return Span(str(v[0]), cast(Style, v[1]), v[2])


def rich_to_json(blocks: Rich) -> list[Any]:
    out: list[Any] = []
    for b in blocks:
        if isinstance(b, Paragraph):
            out.append({"p": [_span(s) for s in b.spans]})
        else:
            out.append({"ul": [[_span(s) for s in item] for item in b.items]})
    return out


def rich_from_json(data: list[Any]) -> Rich:
    out: list[Block] = []
    for b in data:
        if "p" in b:
            out.append(Paragraph(tuple(_unspan(s) for s in b["p"])))
        else:
            out.append(Bullets(tuple(tuple(_unspan(s) for s in item) for item in b["ul"])))
    return tuple(out)


def alert_to_json(a: Alert) -> dict[str, Any]:
    return {
        "kind": a.kind,
        "id": a.id,
        "channels": list(a.channels),
        "source": a.source,
        "title": a.title,
        "url": a.url,
        "text": a.text,
        "at": ts(a.at),
        "body": rich_to_json(a.body),
        **({"event_start": ts(a.event_start)} if a.event_start is not None else {}),
    }


def alert_from_json(d: dict[str, Any]) -> Alert:
    at = dt(d["at"])
    assert at is not None
    return Alert(
        kind=cast(AlertKind, d["kind"]),
        id=AlertId(d["id"]),
        channels=tuple(ChannelName(c) for c in d["channels"]),
        source=d["source"],
        title=d["title"],
        url=d["url"],
        text=d.get("text", ""),  # a sent row keeps no text
        at=at,
        body=rich_from_json(d.get("body", [])),
        event_start=dt(d.get("event_start")),
    )


#: The entry of a JSON object of seen keys that holds their fingerprints, a list in the order
#: of the keys. Its value is no time, so a reader of seen keys alone skips it; no feed can use
#: it as an item key (XML cannot carry the NUL character).
FINGERPRINTS = "\x00fingerprints"


def seen_to_json(
    seen: Mapping[str, datetime], fingerprints: Mapping[str, str] | None = None
) -> dict[str, Any]:
    doc: dict[str, Any] = {k: ts(v) for k, v in seen.items()}
    if fingerprints and FINGERPRINTS not in doc:
        doc[FINGERPRINTS] = [fingerprints.get(k, "") for k in seen]
    return doc


def seen_from_json(d: Mapping[str, Any]) -> dict[str, datetime]:
    return {k: t for k, v in d.items() if (t := dt(v)) is not None}


def fingerprints_from_json(d: Mapping[str, Any]) -> dict[str, str]:
    """The fingerprints of an object of seen keys; none when it has none (an older state) or
    when they do not line up with its keys."""
    listed = d.get(FINGERPRINTS)
    if not isinstance(listed, list):
        return {}
    keys = [k for k in d if k != FINGERPRINTS]
    if len(keys) != len(listed):
        return {}
    return {k: f for k, f in zip(keys, listed, strict=True) if isinstance(f, str) and f}


def source_to_json(r: SourceRecord, *, with_seen: bool = True) -> dict[str, Any]:
    """A source record; its seen keys too unless the store keeps them apart."""
    h = r.health
    doc: dict[str, Any] = {
        "id": r.id,
        "etag": r.validators.etag,
        "last_modified": r.validators.last_modified,
        "body_hash": r.validators.body_hash,
        "initialized": r.feed.initialized,
    }
    if with_seen:
        doc["seen"] = seen_to_json(r.feed.seen, r.feed.fingerprints)
    return doc | {
        "health": {
            "failures": h.failures,
            "last_success": ts(h.last_success),
            "last_error": h.last_error,
            "last_error_at": ts(h.last_error_at),
            "failing_since": ts(h.failing_since),
            "alerted": h.alerted,
            "not_before": ts(h.not_before),
        },
    }


def health_from_json(d: dict[str, Any]) -> SourceHealth:
    """Only the health of a source record (cheap: its seen keys are not decoded)."""
    h = d.get("health", {})
    return SourceHealth(
        failures=int(h.get("failures", 0)),
        last_success=dt(h.get("last_success")),
        last_error=h.get("last_error"),
        last_error_at=dt(h.get("last_error_at")),
        failing_since=dt(h.get("failing_since")),
        alerted=bool(h.get("alerted")),
        not_before=dt(h.get("not_before")),
    )


def source_from_json(
    d: dict[str, Any],
    seen: Mapping[str, datetime] | None = None,
    fingerprints: Mapping[str, str] | None = None,
) -> SourceRecord:
    """A source record, with ``seen`` (and ``fingerprints``) when the store keeps the keys
    apart."""
    if seen is None:
        seen = seen_from_json(d.get("seen", {}))
        fingerprints = fingerprints_from_json(d.get("seen", {}))
    return SourceRecord(
        id=d["id"],
        validators=Validators(d.get("etag"), d.get("last_modified"), d.get("body_hash")),
        feed=FeedState(
            bool(d.get("initialized")), seen, {} if fingerprints is None else fingerprints
        ),
        health=health_from_json(d),
    )


def delivery_to_json(r: Delivery) -> dict[str, Any]:
    return {
        "key": r.key,
        "seq": r.seq,
        "alert": alert_to_json(r.alert),
        "channel": r.channel,
        "transport": r.transport,
        "state": r.state,
        "attempts": r.attempts,
        "next_try": ts(r.next_try),
        "last_error": r.last_error,
        "sent_at": ts(r.sent_at),
        **({"held_for": r.held_for} if r.held_for is not None else {}),
    }


def delivery_from_json(d: dict[str, Any]) -> Delivery:
    return Delivery(
        key=d["key"],
        seq=int(d["seq"]),
        alert=alert_from_json(d["alert"]),
        channel=ChannelName(d["channel"]),
        transport=d["transport"],
        state=cast(DeliveryState, d["state"]),
        attempts=int(d.get("attempts", 0)),
        next_try=dt(d.get("next_try")),
        last_error=d.get("last_error"),
        sent_at=dt(d.get("sent_at")),
        held_for=cast(HoldReason | None, d.get("held_for")),
    )


def delivery_updated(row: Mapping[str, Any], change: DeliveryUpdate) -> dict[str, Any]:
    """An outbox row (as ``delivery_to_json`` writes it) after ``change``: a row whose alert
    went out keeps only ``SENT_ALERT_FIELDS`` of it, and its time."""
    new: dict[str, Any] = dict(row)
    new |= {"state": change.state, "last_error": change.error, "next_try": ts(change.next_try)}
    if change.state in DONE_STATES:
        new["sent_at"] = ts(change.at)
        alert = new.get("alert") or {}
        new["alert"] = {k: alert[k] for k in SENT_ALERT_FIELDS if k in alert}
    if change.count_attempt:
        new["attempts"] = int(new.get("attempts") or 0) + 1
    return new


def news_to_json(n: NewsRecord) -> dict[str, Any]:
    return {
        "source": n.source,
        "key": n.key,
        "title": n.title,
        "link": n.link,
        "published": ts(n.published),
        "seen_at": ts(n.seen_at),
        "matched": list(n.matched),
    }


def news_from_json(d: dict[str, Any]) -> NewsRecord:
    seen_at = dt(d["seen_at"])
    assert seen_at is not None
    return NewsRecord(
        SourceId(d["source"]),
        d["key"],
        d["title"],
        d.get("link"),
        dt(d.get("published")),
        seen_at,
        tuple(d.get("matched", ())),
    )


def event_to_json(e: SessionEvent) -> dict[str, Any]:
    return {
        "key": e.key,
        "source": e.source,
        "title": e.title,
        "start": ts(e.start),
        "end": ts(e.end),
        "kind": e.kind,
        "all_day": e.all_day,
        "timezone": e.timezone,
        "location": e.location,
        "url": e.url,
        "status": e.status,
        "description": e.description,
        "channels": list(e.channels),
        "lead_times": (
            [int(t.total_seconds()) for t in e.lead_times] if e.lead_times is not None else None
        ),
    }


def event_from_json(d: dict[str, Any]) -> SessionEvent:
    start = dt(d["start"])
    assert start is not None
    leads = d.get("lead_times")
    return SessionEvent(
        key=d["key"],
        source=d["source"],
        title=d["title"],
        start=start,
        end=dt(d.get("end")),
        kind=cast(EventKind, d.get("kind", "session")),
        all_day=bool(d.get("all_day")),
        timezone=d.get("timezone"),
        location=d.get("location"),
        url=d.get("url"),
        status=cast(EventStatus, d.get("status", "scheduled")),
        description=d.get("description", ""),
        channels=tuple(ChannelName(c) for c in d.get("channels", ())),
        lead_times=tuple(timedelta(seconds=s) for s in leads) if leads is not None else None,
    )


def snapshot_to_json(s: Snapshot) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "initialized": s.initialized,
        "events": {k: event_to_json(e) for k, e in s.events.items()},
        "first_seen": {k: ts(v) for k, v in s.first_seen.items()},
    }
    if s.sequence:  # only events that changed have one: a state without them reads the same
        doc["sequence"] = dict(s.sequence)
    if s.changed_at:
        doc["changed_at"] = {k: ts(v) for k, v in s.changed_at.items()}
    return doc


def snapshot_from_json(d: dict[str, Any]) -> Snapshot:
    return Snapshot(
        bool(d.get("initialized")),
        {k: event_from_json(e) for k, e in d.get("events", {}).items()},
        {k: t for k, v in d.get("first_seen", {}).items() if (t := dt(v)) is not None},
        {k: int(n) for k, n in d.get("sequence", {}).items()},
        {k: t for k, v in d.get("changed_at", {}).items() if (t := dt(v)) is not None},
    )


def reminders_to_json(r: ReminderState) -> dict[str, Any]:
    return {"sent": {k: {str(lead): start for lead, start in v.items()} for k, v in r.sent.items()}}


def reminders_from_json(d: dict[str, Any]) -> ReminderState:
    return ReminderState(
        {k: {int(lead): str(s) for lead, s in v.items()} for k, v in d.get("sent", {}).items()}
    )


def clauses_to_json(c: ClauseSnapshot) -> dict[str, Any]:
    return {"initialized": c.initialized, "statuses": dict(c.statuses)}


def clauses_from_json(d: dict[str, Any]) -> ClauseSnapshot:
    return ClauseSnapshot(bool(d.get("initialized")), dict(d.get("statuses", {})))


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


def treaty_to_json(t: TreatySnapshot) -> dict[str, Any]:
    return {
        "initialized": t.initialized,
        "participants": [
            {
                "name": p.name,
                "signed": p.signed.isoformat() if p.signed else None,
                "consent": p.consent.isoformat() if p.consent else None,
                "consent_kind": p.consent_kind,
            }
            for p in t.status.participants
        ],
        "statements": [
            {"participant": s.participant, "kind": s.kind, "text": s.text}
            for s in t.status.statements
        ],
    }


def treaty_from_json(d: dict[str, Any]) -> TreatySnapshot:
    participants = tuple(
        Participant(
            str(p["name"]),
            _day(p.get("signed")),
            _day(p.get("consent")),
            cast(ConsentKind | None, p.get("consent_kind")),
        )
        for p in d.get("participants", ())
    )
    statements = tuple(
        Statement(str(s["participant"]), cast(StatementKind, s["kind"]), str(s["text"]))
        for s in d.get("statements", ())
    )
    return TreatySnapshot(bool(d.get("initialized")), TreatyStatus(participants, statements))


def follows_to_json(person: Person, follows: Sequence[Follow]) -> dict[str, Any]:
    return {
        "platform": person.platform,
        "user": person.user,
        "follows": [
            {"kind": f.kind, "value": f.value, **({"article": f.article} if f.article else {})}
            for f in follows
        ],
    }


def follows_from_json(d: dict[str, Any]) -> tuple[Person, tuple[Follow, ...]]:
    follows = tuple(
        Follow(cast(FollowKind, f["kind"]), str(f["value"]), str(f.get("article") or ""))
        for f in d.get("follows", ())
        if f.get("kind") in FOLLOW_KINDS
    )
    return Person(str(d["platform"]), str(d["user"])), follows
