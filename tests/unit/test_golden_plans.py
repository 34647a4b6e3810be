"""What the planners decide, in full: for each case of ``CASES`` (a feed poll, a change of the
timeline, the reminders due, the depositary's record, held alerts released), every alert with
every field (id, channels, source, link, time, event start, subjects, title, text and body) and
the state kept, against ``tests/data/plans/<case>.txt``.

The other planner tests check one rule each; these pin everything a plan carries, so that a
field silently dropped or an id that changes between two plannings shows up as a diff.
After an intended change, rewrite the expected files and read the diff:

    TREATY_BOT_WRITE_GOLDEN=1 python -m pytest tests/unit/test_golden_plans.py
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.clauses import ClauseSnapshot, plan_clauses
from bot.domain.holding import grouped_alerts
from bot.domain.matching import Matcher
from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    Clause,
    FeedItem,
    FeedState,
    SessionEvent,
    SourceHealth,
    SourceId,
)
from bot.domain.planner import (
    REISSUE_GRACE,
    SEEN_AT_LEAST,
    SEEN_RETENTION,
    FeedPlan,
    FeedRule,
    HealthRule,
    fingerprint,
    next_poll_delay,
    plan_feed,
    plan_health,
)
from bot.domain.sessions import ReminderState, Snapshot, plan_changes, plan_reminders
from bot.domain.text import para
from bot.domain.treaty import (
    EntryIntoForceRule,
    Participant,
    Statement,
    TreatySnapshot,
    TreatySource,
    TreatyStatus,
    plan_treaty,
    projection,
)
from tests.unit.test_golden_replies import check, rendered

TZ = ZoneInfo("Europe/Vienna")
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
ALERTS = (ChannelName("alerts"),)


# ------------------------------------------------------------------------------- dumping


def dump_alert(a: Alert) -> list[str]:
    start = a.event_start.isoformat() if a.event_start is not None else "-"
    return [
        f"alert {a.kind} {a.id}",
        f"  channels={','.join(a.channels)} source={a.source} url={a.url}",
        f"  at={a.at.isoformat()} event_start={start} subjects={','.join(a.subjects) or '-'}",
        f"  title: {a.title}",
        *(f"  | {line}" for line in rendered(a.body)),
        *(f"  text: {line}" for line in a.text.split("\n")),
    ]


def dump_alerts(alerts: Iterable[Alert]) -> list[str]:
    return [line for a in alerts for line in dump_alert(a)]


def dump_feed(plan: FeedPlan) -> list[str]:
    state = plan.state
    return [
        f"changed={plan.changed} initialized={state.initialized}",
        f"seen ({len(state.seen)}):",
        *(f"  {k} {t.isoformat()}" for k, t in sorted(state.seen.items())[:12]),
        f"fingerprints ({len(state.fingerprints)}):",
        *(f"  {k} {f}" for k, f in sorted(state.fingerprints.items())[:12]),
        *(f"news {n!r}" for n in plan.news),
        *dump_alerts(plan.alerts),
    ]


def dump_snapshot(s: Snapshot) -> list[str]:
    return [
        f"snapshot initialized={s.initialized}",
        *(f"  event {e!r}" for _, e in sorted(s.events.items())),
        *(f"  first_seen {k} {t.isoformat()}" for k, t in sorted(s.first_seen.items())),
        *(f"  sequence {k} {n}" for k, n in sorted(s.sequence.items())),
        *(f"  changed_at {k} {t.isoformat()}" for k, t in sorted(s.changed_at.items())),
    ]


# ------------------------------------------------------------------------------- feeds


def rule(**kw: object) -> FeedRule:
    base: dict[str, object] = {
        "source": SourceId("hrw"),
        "name": "Human Rights Watch",
        "channels": (ChannelName("alerts"), ChannelName("news")),
        "matcher": Matcher.build(["cybercrime", "treaty"], ["sport"]),
    }
    base.update(kw)
    return FeedRule(**base)  # type: ignore[arg-type]


def item(n: int, title: str = "Cybercrime treaty news", hours: float = 0, **kw: object) -> FeedItem:
    base: dict[str, object] = {
        "key": f"id-{n}",
        "title": f"{title} {n}",
        "link": f"https://www.e.org/news/{n}/",
        "summary": f"What happened, part {n}.",
        "published": NOW - timedelta(hours=hours),
    }
    base.update(kw)
    return FeedItem(**base)  # type: ignore[arg-type]


def seen_state(*items: FeedItem, at: datetime = NOW - timedelta(days=1)) -> FeedState:
    prints = {i.key: f for i in items if (f := fingerprint(i)) is not None}
    return FeedState(True, {i.key: at for i in items}, prints)


def first_poll_with_backfill(backfill: int) -> list[str]:
    items = [item(1, hours=1), item(2, "Football results", hours=2), item(3, hours=3)]
    return dump_feed(plan_feed(rule(backfill=backfill), FeedState(), items, NOW, TZ))


def new_items() -> list[str]:
    old = [item(1, hours=30), item(2, hours=29)]
    listing = [
        item(5, "Sport and treaty", hours=1),
        item(4, hours=2, link=None),
        item(3, "Treaty signed", hours=3, published=None),
        *old,
    ]
    return dump_feed(plan_feed(rule(), seen_state(*old), listing, NOW, TZ))


def exactly_max_new_items() -> list[str]:
    old = [item(1, hours=30)]
    listing = [item(n, hours=n) for n in (4, 3, 2)] + old
    return dump_feed(plan_feed(rule(max_new_items=3), seen_state(*old), listing, NOW, TZ))


def burst() -> list[str]:
    old = [item(1, hours=300)]
    listing = [item(n, "Cybercrime treaty: " + "detail " * 15, hours=n) for n in range(45, 1, -1)]
    return dump_feed(plan_feed(rule(max_new_items=5), seen_state(*old), [*listing, *old], NOW, TZ))


def burst_of(count: int) -> list[str]:
    """A burst whose parts are bound by characters, not by the number of items."""
    old = [item(1, hours=300)]
    listing = [
        item(n, "Cybercrime treaty: " + "detail " * 15, hours=n) for n in range(count + 1, 1, -1)
    ]
    plan = plan_feed(rule(max_new_items=5), seen_state(*old), [*listing, *old], NOW, TZ)
    return [
        f"{a.title}: {len(a.body[1].items)} items, {len(a.text)} characters" for a in plan.alerts
    ]  # type: ignore[union-attr]


def reissue() -> list[str]:
    """A re-issue in mass: repeats of shown items and items older than the last successful
    poll, with two genuine new items."""
    last = NOW - timedelta(hours=2)
    shown = [item(n, hours=100 + n) for n in range(1, 4)]
    repeats = [
        FeedItem(f"new-{n}", f"cybercrime treaty NEWS {n}", f"http://e.org/news/{n}#x", "", NOW)
        for n in range(1, 4)
    ]
    older = [item(20 + n, hours=3 + n) for n in range(4)]
    boundary = item(30, published=last - REISSUE_GRACE)  # exactly at the grace: not older
    genuine = [item(40, hours=1), item(41, hours=0.5)]
    listing = [*genuine, boundary, *older, *repeats]
    plan = plan_feed(rule(max_new_items=5), seen_state(*shown), listing, NOW, TZ, last_success=last)
    return dump_feed(plan)


def few_repeats() -> list[str]:
    """One repeat among few new items: only the repeat is left out."""
    shown = [item(1, hours=100)]
    repeat = FeedItem("again-1", "Cybercrime treaty news 1", "https://e.org/news/1", "", NOW)
    older = item(2, hours=50)
    plan = plan_feed(rule(), seen_state(*shown), [repeat, older, *shown], NOW, TZ, last_success=NOW)
    return dump_feed(plan)


def half_repeats() -> list[str]:
    """Exactly half of many new items look re-issued: not a re-issue in mass."""
    shown = [item(n, hours=100 + n) for n in range(1, 4)]
    repeats = [
        FeedItem(f"r{n}", f"Cybercrime treaty news {n}", f"https://e.org/news/{n}", "", NOW)
        for n in range(1, 4)
    ]
    older = [item(20 + n, hours=10 + n) for n in range(3)]
    genuine = [item(40 + n, hours=0.1 * n) for n in range(6)]
    plan = plan_feed(
        rule(max_new_items=5),
        seen_state(*shown),
        [*genuine, *older, *repeats],
        NOW,
        TZ,
        last_success=NOW - timedelta(hours=1),
    )
    return dump_feed(plan)


def bounded() -> list[str]:
    """Keys no longer listed: the newest are kept up to the bound, none past the retention."""
    cutoff = NOW - SEEN_RETENTION
    seen = {f"gone-{n:03d}": cutoff + timedelta(hours=n) for n in range(SEEN_AT_LEAST + 5)}
    seen["at-the-cutoff"] = cutoff + timedelta(days=30)
    state = FeedState(True, seen, {})
    plan = plan_feed(rule(), state, [item(1)], NOW, TZ)
    retained = FeedState(True, {"at-cutoff": cutoff, "past": cutoff - timedelta(seconds=1)}, {})
    again = plan_feed(rule(), retained, [item(1)], NOW, TZ)
    return [
        f"kept {len(plan.state.seen)}: oldest {min(plan.state.seen.items(), key=lambda p: p[1])}",
        f"gone-006 kept: {'gone-006' in plan.state.seen}, gone-007 kept: "
        f"{'gone-007' in plan.state.seen}",
        f"retention: {sorted(again.state.seen)}",
    ]


def fingerprints() -> list[str]:
    links = [
        "https://www.E.org/a/b#frag#more",
        "http://e.org/a/b/",
        "e.org/a/b",
        "https://e.org/a/b/c/d",
        "ftp://user@e.org/a",
        "  ",
    ]
    return [
        f"{link!r}: {fingerprint(FeedItem('k', '  Same   TITLE ', link, '', None))}"
        for link in links
    ]


def health() -> list[str]:
    hr = HealthRule("hrw", "Human Rights Watch", "feed", 3, ALERTS)
    lines: list[str] = []
    h = SourceHealth(last_success=NOW - timedelta(days=1))
    for n, error in enumerate(["HTTP 503", "timeout", "timeout", "timeout", None, None]):
        plan = plan_health(hr, h, error, NOW + timedelta(minutes=n), not_before=None)
        lines.append(f"poll {n} error={error} changed={plan.changed} health={plan.health!r}")
        lines.extend(dump_alerts(plan.alerts))
        h = plan.health
    quiet = plan_health(HealthRule("x", "X", "calendar", 1, ()), SourceHealth(), "boom", NOW)
    lines.append(f"no channels: {quiet.alerts} {quiet.health!r}")
    lines.append(
        "delays: "
        + ", ".join(
            str(next_poll_delay(timedelta(minutes=10), f, timedelta(hours=2)))
            for f in (-1, 0, 1, 2, 3, 5, 40)
        )
        + f"; cap below every: {next_poll_delay(timedelta(hours=3), 2, timedelta(hours=1))}"
    )
    return lines


# ------------------------------------------------------------------------------- sessions


def event(key: str, start: datetime, **kw: object) -> SessionEvent:
    base: dict[str, object] = {
        "key": f"sessions:{key}",
        "source": "sessions",
        "title": f"Session {key}",
        "start": start,
        "end": start + timedelta(hours=8),
        "location": "Vienna",
        "url": f"https://e.org/{key}",
    }
    base.update(kw)
    return SessionEvent(**base)  # type: ignore[arg-type]


D = datetime(2026, 12, 10, 9, 0, tzinfo=UTC)
BEFORE = (
    event("moved", D),
    event("rescheduled", D),
    event("cancelled", D),
    event("status", D),
    event("removed", D),
    event("past", NOW - timedelta(days=3)),
    event("removed-past", NOW - timedelta(days=3)),
    event("removed-cancelled", D, status="cancelled"),
    event("own-channels", D, channels=(ChannelName("ops"),)),
    event("cal@2026-12-01T09:00:00Z", D),
)
AFTER = (
    event("moved", D, location="Geneva"),
    event("rescheduled", D + timedelta(days=1), location=None),
    event("cancelled", D, status="cancelled"),
    event("status", D, status="postponed", title="Session status, renamed"),
    event("past", NOW - timedelta(days=3), location="Elsewhere"),
    event("own-channels", D, channels=(ChannelName("ops"),), status="tentative"),
    event("added", D + timedelta(days=2)),
    event("added-past", NOW - timedelta(hours=1), end=NOW - timedelta(minutes=1)),
    event("added-ending-now", NOW - timedelta(hours=1), end=NOW),
    event("cal@2026-12-01T09:00:00Z", D),
    event("cal@2026-12-08T09:00:00Z", D + timedelta(days=7)),
    event("cal@2026-11-24T09:00:00Z", D - timedelta(days=7)),
)


def changes(complete: bool, may_be_empty: bool = False) -> list[str]:
    first = plan_changes("sessions", Snapshot(), BEFORE, NOW - timedelta(days=1), TZ, complete=True)
    plan = plan_changes(
        "sessions",
        first.snapshot,
        AFTER,
        NOW,
        TZ,
        complete=complete,
        may_be_empty=may_be_empty,
        channels=ALERTS,
    )
    again = plan_changes("sessions", plan.snapshot, AFTER, NOW, TZ, complete=complete)
    return [
        f"first changed={first.changed} alerts={len(first.alerts)}",
        f"changed={plan.changed}",
        *dump_alerts(plan.alerts),
        *dump_snapshot(plan.snapshot),
        f"again changed={again.changed} alerts={len(again.alerts)}",
    ]


def new_first() -> list[str]:
    """A listing that starts with a new event, then a moved one and one moved into the past;
    an event removed at the very minute it starts."""
    before = (
        event("a", D),
        event("b", D),
        event("gone-now", NOW),
        event("gone-later", NOW + timedelta(minutes=1)),
    )
    first = plan_changes("cal", Snapshot(), before, NOW - timedelta(days=1), TZ, complete=True)
    after = (
        event("new", D),
        event("a", D, location="Geneva"),
        event("b", NOW - timedelta(days=2), end=NOW - timedelta(days=1)),
    )
    plan = plan_changes("cal", first.snapshot, after, NOW, TZ, complete=True)
    return [
        *(f"{a.title}" for a in plan.alerts),
        *dump_snapshot(plan.snapshot)[-6:],
    ]


def empty_listing() -> list[str]:
    first = plan_changes("cal", Snapshot(), BEFORE[:2], NOW - timedelta(days=1), TZ, complete=True)
    kept = plan_changes("cal", first.snapshot, (), NOW, TZ, complete=True)
    emptied = plan_changes("cal", first.snapshot, (), NOW, TZ, complete=True, may_be_empty=True)
    return [
        f"an empty listing: changed={kept.changed} alerts={len(kept.alerts)} "
        f"events={sorted(kept.snapshot.events)}",
        f"may be empty: changed={emptied.changed} events={sorted(emptied.snapshot.events)}",
        *dump_alerts(emptied.alerts),
    ]


def reminders() -> list[str]:
    """A ladder of 14 days, 1 day, 1 hour and the start, with a channel of its own lead time,
    an event with its own ladder, a cancelled one and one known only since yesterday."""
    start = NOW + timedelta(days=1)
    events = [
        event("main", start, channels=(ChannelName("alerts"), ChannelName("ops"))),
        event("own", start, lead_times=(timedelta(hours=1), timedelta(days=1))),
        event("cancelled", start, status="cancelled"),
        event("new", NOW + timedelta(days=3)),
        event("no-url", NOW + timedelta(minutes=30), url=None, status="tentative"),
        event("ops-only", start, channels=(ChannelName("ops"),)),
    ]
    first_seen = {
        "sessions:main": NOW - timedelta(days=30),
        "sessions:own": NOW - timedelta(days=30),
        "sessions:new": NOW - timedelta(hours=1),
        "sessions:no-url": NOW - timedelta(days=2),
        "sessions:ops-only": NOW - timedelta(days=30),
    }
    state = ReminderState(
        {"sessions:gone": {3600: "2026-01-01T00:00:00+00:00"}, "sessions:empty": {}}
    )
    lines: list[str] = []
    for at in (NOW - timedelta(minutes=10), NOW + timedelta(minutes=5), start - timedelta(hours=1)):
        plan = plan_reminders(
            events,
            first_seen,
            state,
            at,
            TZ,
            lead_times=[timedelta(days=14), timedelta(hours=1), timedelta(days=1), timedelta(0)],
            channels=ALERTS,
            calendar_url="https://bot.example.org/calendar.ics",
            channel_lead_times={ChannelName("ops"): [timedelta(hours=2), timedelta(days=3)]},
        )
        lines.append(f"at {at.isoformat()} changed={plan.changed}")
        lines.extend(dump_alerts(plan.alerts))
        lines.extend(f"  sent {k} {sorted(v.items())}" for k, v in sorted(plan.state.sent.items()))
        state = plan.state
    return lines


def reminder_edges() -> list[str]:
    """The start reminder within its grace and after it; a reschedule to later and earlier."""
    start = NOW
    lines: list[str] = []
    for minutes in (0, 29, 30):
        plan = plan_reminders(
            [event("s", start)],
            {"sessions:s": NOW - timedelta(days=1)},
            ReminderState(),
            NOW + timedelta(minutes=minutes),
            TZ,
            lead_times=[timedelta(0)],
            channels=ALERTS,
        )
        lines.append(f"{minutes} min after the start: {[a.title for a in plan.alerts]}")
    sent = ReminderState({"sessions:s": {86400: (NOW + timedelta(hours=12)).isoformat()}})
    for hours in (-20, 0, 12, 40):  # the day-before moment: past, now, ahead
        moved = event("s", NOW + timedelta(days=1, hours=hours))
        plan = plan_reminders(
            [moved],
            {"sessions:s": NOW - timedelta(days=5)},
            sent,
            NOW,
            TZ,
            lead_times=[timedelta(days=1)],
            channels=ALERTS,
        )
        lines.append(
            f"moved by {hours} h: alerts={[a.id for a in plan.alerts]} "
            f"state={dict(plan.state.sent)} changed={plan.changed}"
        )
    late = plan_reminders(
        [event("late", NOW + timedelta(hours=23, minutes=44))],
        {"sessions:late": NOW - timedelta(days=5)},
        ReminderState(),
        NOW,
        TZ,
        lead_times=[timedelta(days=1)],
        channels=ALERTS,
    )
    on_time = plan_reminders(
        [event("late", NOW + timedelta(hours=23, minutes=45))],
        {"sessions:late": NOW - timedelta(days=5)},
        ReminderState(),
        NOW,
        TZ,
        lead_times=[timedelta(days=1)],
        channels=ALERTS,
    )
    # sent 14 days before the first date; moved a day later, its day-before moment is now
    moved = plan_reminders(
        [event("m", NOW + timedelta(days=1))],
        {"sessions:m": NOW - timedelta(days=20)},
        ReminderState({"sessions:m": {14 * 86400: (NOW + timedelta(hours=1)).isoformat()}}),
        NOW,
        TZ,
        lead_times=[timedelta(days=14), timedelta(days=1)],
        channels=ALERTS,
    )
    lines.append(f"moved, next lead due: {[a.id for a in moved.alerts]} {dict(moved.state.sent)}")
    # known only since yesterday: the 14-day moment is passed over, the day-before one is due
    recent = plan_reminders(
        [event("r", NOW + timedelta(days=1))],
        {"sessions:r": NOW - timedelta(days=1)},
        ReminderState(),
        NOW,
        TZ,
        lead_times=[timedelta(days=14), timedelta(days=1)],
        channels=ALERTS,
    )
    lines.append(f"known since: {[a.id for a in recent.alerts]} {dict(recent.state.sent)}")
    # an hour-before reminder missed while the bot was down is not sent after the start
    after_start = plan_reminders(
        [event("a", NOW - timedelta(minutes=10))],
        {"sessions:a": NOW - timedelta(days=5)},
        ReminderState(),
        NOW,
        TZ,
        lead_times=[timedelta(hours=1)],
        channels=ALERTS,
    )
    lines.append(f"after the start: {[a.id for a in after_start.alerts]}")
    lines.append(f"16 minutes late: {'Sent late' in late.alerts[0].text}")
    lines.append(f"15 minutes late: {'Sent late' in on_time.alerts[0].text}")
    return lines


# ------------------------------------------------------------------------------- the treaty

SOURCE = TreatySource("depositary", "UN Treaty Collection", "https://treaties.un.org/x", ALERTS)
RULE = EntryIntoForceRule(instruments=3, days_after=90)
BEFORE_RECORD = TreatyStatus(
    (
        Participant("Germany", date(2025, 10, 25)),
        Participant("Turkey", date(2025, 10, 25)),
        Participant("France", None),
    ),
    (
        Statement("Germany", "declaration", "Old text."),
        Statement("Turkey", "reservation", "A reservation."),
    ),
)
AFTER_RECORD = TreatyStatus(
    (
        Participant("Germany", date(2025, 10, 25), date(2026, 11, 20), "ratification"),
        Participant("Türkiye", date(2025, 10, 25), date(2026, 11, 21), "acceptance"),
        Participant("France", date(2026, 11, 22), date(2026, 11, 22), "approval"),
        Participant("European Union", date(2025, 10, 25), date(2026, 11, 23), "approval"),
        Participant("Viet Nam", date(2025, 10, 25)),
    ),
    (
        Statement("Viet Nam", "reservation", "Viet Nam does not consider itself bound."),
        Statement("Türkiye", "objection", "An objection."),
    ),
)


def treaty() -> list[str]:
    first = plan_treaty(TreatySnapshot(), BEFORE_RECORD, NOW, RULE, SOURCE)
    plan = plan_treaty(first.snapshot, AFTER_RECORD, NOW, RULE, SOURCE)
    same = plan_treaty(plan.snapshot, AFTER_RECORD, NOW, RULE, SOURCE)
    withdrawn = plan_treaty(
        TreatySnapshot(True, AFTER_RECORD),
        TreatyStatus(AFTER_RECORD.participants, ()),
        NOW,
        RULE,
        SOURCE,
    )
    return [
        f"first: alerts={first.alerts} changed={first.changed} problem={first.problem}",
        f"changed={plan.changed}",
        *dump_alerts(plan.alerts),
        f"same record: alerts={same.alerts} changed={same.changed}",
        *dump_alerts(withdrawn.alerts),
        *dump_alerts(
            plan_treaty(
                TreatySnapshot(True, BEFORE_RECORD),
                TreatyStatus(
                    tuple(
                        Participant("Türkiye", p.signed) if p.name == "Turkey" else p
                        for p in BEFORE_RECORD.participants
                    ),
                    (),
                ),
                NOW,
                RULE,
                SOURCE,
            ).alerts
        ),
        *(f"projection {e!r}" for e in projection(AFTER_RECORD, RULE, SOURCE)),
        f"not in force: {projection(BEFORE_RECORD, RULE, SOURCE)}",
    ]


def treaty_refused() -> list[str]:
    many = TreatyStatus(tuple(Participant(f"State {c}", date(2025, 10, 25)) for c in "ABCDEFGHIJ"))
    kept = TreatySnapshot(True, many)
    lines = []
    for lost in (3, 4):
        plan = plan_treaty(kept, TreatyStatus(many.participants[lost:]), NOW, RULE, SOURCE)
        lines.append(
            f"lost {lost}: problem={plan.problem} changed={plan.changed} "
            f"kept={plan.snapshot == kept} alerts={len(plan.alerts)}"
        )
    return lines


# ------------------------------------------------------------------------------- clauses


def clauses() -> list[str]:
    art4 = Clause("art-4", "4", "Scope", "open", summary="Summary.", links=("https://e.org/4",))
    art5 = Clause("art-5", "5", "Sovereignty", "agreed")
    first = plan_clauses(ClauseSnapshot(), [art4], NOW, ALERTS)
    plan = plan_clauses(
        first.snapshot, [Clause("art-4", "4", "Scope", "contested", links=()), art5], NOW, ALERTS
    )
    contested = Clause("art-4", "4", "Scope", "contested")
    same = plan_clauses(plan.snapshot, [contested, art5], NOW, ALERTS)
    reopened = plan_clauses(
        same.snapshot, [contested, Clause("art-5", "5", "Sovereignty", "open")], NOW, ALERTS
    )
    return [
        f"first: alerts={first.alerts} changed={first.changed} {first.snapshot!r}",
        f"changed={plan.changed} {plan.snapshot!r}",
        *dump_alerts(plan.alerts),
        f"same: alerts={same.alerts} changed={same.changed}",
        f"after an unchanged clause: {[a.title for a in reopened.alerts]}",
    ]


# ------------------------------------------------------------------------------- holding


def held(kind: str, n: int, title: str = "", **kw: object) -> Alert:
    base: dict[str, object] = {
        "kind": kind,
        "id": AlertId(f"{kind}:{n}"),
        "channels": ALERTS,
        "source": "x",
        "title": title or f"{kind} {n}",
        "url": f"https://e.org/{n}",
        "text": "",
        "at": NOW - timedelta(hours=n),
        "body": (para("x"),),
    }
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def holding() -> list[str]:
    news = [held("news", n) for n in range(3)]
    mixed = [*news, held("clause-change", 9)]
    many = [held("news", n, "A title of some length " * 6) for n in range(25)]
    return [
        *dump_alerts(grouped_alerts("digest", ChannelName("alerts"), news, NOW, TZ)),
        *dump_alerts(grouped_alerts("quiet", ChannelName("alerts"), mixed, NOW, TZ)),
        *(
            f"part {a.id} {a.title} lines={len(a.body[1].items)} {rendered(a.body)[0]}"  # type: ignore[union-attr]
            for a in grouped_alerts("quiet", ChannelName("ops"), many, NOW, TZ)
        ),
        *(
            f"one kind: {a.kind} {a.id}"
            for a in grouped_alerts(
                "digest",
                ChannelName("alerts"),
                [held("clause-change", 1), held("clause-change", 2)],
                NOW,
                TZ,
            )
        ),
    ]


CASES: dict[str, Callable[[], list[str]]] = {
    "feed-first-poll-backfill-1": lambda: first_poll_with_backfill(1),
    "feed-first-poll-backfill-2": lambda: first_poll_with_backfill(2),
    "feed-first-poll": lambda: first_poll_with_backfill(0),
    "feed-new-items": new_items,
    "feed-exactly-max-new-items": exactly_max_new_items,
    "feed-burst": burst,
    "feed-burst-15": lambda: burst_of(15),
    "feed-burst-16": lambda: burst_of(16),
    "feed-burst-17": lambda: burst_of(17),
    "feed-burst-18": lambda: burst_of(18),
    "feed-burst-35": lambda: burst_of(35),
    "feed-reissue": reissue,
    "feed-few-repeats": few_repeats,
    "feed-half-repeats": half_repeats,
    "feed-bounded": bounded,
    "feed-fingerprints": fingerprints,
    "health": health,
    "sessions-complete": lambda: changes(complete=True),
    "sessions-incomplete": lambda: changes(complete=False),
    "sessions-empty-listing": empty_listing,
    "sessions-new-first": new_first,
    "reminders": reminders,
    "reminder-edges": reminder_edges,
    "treaty": treaty,
    "treaty-refused": treaty_refused,
    "clauses": clauses,
    "holding": holding,
}


@pytest.mark.parametrize("name", list(CASES))
def test_plan_is_whole(name: str) -> None:
    check(name, "\n".join(CASES[name]()) + "\n", "plans")


def test_planning_again_gives_the_same_plan() -> None:
    for name, case in CASES.items():
        assert case() == case(), name
