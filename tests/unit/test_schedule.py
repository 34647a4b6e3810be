"""When a feed is polled next: adaptive intervals, session weeks, the server's word, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from bot.domain.commands import CommandView, handle
from bot.domain.model import SessionEvent, SourceHealth, SourceView
from bot.domain.schedule import Schedule, next_poll, session_windows
from bot.sources.http import parse_max_age, server_wait

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
M = timedelta(minutes=1)
FEED = Schedule(every=30 * M, every_max=180 * M)
CAP = timedelta(hours=6)


def poll(
    schedule: Schedule,
    interval: timedelta | None,
    *,
    changed: bool = False,
    failures: int = 0,
    wait: timedelta | None = None,
    windows: list[tuple[datetime, datetime]] | None = None,
    now: datetime = NOW,
    quiet: timedelta | None = None,
) -> tuple[timedelta, timedelta, str, bool]:
    plan = next_poll(
        schedule,
        interval,
        changed=changed,
        failures=failures,
        backoff_cap=CAP,
        server_wait=wait,
        windows=windows or [],
        now=now,
        quiet=quiet,
    )
    return plan.interval, plan.delay, plan.mode, plan.server


def test_a_quiet_feed_stretches_to_its_ceiling_and_a_change_brings_it_back() -> None:
    interval = None
    seen = []
    for _ in range(7):
        interval, delay, mode, _ = poll(FEED, interval)
        seen.append(delay)
        assert mode == "adaptive"
    assert seen == [45 * M, 67.5 * M, 101.25 * M, 151.875 * M, 180 * M, 180 * M, 180 * M]
    interval, delay, _, _ = poll(FEED, interval, changed=True)
    assert delay == 90 * M
    interval, delay, _, _ = poll(FEED, interval, changed=True)
    assert delay == 45 * M
    interval, delay, _, _ = poll(FEED, interval, changed=True)
    assert delay == 30 * M  # never under the floor
    _, delay, _, _ = poll(FEED, interval, changed=True)
    assert delay == 30 * M


def test_a_feed_is_never_read_more_rarely_than_half_the_time_it_has_been_quiet() -> None:
    """After nothing new the interval grows by half, but not past half the quiet time, and
    never shrinks: right after a change a feed is read at least as often as before."""
    feed = Schedule(every=M, every_max=6 * M)
    assert poll(feed, M, quiet=M)[0] == M  # quiet for a minute: 30 s would do, the floor is 1m
    assert poll(feed, M, quiet=3 * M)[0] == 1.5 * M  # grown by half, under half the quiet time
    assert poll(feed, 1.5 * M, quiet=4 * M)[0] == 2 * M  # half the quiet time
    assert poll(feed, 4 * M, quiet=M)[0] == 4 * M  # never shorter after nothing new
    assert poll(feed, 5 * M, quiet=60 * M)[0] == 6 * M  # never over the ceiling
    assert poll(feed, 4 * M, quiet=M, changed=True)[0] == 2 * M  # a change halves it


def simulate(
    changes_every: timedelta, floor: timedelta, ceiling: timedelta, until: timedelta
) -> tuple[list[timedelta], list[timedelta]]:
    """A feed that changes every ``changes_every`` polled as the schedule says, on a fixed
    clock: the delays between its polls and how long each change waited for one."""
    feed = Schedule(every=floor, every_max=ceiling)
    t, interval, changed_at = timedelta(0), None, None
    seen_change = timedelta(0)  # the last change a poll has read (one at 0: the first body)
    delays, waits = [], []
    while t < until:
        latest = changes_every * (t // changes_every)  # the newest change made by now
        changed = changed_at is None or latest > seen_change
        if changed and changed_at is not None:
            waits.extend(t - c for c in _range(seen_change + changes_every, latest, changes_every))
        if changed:
            changed_at, seen_change = t, latest
        assert changed_at is not None
        interval, delay, _, _ = poll(feed, interval, changed=changed, quiet=t - changed_at)
        delays.append(delay)
        t += delay
    return delays, waits


def _range(first: timedelta, last: timedelta, step: timedelta) -> list[timedelta]:
    out = []
    while first <= last:
        out.append(first)
        first += step
    return out


def test_a_feed_that_changes_every_two_floors_stays_at_its_floor() -> None:
    """The bench's changing feeds: each change is read within ``every``."""
    delays, waits = simulate(2 * M + timedelta(seconds=7), M, 6 * M, timedelta(hours=2))
    assert set(delays) == {M}
    assert waits and max(waits) <= M


def test_a_feed_that_changes_rarely_is_read_at_half_its_pace_and_one_that_sleeps_rarely() -> None:
    delays, waits = simulate(20 * M, M, 60 * M, timedelta(hours=10))
    assert max(delays) <= 10 * M + timedelta(seconds=1)  # half of its 20 minutes
    assert max(waits) <= 10 * M and len(delays) < 10 * 60 / 4  # fewer than one every 4 min
    never, _ = simulate(timedelta(days=365), M, 6 * M, timedelta(hours=1))
    assert never[:7] == [M, M, M, 1.5 * M, 2.25 * M, 3.375 * M, 5.0625 * M]
    assert set(never[7:]) == {6 * M}


