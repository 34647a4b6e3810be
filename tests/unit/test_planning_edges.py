"""Planning and delivery at their edges: who gets a row, when held alerts wake the outbox, how
full a grouped message gets, what a snapshot saves, and reminders of a moved event."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FixedClock
from bot.delivery import Outbox
from bot.domain import messages as m
from bot.domain.follows import Follow, Person
from bot.domain.holding import GROUP_CHARS, ChannelRules, DigestRule, QuietRule, grouped_alerts
from bot.domain.matching import Matcher
from bot.domain.model import Alert, AlertId, ChannelName, FeedItem, SessionEvent, SourceId
from bot.domain.planner import GROUP_MAX_CHARS, FeedRule, plan_groups
from bot.domain.sessions import ReminderState, Snapshot, plan_changes, plan_reminders
from bot.domain.text import Bullets, para
from bot.errors import DeliveryError
from bot.metrics import Metrics
from bot.store.base import Changes
from bot.store.codec import event_from_json, event_to_json
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore
from tests.unit.test_delivery import Elsewhere, Recording, alert, queue

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
VIENNA = ZoneInfo("Europe/Vienna")
ALERTS = ChannelName("alerts")


# ------------------------------------------------------------------------------- the outbox


async def test_a_follower_gets_an_alert_another_follower_already_has(tmp_path: Path) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    outbox = Outbox(store, {"second": Elsewhere("dm:U1", "dm:U2")}, FixedClock(NOW))
    follows = {
        Person("second", "U1"): (Follow("words", "T2"),),
        Person("second", "U2"): (Follow("words", "T2"),),
    }
    first = outbox.rows_for_people([alert(2, "alerts")], follows)
    await store.commit(Changes(enqueue=first[:1]))  # U1 has it already, U2 not yet
    again = outbox.rows_for_people([alert(2, "alerts")], follows)
    assert [r.key for r in again] == ["a2|dm:U2|second"]
    await store.close()


async def test_the_outbox_wakes_for_the_earliest_release_whatever_the_queue_order(
    tmp_path: Path,
) -> None:
    rules = {
        ChannelName("ops"): ChannelRules(quiet=QuietRule(time(9, 0), time(11, 0), VIENNA)),
        ChannelName("alerts"): ChannelRules(
            digest=DigestRule(time(12, 0), frozenset(range(7)), VIENNA)
        ),
    }
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    clock = FixedClock(NOW)  # 10:00 in Vienna: ops is quiet until 11:00, alerts' digest at 12:00
    outbox = Outbox(store, {"fake": Recording()}, clock, rules=lambda: rules)
    rows = await queue(store, outbox, alert(1, "ops", "alerts"))
    assert [(r.channel, r.state) for r in rows] == [("ops", "held"), ("alerts", "held")]
    report = await outbox.deliver_due()
    assert report.next_release == datetime(2026, 11, 28, 11, 0, tzinfo=VIENNA)
    await store.close()


async def test_the_outbox_depth_leaves_out_rows_refused_for_good(tmp_path: Path) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    fake, metrics = Recording(), Metrics()
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), metrics)
    await queue(store, outbox, alert(1, "gone"), alert(2, "busy"), alert(3, "alerts"))
    fake.fail["gone"] = [DeliveryError("channel_not_found", permanent=True)]
    fake.fail["busy"] = [DeliveryError("HTTP 503")]
    report = await outbox.deliver_due()
    assert (report.sent, report.retrying, report.failed) == (1, 1, 1)
    assert outbox.depth == 1  # only the row that is retried is still to be sent
    assert metrics.registry.get_sample_value("treatybot_outbox_depth") == 1
    await store.close()


# ------------------------------------------------------------------------------- holding


def held_news(n: int, url_length: int) -> Alert:
    return Alert(
        "news",
        AlertId(f"news:{n}"),
        (ALERTS,),
        "x",
        "t" * 100,
        "https://e.org/" + "p" * url_length,
        "",
        NOW - timedelta(hours=n),
        (para("x"),),
    )


def parts(held: list[Alert]) -> list[int]:
    return [len(a.body[1].items) for a in grouped_alerts("digest", ALERTS, held, NOW, UTC_ZONE)]  # type: ignore[union-attr]


def test_held_alerts_fill_a_grouped_message_up_to_its_size() -> None:
    """Ten held alerts whose lines add up to exactly ``GROUP_CHARS`` (140 characters of link
    each, 70 more on the last) are one message; a character more starts a second part; twenty
    such alerts are two full parts."""
    assert GROUP_CHARS == 3000
    full = [held_news(n, 140 + (70 if n == 9 else 0)) for n in range(10)]
    assert parts(full) == [10]
    over = [held_news(n, 140 + (71 if n == 9 else 0)) for n in range(10)]
    assert parts(over) == [9, 1]
    twice = [held_news(n, 140 + (70 if n in (9, 19) else 0)) for n in range(20)]
    assert parts(twice) == [10, 10]


# ------------------------------------------------------------------------------- words


def test_a_held_burst_is_listed_under_a_title_as_short_as_any_alerts() -> None:
    title = "x" * 300  # no space to cut at
    single = Alert("news", AlertId("news:1"), (ALERTS,), "x", title, None, "", NOW)
    burst = Alert(
        "news",
        AlertId("news:2"),
        (ALERTS,),
        "x",
        title,
        None,
        "",
        NOW,
        (para("x"), Bullets((m.news_group_entry(FeedItem("k", "Item", None, "", None), VIENNA),))),
    )
    [single_line] = m.held_lines(single, VIENNA)
    head, _ = m.held_lines(burst, VIENNA)
    assert head[1].text == single_line[1].text == "x" * 199 + "…"


def test_an_event_of_a_kind_this_version_does_not_know_reads_as_a_session() -> None:
    """A state file written by another version may hold an event kind this one does not
    know: its reminders and change alerts call it a session."""
    known = SessionEvent("cal:x", "cal", "Hearing", NOW + timedelta(days=2))
    event = event_from_json({**event_to_json(known), "kind": "hearing"})
    assert m.reminder_title(event, timedelta(days=2), NOW) == "Session starts in 2 days: Hearing"
    assert m.reminder_title(event, timedelta(0), NOW) == "Session starting now: Hearing"
    assert m.session_change_title("moved", event) == "Session moved: Hearing"
    body = m.session_change_body("moved", known, event, VIENNA, NOW)
    assert body[0].spans[0].text == "Session moved: "  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- bursts

RULE = FeedRule(SourceId("hrw"), "HRW", (ALERTS,), Matcher((), ()))


def burst(count: int, longer: dict[int, int]) -> list[int]:
    """Items of a 100-character title and an 80-character path, some with a longer path."""
    items = [
        FeedItem(f"k{n}", "x" * 100, "https://e.org/" + "p" * (80 + longer.get(n, 0)), "", None)
        for n in range(count)
    ]
    alerts = plan_groups(RULE, items, NOW, UTC_ZONE)
    assert all(len(a.text) <= GROUP_MAX_CHARS for a in alerts)
    return [len(a.body[1].items) for a in alerts]  # type: ignore[union-attr]


def test_a_burst_fills_each_message_up_to_its_size() -> None:
    """Fourteen items whose lines take exactly the room a message has (its header counted at
    its longest) are one message; a character more makes two; twenty-eight are two."""
    assert burst(14, {13: 111}) == [14]
    assert burst(14, {13: 112}) == [7, 7]
    assert burst(28, {13: 111, 27: 111}) == [14, 14]


# ------------------------------------------------------------------------------- sessions


def session(**kw: object) -> SessionEvent:
    base: dict[str, object] = {
        "key": "cal:x",
        "source": "cal",
        "title": "Ad Hoc Committee",
        "start": NOW + timedelta(days=10),
        "end": NOW + timedelta(days=10, hours=8),
        "channels": (ALERTS,),
    }
    base.update(kw)
    return SessionEvent(**base)  # type: ignore[arg-type]


def test_a_snapshot_without_first_seen_times_is_saved_with_them() -> None:
    """A snapshot read without the time an event was first seen (an older or damaged state)
    is written back with it, so that the event is not taken as new at every poll."""
    known = Snapshot(True, {"cal:x": session()})
    plan = plan_changes("cal", known, [session()], NOW, VIENNA, complete=True)
    assert plan.changed and plan.alerts == ()
    assert plan.snapshot.first_seen == {"cal:x": NOW}


def test_an_event_that_changed_only_its_channels_is_saved() -> None:
    yesterday = NOW - timedelta(days=1)
    first = plan_changes("cal", Snapshot(), [session()], yesterday, VIENNA, complete=True)
    ops = session(channels=(ChannelName("ops"),))
    plan = plan_changes("cal", first.snapshot, [ops], NOW, VIENNA, complete=True)
    assert plan.changed and plan.alerts == ()
    assert plan.snapshot.events["cal:x"] == ops


def test_a_moved_event_gets_its_start_reminder_after_its_ladder_grew() -> None:
    """The start reminder was sent for the old date, when only start reminders were
    configured; an hour-before one is added and the event moves a day later. The bot is then
    down from before the new hour-before moment until ten minutes after the new start: the
    start reminder is sent for the new date."""
    first_seen = {"cal:x": NOW - timedelta(days=30)}
    sent = ReminderState({"cal:x": {0: (NOW - timedelta(hours=2)).isoformat()}})
    moved = session(start=NOW + timedelta(days=1), end=NOW + timedelta(days=1, hours=8))
    ladder = [timedelta(hours=1), timedelta(0)]
    kw: dict[str, object] = {"lead_times": ladder, "channels": (ALERTS,)}
    now = plan_reminders([moved], first_seen, sent, NOW, VIENNA, **kw)  # type: ignore[arg-type]
    assert now.alerts == ()
    later = moved.start + timedelta(minutes=10)
    back = plan_reminders([moved], first_seen, now.state, later, VIENNA, **kw)  # type: ignore[arg-type]
    assert [a.title for a in back.alerts] == ["Session starting now: Ad Hoc Committee"]


def test_a_release_of_alerts_of_several_kinds_is_news() -> None:
    """Held alerts of different kinds (none of them news) come out as one message of kind
    news: the grouped message is about several things, not one of them."""
    clause = Alert(
        "clause-change",
        AlertId("c1"),
        (ChannelName("alerts"),),
        "clauses",
        "Art. 4",
        None,
        "text",
        NOW,
    )
    session = Alert(
        "session-change",
        AlertId("s1"),
        (ChannelName("alerts"),),
        "sessions",
        "AHC",
        None,
        "text",
        NOW,
    )
    [grouped] = grouped_alerts("quiet", ChannelName("alerts"), [clause, session], NOW, UTC)
    assert grouped.kind == "news"
    [alone] = grouped_alerts("quiet", ChannelName("alerts"), [clause, clause], NOW, UTC)
    assert alone.kind == "clause-change"


async def test_a_permanent_failure_is_recorded_under_the_channel_s_lease(tmp_path: Path) -> None:
    from tests.unit.test_delivery import Claims, FakeTransport, FencedStore

    raw = FencedStore(tmp_path / "state.json")
    store, fake, claims = AsyncStore(raw), FakeTransport(), Claims("alerts")
    outbox = Outbox(store, {"fake": fake}, FixedClock(NOW), claims=claims)
    await queue(store, outbox, alert(1, "alerts"))
    fake.fail["alerts"] = [DeliveryError("channel_not_found", permanent=True)]
    raw.fences.clear()
    report = await outbox.deliver_due()
    assert report.failed == 1
    assert raw.fences == [{"out:fake:alerts": 1}, {"out:fake:alerts": 1}]  # sending, failed
    await store.close()


def test_digest_and_quiet_times_are_in_utc_whatever_the_machine_s_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The times a held alert waits until are UTC instants (the store keeps every time in
    UTC), even on a machine whose own zone is not UTC."""
    import time as clock

    from bot.domain.holding import next_digest, quiet_end

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    clock.tzset()
    try:
        digest_at = next_digest(DigestRule(time(12, 0), frozenset(range(7)), VIENNA), NOW)
        ends = quiet_end(QuietRule(time(9, 0), time(11, 0), VIENNA), NOW.replace(hour=8, minute=30))
        assert digest_at.utcoffset() == timedelta(0) and digest_at.tzinfo == UTC
        assert ends is not None and ends.utcoffset() == timedelta(0)
    finally:
        monkeypatch.delenv("TZ")
        clock.tzset()
