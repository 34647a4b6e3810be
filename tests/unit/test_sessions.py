"""Reminder ladder and change alerts, with a fixed clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.clauses import ClauseSnapshot, plan_clauses
from bot.domain.model import ChannelName, Clause, SessionEvent
from bot.domain.sessions import (
    ReminderState,
    Revision,
    Snapshot,
    plan_changes,
    plan_reminders,
)
from bot.domain.text import render_plain

TZ = ZoneInfo("Europe/Vienna")
LEADS = [timedelta(days=14), timedelta(days=7), timedelta(days=1), timedelta(hours=1), timedelta(0)]
CH = (ChannelName("alerts"),)
T = datetime(2026, 12, 31, 15, 0, tzinfo=UTC)


def event(**kw: object) -> SessionEvent:
    base: dict[str, object] = {
        "key": "sessions:close",
        "source": "sessions",
        "title": "Close of signature",
        "start": T,
        "end": T + timedelta(hours=3),
        "timezone": "America/New_York",
        "location": "UN Headquarters, New York",
        "url": "https://treaties.un.org/x",
    }
    base.update(kw)
    return SessionEvent(**base)  # type: ignore[arg-type]


def ticks(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    while start <= end:
        yield start
        start += step


def run(
    events: list[SessionEvent], times: Iterator[datetime], state: ReminderState, known: datetime
) -> tuple[ReminderState, list[tuple[datetime, str, str]]]:
    sent = []
    for now in times:
        plan = plan_reminders(
            events, {e.key: known for e in events}, state, now, TZ, lead_times=LEADS, channels=CH
        )
        state = plan.state
        sent += [(now, a.title, a.text) for a in plan.alerts]
    return state, sent


def test_each_lead_time_fires_once_and_never_again() -> None:
    e = event()
    known = T - timedelta(days=30)
    state, sent = run(
        [e],
        ticks(T - timedelta(days=15), T + timedelta(days=2), timedelta(minutes=10)),
        ReminderState(),
        known,
    )
    assert [when for when, _, _ in sent] == [T - lead for lead in LEADS]
    assert not any("Sent late" in text for _, _, text in sent)
    assert "starts in 14 days" in sent[0][1]
    assert "starting now" in sent[-1][1]
    # a restart: the same state, the same instants again -> nothing more
    _, again = run(
        [e],
        ticks(T - timedelta(days=15), T + timedelta(days=2), timedelta(minutes=10)),
        state,
        known,
    )
    assert again == []


def test_reminder_shows_both_time_zones_venue_link_and_countdown() -> None:
    plan = plan_reminders(
        [event()], {}, ReminderState(), T - timedelta(days=1), TZ, lead_times=LEADS, channels=CH
    )
    [alert] = plan.alerts
    text = render_plain(alert.body)
    assert "Thu 31 Dec 2026, 16:00–19:00 CET" in text
    assert "local time: Thu 31 Dec 2026, 10:00–13:00 EST" in text
    assert "UN Headquarters, New York" in text
    assert "Starts in 1 day" in text
    assert alert.url == "https://treaties.un.org/x" and alert.channels == CH
    assert alert.kind == "session-reminder"


def test_restart_between_lead_times_keeps_the_ladder() -> None:
    e = event()
    known = T - timedelta(days=30)
    state, first = run(
        [e],
        ticks(T - timedelta(days=15), T - timedelta(days=10), timedelta(hours=1)),
        ReminderState(),
        known,
    )
    restored = ReminderState({k: dict(v) for k, v in state.sent.items()})  # as if reloaded
    _, second = run([e], ticks(T - timedelta(days=10), T, timedelta(hours=1)), restored, known)
    assert len(first) == 1 and len(second) == 4


def test_missed_moment_is_sent_late_once() -> None:
    e = event()
    known = T - timedelta(days=30)
    state, _ = run([e], iter([T - timedelta(days=8)]), ReminderState(), known)
    # down from T-8d until T-20h: the 7d and 1d moments were missed
    _, sent = run(
        [e],
        ticks(T - timedelta(hours=20), T - timedelta(hours=19), timedelta(minutes=10)),
        state,
        known,
    )
    assert len(sent) == 1
    assert "Sent late" in sent[0][2] and "starts in 20 hours" in sent[0][1]


def test_nothing_late_once_the_event_started() -> None:
    e = event()
    known = T - timedelta(days=30)
    state, _ = run([e], iter([T - timedelta(days=8)]), ReminderState(), known)
    _, sent = run([e], iter([T + timedelta(hours=2)]), state, known)
    assert sent == []


def test_moments_before_the_bot_knew_the_event_are_not_sent() -> None:
    e = event()
    known = T - timedelta(days=3)
    _, sent = run([e], ticks(known, T, timedelta(minutes=30)), ReminderState(), known)
    assert [when for when, _, _ in sent] == [T - timedelta(days=1), T - timedelta(hours=1), T]


def test_reschedule_replans_without_repeating_past_leads() -> None:
    e = event()
    known = T - timedelta(days=30)
    state, first = run(
        [e],
        ticks(T - timedelta(days=15), T - timedelta(days=5), timedelta(hours=1)),
        ReminderState(),
        known,
    )
    assert len(first) == 2  # 14d and 7d
    moved = replace(e, start=T + timedelta(days=3), end=T + timedelta(days=3, hours=3))
    _, sent = run(
        [moved],
        ticks(T - timedelta(days=5), T + timedelta(days=4), timedelta(hours=1)),
        state,
        known,
    )
    new_start = T + timedelta(days=3)
    assert [when for when, _, _ in sent] == [
        new_start - timedelta(days=7),
        new_start - timedelta(days=1),
        new_start - timedelta(hours=1),
        new_start,
    ]


def test_dst_crossing_event() -> None:
    # Vienna switches to summer time on Sun 29 Mar 2026 at 02:00
    start = datetime(2026, 3, 29, 10, 0, tzinfo=TZ).astimezone(UTC)
    e = event(start=start, end=start + timedelta(hours=8), timezone="Europe/Vienna")
    known = start - timedelta(days=3)
    _, sent = run(
        [e],
        ticks(start - timedelta(days=3), start + timedelta(hours=1), timedelta(minutes=15)),
        ReminderState(),
        known,
    )
    assert [when for when, _, _ in sent] == [
        start - timedelta(days=1),
        start - timedelta(hours=1),
        start,
    ]
    assert "Sun 29 Mar 2026, 10:00–18:00 CEST" in sent[0][2]
    assert "local time" not in sent[0][2]  # the venue's zone is the coalition's


def test_no_reminders_for_cancelled_or_postponed() -> None:
    for status in ("cancelled", "postponed", "concluded"):
        _, sent = run(
            [event(status=status)],
            ticks(T - timedelta(days=15), T, timedelta(hours=1)),
            ReminderState(),
            T - timedelta(days=30),
        )
        assert sent == []


def test_tentative_is_said() -> None:
    plan = plan_reminders(
        [event(status="tentative")],
        {},
        ReminderState(),
        T - timedelta(days=7),
        TZ,
        lead_times=LEADS,
        channels=CH,
    )
    assert "(tentative)" in plan.alerts[0].text


def test_per_event_lead_times_and_channels() -> None:
    e = event(lead_times=(timedelta(days=2),), channels=(ChannelName("ops"),))
    _, sent = run(
        [e],
        ticks(T - timedelta(days=15), T, timedelta(hours=1)),
        ReminderState(),
        T - timedelta(days=30),
    )
    assert [when for when, _, _ in sent] == [T - timedelta(days=2)]
    plan = plan_reminders(
        [e], {}, ReminderState(), T - timedelta(days=2), TZ, lead_times=LEADS, channels=CH
    )
    assert plan.alerts[0].channels == ("ops",)


NOW = T - timedelta(days=20)


def first_snapshot(events: list[SessionEvent]) -> Snapshot:
    plan = plan_changes("cal", Snapshot(), events, NOW, TZ, complete=True, channels=CH)
    assert plan.alerts == () and plan.changed
    return plan.snapshot


def changes(prev: Snapshot, events: list[SessionEvent], complete: bool = True) -> list[str]:
    plan = plan_changes("cal", prev, events, NOW, TZ, complete=complete, channels=CH)
    return [a.title for a in plan.alerts]


def test_changes_between_versions() -> None:
    a, b = event(key="cal:a", title="A"), event(key="cal:b", title="B")
    snap = first_snapshot([a, b])
    moved_later = replace(a, start=T + timedelta(days=1), end=T + timedelta(days=1, hours=3))
    assert changes(snap, [moved_later, b]) == ["Session rescheduled: A"]
    assert changes(snap, [replace(a, location="Vienna International Centre"), b]) == [
        "Session moved: A"
    ]
    assert changes(snap, [replace(a, status="cancelled"), b]) == ["Session cancelled: A"]
    assert changes(snap, [replace(a, status="tentative"), b]) == ["Session status changed: A"]
    c = event(key="cal:c", title="C", kind="deadline")
    assert changes(snap, [a, b, c]) == ["Deadline added: C"]
    assert changes(snap, [a]) == ["Session removed from the calendar: B"]
    assert changes(snap, [a, b]) == []


def test_change_texts_show_old_and_new() -> None:
    a = event(key="cal:a", title="A")
    snap = first_snapshot([a])
    later = replace(a, start=T + timedelta(days=1), end=T + timedelta(days=1, hours=3))
    [alert] = plan_changes("cal", snap, [later], NOW, TZ, complete=True, channels=CH).alerts
    assert "Thu 31 Dec 2026, 16:00–19:00 CET → Fri 01 Jan 2027, 16:00–19:00 CET" in alert.text
    [moved] = plan_changes(
        "cal", snap, [replace(a, location="Vienna")], NOW, TZ, complete=True, channels=CH
    ).alerts
    assert "UN Headquarters, New York → Vienna" in moved.text


def test_failed_or_empty_fetch_cancels_nothing() -> None:
    a, b = event(key="cal:a", title="A"), event(key="cal:b", title="B")
    snap = first_snapshot([a, b])
    empty = plan_changes("cal", snap, [], NOW, TZ, complete=True, channels=CH)
    assert empty.alerts == () and set(empty.snapshot.events) == {"cal:a", "cal:b"}
    partial = plan_changes("cal", snap, [a], NOW, TZ, complete=False, channels=CH)
    assert partial.alerts == () and set(partial.snapshot.events) == {"cal:a", "cal:b"}


def test_history_edits_and_past_events_are_quiet() -> None:
    old = event(key="cal:old", start=NOW - timedelta(days=400), end=NOW - timedelta(days=390))
    snap = first_snapshot([old])
    assert changes(snap, [replace(old, location="Elsewhere")]) == []
    past_added = event(key="cal:p", start=NOW - timedelta(days=50), end=NOW - timedelta(days=49))
    assert changes(snap, [old, past_added]) == []


def test_change_alert_ids_are_stable() -> None:
    a = event(key="cal:a", title="A")
    snap = first_snapshot([a])
    later = replace(a, start=T + timedelta(days=1))
    one = plan_changes("cal", snap, [later], NOW, TZ, complete=True, channels=CH).alerts
    two = plan_changes("cal", snap, [later], NOW, TZ, complete=True, channels=CH).alerts
    assert [x.id for x in one] == [x.id for x in two]


def clause(status: str) -> Clause:
    return Clause(
        "art-4",
        "4",
        "Offences established in accordance with other conventions",
        status,
        "Scope creep.",
        ("scope",),
        ("https://e.org/a",),
    )  # type: ignore[arg-type]


def test_clause_status_change_posts_one_alert() -> None:
    first = plan_clauses(ClauseSnapshot(), [clause("open")], NOW, CH)
    assert first.alerts == () and first.changed
    same = plan_clauses(first.snapshot, [clause("open")], NOW, CH)
    assert same.alerts == () and not same.changed
    changed = plan_clauses(first.snapshot, [clause("contested")], NOW, CH)
    [alert] = changed.alerts
    assert alert.kind == "clause-change" and alert.source == "art-4"
    assert "open → contested" in alert.text and "Art. 4" in alert.text
    assert alert.url == "https://e.org/a"
    after = plan_clauses(changed.snapshot, [clause("contested")], NOW, CH)
    assert after.alerts == ()


def test_each_change_a_calendar_shows_raises_the_sequence_once() -> None:
    a, b = event(key="cal:a", title="A"), event(key="cal:b", title="B")
    snap = first_snapshot([a, b])
    assert snap.revision("cal:a") == Revision(0, NOW, NOW) and snap.sequence == {}
    later = NOW + timedelta(days=1)
    edits = [
        replace(a, start=T + timedelta(days=1)),
        replace(a, start=T + timedelta(days=1), location="Vienna"),
        replace(a, start=T + timedelta(days=1), location="Vienna", status="tentative"),
        replace(a, start=T + timedelta(days=1), location="Vienna", status="tentative", title="A2"),
    ]
    for count, edited in enumerate(edits, 1):
        plan = plan_changes("cal", snap, [edited, b], later, TZ, complete=True, channels=CH)
        snap = plan.snapshot
        assert plan.changed and snap.revision("cal:a") == Revision(count, NOW, later)
        assert snap.revision("cal:b") == Revision(0, NOW, NOW)
    same = plan_changes("cal", snap, [edits[-1], b], later + timedelta(hours=1), TZ, complete=True)
    assert not same.changed and same.snapshot.revision("cal:a") == Revision(4, NOW, later)


def test_a_new_description_is_a_modification_not_a_new_sequence() -> None:
    snap = first_snapshot([event(key="cal:a")])
    later = NOW + timedelta(hours=2)
    plan = plan_changes(
        "cal", snap, [event(key="cal:a", description="Agenda out")], later, TZ, complete=True
    )
    assert plan.changed and plan.alerts == ()
    assert plan.snapshot.revision("cal:a") == Revision(0, NOW, later)


def test_an_incomplete_listing_keeps_the_revisions_of_what_it_left_out() -> None:
    a, b = event(key="cal:a", title="A"), event(key="cal:b", title="B")
    snap = first_snapshot([a, b])
    later = NOW + timedelta(hours=1)
    snap = plan_changes("cal", snap, [a, replace(b, title="B2")], later, TZ, complete=True).snapshot
    plan = plan_changes("cal", snap, [a], later + timedelta(hours=1), TZ, complete=False)
    assert plan.snapshot.revision("cal:b") == Revision(1, NOW, later)
    assert not plan.changed