def test_a_fixed_schedule_never_moves() -> None:
    fixed = Schedule(every=6 * 60 * M, every_max=6 * 60 * M)
    assert poll(fixed, None) == (360 * M, 360 * M, "fixed", False)
    assert poll(fixed, None, changed=True) == (360 * M, 360 * M, "fixed", False)


def test_a_failing_feed_backs_off_and_keeps_its_interval() -> None:
    interval, delay, mode, _ = poll(FEED, 90 * M, failures=3)
    assert (interval, delay, mode) == (90 * M, 120 * M, "backing off")
    _, delay, _, _ = poll(FEED, 90 * M, failures=20)
    assert delay == CAP


def test_the_server_is_heard_when_it_asks_for_longer_than_the_floor() -> None:
    interval, delay, _, server = poll(FEED, None, wait=timedelta(hours=4))
    assert (interval, delay, server) == (45 * M, timedelta(hours=4), True)
    _, delay, _, server = poll(FEED, None, wait=10 * M)  # shorter than the floor: ignored
    assert (delay, server) == (45 * M, False)
    _, delay, _, server = poll(FEED, None, wait=40 * M)  # longer than floor, not than the plan
    assert (delay, server) == (45 * M, False)


def session(start: str, end: str, kind: str = "session", status: str = "scheduled") -> SessionEvent:
    return SessionEvent(
        key=f"s:{start}",
        source="sessions",
        title="Session",
        start=datetime.fromisoformat(start),
        end=datetime.fromisoformat(end),
        kind=kind,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
    )


def test_a_session_week_is_polled_at_its_own_interval_from_the_day_before() -> None:
    events = [
        session("2026-12-07T15:00:00+00:00", "2026-12-11T23:00:00+00:00"),
        session("2026-12-04T10:00:00+00:00", "2026-12-04T11:00:00+00:00", kind="deadline"),
        session("2026-12-05T10:00:00+00:00", "2026-12-05T12:00:00+00:00", status="cancelled"),
    ]
    windows = session_windows(events)
    assert windows == [
        (
            datetime(2026, 12, 6, 15, 0, tzinfo=UTC),
            datetime(2026, 12, 11, 23, 0, tzinfo=UTC),
        )
    ]
    busy = Schedule(every=30 * M, every_max=180 * M, during_sessions=5 * M)
    # long before: adaptive as usual
    assert poll(busy, 180 * M, windows=windows)[1:3] == (180 * M, "adaptive")
    # two hours before the window: the wait is cut at the window's start
    two_hours = datetime(2026, 12, 6, 13, 0, tzinfo=UTC)
    assert poll(busy, 180 * M, windows=windows, now=two_hours)[1] == 120 * M
    # inside: every 5 minutes, the day before and during
    for now in (datetime(2026, 12, 6, 16, 0, tzinfo=UTC), datetime(2026, 12, 9, 3, 0, tzinfo=UTC)):
        assert poll(busy, 180 * M, windows=windows, now=now)[1:3] == (5 * M, "sessions")
    after = datetime(2026, 12, 11, 23, 0, tzinfo=UTC)
    assert poll(busy, 180 * M, windows=windows, now=after)[2] == "adaptive"
    # a feed without during_sessions ignores the sessions
    inside = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)
    assert poll(FEED, 180 * M, windows=windows, now=inside)[1:3] == (180 * M, "adaptive")


def test_cache_control_and_retry_after_are_read() -> None:
    assert parse_max_age("public, max-age=3600") == timedelta(hours=1)
    assert parse_max_age('max-age="600", must-revalidate') == timedelta(minutes=10)
    assert parse_max_age("no-cache, max-age=3600") is None
    assert parse_max_age("s-maxage=60") is None
    assert parse_max_age("max-age=999999999") == timedelta(days=1)
    headers = {"Cache-Control": "max-age=600", "Retry-After": "7200"}
    assert server_wait(headers, NOW) == timedelta(hours=2)
    assert server_wait({}, NOW) is None


def test_feeds_shows_how_each_source_is_scheduled() -> None:
    def view(**extra: object) -> SourceView:
        return SourceView(
            "un",
            "UN press",
            "feed",
            "https://example.org/feed",
            30 * M,
            SourceHealth(last_success=NOW),
            **extra,  # type: ignore[arg-type]
        )

    sources = (
        view(next_poll=NOW + 12 * M, schedule="adaptive", interval=45 * M),
        view(next_poll=NOW + 5 * M, schedule="sessions", interval=30 * M),
    )
    command_view = CommandView((), (), (), sources, ZoneInfo("UTC"))
    from bot.domain.text import render_plain

    text = render_plain(handle("feeds", command_view, NOW).body)
    assert "every 30 minutes, next in 12 minutes, adaptive (now every 45 minutes)" in text
    assert "next in 5 minutes, session week: polled more often" in text
