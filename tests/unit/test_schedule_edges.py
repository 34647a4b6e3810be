"""Poll scheduling at its edges (``bot/domain/schedule.py``): the first failure, the minute a
session window opens, a wait that ends exactly at one, the server's word equal to ours."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.domain.model import SessionEvent
from bot.domain.schedule import NextPoll, Schedule, next_poll, session_windows

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ADAPTIVE = Schedule(
    every=timedelta(minutes=15), every_max=4 * HOUR, during_sessions=timedelta(minutes=5)
)


def poll(
    *,
    failures: int = 0,
    server_wait: timedelta | None = None,
    windows: list[tuple[datetime, datetime]] | None = None,
    interval: timedelta = HOUR,
) -> NextPoll:
    return next_poll(
        ADAPTIVE,
        interval,
        changed=False,
        failures=failures,
        backoff_cap=6 * HOUR,
        server_wait=server_wait,
        windows=windows or [],
        now=NOW,
    )


def test_the_first_failure_already_backs_off() -> None:
    assert poll(failures=1) == NextPoll(HOUR, timedelta(minutes=15), "backing off")
    assert poll(failures=2) == NextPoll(HOUR, timedelta(minutes=30), "backing off")


def test_a_session_window_counts_from_its_first_minute_to_its_end() -> None:
    opens = [(NOW, NOW + HOUR)]
    assert poll(windows=opens) == NextPoll(1.5 * HOUR, timedelta(minutes=5), "sessions")
    ended = [(NOW - HOUR, NOW)]
    assert poll(windows=ended).mode == "adaptive"


def test_a_wait_is_cut_at_the_next_window_only_when_it_would_run_into_it() -> None:
    ahead = [(NOW + HOUR, NOW + 3 * HOUR)]
    assert poll(windows=ahead).delay == HOUR  # 1.5 h would run into it: wake at its start
    exactly = [(NOW + 1.5 * HOUR, NOW + 3 * HOUR)]
    assert poll(windows=exactly).delay == 1.5 * HOUR
    assert poll(windows=[(NOW - 2 * HOUR, NOW - HOUR)]).delay == 1.5 * HOUR  # past: not ahead


def test_the_server_is_heard_only_when_it_asks_for_more() -> None:
    assert poll(server_wait=1.5 * HOUR) == NextPoll(1.5 * HOUR, 1.5 * HOUR, "adaptive")
    assert poll(server_wait=2 * HOUR) == NextPoll(1.5 * HOUR, 2 * HOUR, "adaptive", server=True)
    floor = poll(server_wait=timedelta(minutes=15), interval=timedelta(minutes=10))
    assert floor == NextPoll(timedelta(minutes=15), timedelta(minutes=15), "adaptive")
    # a server that asks for no more than the floor does not slow a session week down
    in_session = poll(server_wait=timedelta(minutes=15), windows=[(NOW, NOW + HOUR)])
    assert in_session == NextPoll(1.5 * HOUR, timedelta(minutes=5), "sessions")


def test_only_sessions_that_take_place_open_a_window() -> None:
    def event(key: str, **kw: object) -> SessionEvent:
        base: dict[str, object] = {"key": key, "source": "s", "title": key, "start": NOW}
        base.update(kw)
        return SessionEvent(**base)  # type: ignore[arg-type]

    windows = session_windows(
        [
            event("postponed", status="postponed"),
            event("ahc", end=NOW + 8 * HOUR),
            event("cancelled", status="cancelled"),
            event("deadline", kind="deadline"),
            event("no-end", start=NOW + 48 * HOUR),
        ]
    )
    assert windows == [
        (NOW - 24 * HOUR, NOW + 8 * HOUR),
        (NOW + 24 * HOUR, NOW + 49 * HOUR),  # without an end: an hour long
    ]


def test_a_source_is_polled_again_within_its_interval_never_after() -> None:
    from bot.scheduler import jittered_early

    delays = [jittered_early(timedelta(minutes=15)) for _ in range(2000)]
    assert all(13.5 * 60 <= d <= 15 * 60 for d in delays)
    assert max(delays) - min(delays) > 60  # spread, so sources polled together drift apart
