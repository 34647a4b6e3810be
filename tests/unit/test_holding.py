"""Digests and quiet hours: when a channel takes an alert, and the message that releases what
was held (pure rules, then the outbox with a real store)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FixedClock
from bot.delivery import Outbox
from bot.domain.holding import (
    GROUP_ITEMS,
    ChannelRules,
    DigestRule,
    QuietRule,
    grouped_alerts,
    hold_for,
    next_digest,
    quiet_end,
)
from bot.domain.model import Alert, AlertId, AlertKind, ChannelName
from bot.domain.text import render_plain
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore
from tests.unit.test_delivery import FakeTransport

VIENNA = ZoneInfo("Europe/Vienna")
ALERTS = ChannelName("alerts")
WEEKDAYS = frozenset(range(5))


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def make(
    n: int,
    kind: AlertKind = "news",
    when: datetime | None = None,
    event_start: datetime | None = None,
) -> Alert:
    return Alert(
        kind,
        AlertId(f"a{n}"),
        (ALERTS,),
        "src",
        f"Title {n}",
        f"https://example.org/{n}",
        f"text {n}",
        when or at("2026-12-05T10:00:00+01:00"),
        event_start=event_start,
    )


DIGEST = DigestRule(time(9, 0), WEEKDAYS, VIENNA)
QUIET = QuietRule(time(22, 0), time(7, 0), VIENNA)


# ------------------------------------------------------------------------------- rules


def test_a_digest_waits_for_its_next_day_and_time() -> None:
    saturday = at("2026-12-05T10:00:00+01:00")
    assert next_digest(DIGEST, saturday) == at("2026-12-07T09:00:00+01:00")  # Monday
    monday_early = at("2026-12-07T08:59:00+01:00")
    assert next_digest(DIGEST, monday_early) == at("2026-12-07T09:00:00+01:00")
    on_the_minute = at("2026-12-07T09:00:00+01:00")
    assert next_digest(DIGEST, on_the_minute) == at("2026-12-08T09:00:00+01:00")
    friday_late = at("2026-12-11T18:00:00+01:00")
    assert next_digest(DIGEST, friday_late) == at("2026-12-14T09:00:00+01:00")
    # the digest's own zone, not UTC: 09:00 in New York
    new_york = DigestRule(time(9, 0), WEEKDAYS, ZoneInfo("America/New_York"))
    assert next_digest(new_york, monday_early) == at("2026-12-07T09:00:00-05:00")


def test_a_digest_day_across_a_clock_change_keeps_its_wall_time() -> None:
    every_day = DigestRule(time(9, 0), frozenset(range(7)), VIENNA)
    before = at("2026-10-24T12:00:00+02:00")  # Saturday; clocks go back that night
    assert next_digest(every_day, before) == at("2026-10-25T09:00:00+01:00")


def test_quiet_hours_across_midnight() -> None:
    assert quiet_end(QUIET, at("2026-12-05T21:59:00+01:00")) is None
    assert quiet_end(QUIET, at("2026-12-05T22:00:00+01:00")) == at("2026-12-06T07:00:00+01:00")
    assert quiet_end(QUIET, at("2026-12-06T03:00:00+01:00")) == at("2026-12-06T07:00:00+01:00")
    assert quiet_end(QUIET, at("2026-12-06T07:00:00+01:00")) is None
    same_day = QuietRule(time(12, 0), time(14, 0), VIENNA)
    assert quiet_end(same_day, at("2026-12-06T13:00:00+01:00")) == at("2026-12-06T14:00:00+01:00")
    assert quiet_end(same_day, at("2026-12-06T15:00:00+01:00")) is None


def test_quiet_hours_end_on_the_wall_clock_when_the_clocks_change() -> None:
    # autumn: 22:00 CEST to 07:00 CET is ten hours, not nine
    night = at("2026-10-24T23:30:00+02:00")
    assert quiet_end(QUIET, night) == at("2026-10-25T07:00:00+01:00")
    assert quiet_end(QUIET, night) - at("2026-10-24T22:00:00+02:00") == timedelta(hours=10)
    # spring: eight hours, still ending at 07:00 local time
    spring = at("2026-03-29T01:00:00+01:00")
    assert quiet_end(QUIET, spring) == at("2026-03-29T07:00:00+02:00")
    # an end that does not exist that night (02:30 is skipped) is read forward
    gap = QuietRule(time(1, 0), time(2, 30), VIENNA)
    assert quiet_end(gap, at("2026-03-29T01:30:00+01:00")) == at("2026-03-29T03:30:00+02:00")


def test_what_goes_through_quiet_hours() -> None:
    rules = ChannelRules(quiet=QUIET)
    night = at("2026-12-05T23:00:00+01:00")
    morning = at("2026-12-06T07:00:00+01:00")
    assert hold_for(make(1, when=night), ALERTS, rules, night) is not None
    held = hold_for(make(1, when=night), ALERTS, rules, night)
    assert held is not None and (held.until, held.reason) == (morning, "quiet")
    # a reminder for what starts before the quiet period ends goes through; a later one waits
    early = make(2, "session-reminder", night, event_start=at("2026-12-06T06:00:00+01:00"))
    late = make(3, "session-reminder", night, event_start=at("2026-12-06T10:00:00+01:00"))
    assert hold_for(early, ALERTS, rules, night) is None
    assert hold_for(late, ALERTS, rules, night) is not None
    # a session change within 48 hours goes through; one for next month waits
    soon = make(4, "session-change", night, event_start=night + timedelta(hours=47))
    later = make(5, "session-change", night, event_start=night + timedelta(days=30))
    assert hold_for(soon, ALERTS, rules, night) is None
    assert hold_for(later, ALERTS, rules, night) is not None
    # source health waits, unless the channel says it is urgent there
    health = make(6, "source-health", night)
    assert hold_for(health, ALERTS, rules, night) is not None
    ops = ChannelRules(
        quiet=QuietRule(time(22, 0), time(7, 0), VIENNA, frozenset({"source-health"}))
    )
    assert hold_for(health, ALERTS, ops, night) is None
    # direct messages are never held
    assert hold_for(make(7, when=night), ChannelName("dm:U1"), rules, night) is None


def test_a_digest_takes_its_kinds_and_leaves_the_others() -> None:
    rules = ChannelRules(digest=DIGEST)
    saturday = at("2026-12-05T10:00:00+01:00")
    news = hold_for(make(1), ALERTS, rules, saturday)
    assert news is not None and news.reason == "digest"
    treaty = make(2, "treaty-action")
    assert hold_for(treaty, ALERTS, rules, saturday) is None
    with_treaty = ChannelRules(
        digest=DigestRule(time(9, 0), WEEKDAYS, VIENNA, frozenset({"news", "treaty-action"}))
    )
    assert hold_for(treaty, ALERTS, with_treaty, saturday) is not None


def test_a_large_release_is_split_and_lists_every_alert() -> None:
    held = [make(n) for n in range(45)]
    parts = grouped_alerts("digest", ALERTS, held, at("2026-12-07T09:00:00+01:00"), VIENNA)
    assert len(parts) == 3
    assert [p.title for p in parts] == [
        "Digest: 45 alerts (part 1 of 3)",
        "Digest: 45 alerts (part 2 of 3)",
        "Digest: 45 alerts (part 3 of 3)",
    ]
    texts = "\n".join(render_plain(p.body) for p in parts)
    assert all(f"Title {n} <https://example.org/{n}>" in texts for n in range(45))
    assert all(len(render_plain(p.body).splitlines()) <= GROUP_ITEMS + 1 for p in parts)
    again = grouped_alerts("digest", ALERTS, held, at("2026-12-08T09:00:00+01:00"), VIENNA)
    assert [p.id for p in again] == [p.id for p in parts]


def test_a_held_burst_is_released_with_every_item_it_lists() -> None:
    from bot.domain.text import Bullets, Span, link, para

    items = tuple((link(f"Burst item {n}", f"https://example.org/b{n}"),) for n in range(30))
    burst = Alert(
        "news",
        AlertId("burst"),
        (ALERTS,),
        "src",
        "Feed: 30 new items",
        None,
        "",
        at("2026-12-05T23:00:00+01:00"),
        body=(para(Span("Feed published 30 new items:")), Bullets(items)),
    )
    parts = grouped_alerts(
        "quiet", ALERTS, [make(1), burst], at("2026-12-06T07:00:00+01:00"), VIENNA
    )
    texts = "\n".join(render_plain(p.body) for p in parts)
    assert "Title 1 <https://example.org/1>" in texts
    assert "Feed: 30 new items" in texts
    assert all(f"Burst item {n} <https://example.org/b{n}>" in texts for n in range(30))
    assert len(parts) == 2


# ------------------------------------------------------------------------------- outbox


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[tuple[Outbox, FakeTransport, FixedClock, AsyncStore]]:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    transport = FakeTransport()
    clock = FixedClock(at("2026-12-05T10:00:00+01:00"))  # a Saturday
    rules = {ALERTS: ChannelRules(digest=DIGEST, quiet=QUIET)}
    yield (
        Outbox(store, {"fake": transport}, clock, rules=lambda: rules, tz=lambda: VIENNA),
        (transport),
        clock,
        store,
    )


async def queue(out: Outbox, store: AsyncStore, alerts: list[Alert]) -> None:
    from bot.store.base import Changes

    await store.commit(Changes(enqueue=out.rows_for(alerts)))


async def test_held_news_is_posted_once_as_the_digest(
    outbox: tuple[Outbox, FakeTransport, FixedClock, AsyncStore],
) -> None:
    out, transport, clock, store = outbox
    await queue(out, store, [make(1), make(2), make(3, "treaty-action")])
    report = await out.deliver_due()
    assert transport.posted == [("alerts", "a3")]  # the treaty action is not news
    assert report.next_release == at("2026-12-07T09:00:00+01:00")
    assert [r.state for r in await store.deliveries(("held",))] == ["held", "held"]

    clock.set(at("2026-12-07T08:59:00+01:00"))
    await out.deliver_due()
    assert len(transport.posted) == 1
    clock.set(at("2026-12-07T11:00:00+01:00"))  # the bot was down at 09:00: posted now
    await out.deliver_due()
    (digest_post,) = transport.posted[1:]
    assert digest_post[1].startswith("digest:alerts:")
    clock.set(at("2026-12-08T09:00:00+01:00"))
    await out.deliver_due()  # once: the next digest is empty and posts nothing
    assert len(transport.posted) == 2
    assert await store.deliveries(("held",)) == []


async def test_a_reload_that_removes_the_digest_releases_what_it_held(
    tmp_path: Path,
) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    transport = FakeTransport()
    clock = FixedClock(at("2026-12-05T10:00:00+01:00"))
    rules = {ALERTS: ChannelRules(digest=DIGEST)}
    out = Outbox(store, {"fake": transport}, clock, rules=lambda: rules, tz=lambda: VIENNA)
    await queue(out, store, [make(1)])
    await out.deliver_due()
    assert transport.posted == []
    rules.clear()
    await out.deliver_due()
    assert len(transport.posted) == 1
