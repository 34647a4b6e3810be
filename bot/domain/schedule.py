"""When to poll a feed next: pure decisions.

Adaptive
    A feed's interval follows how often it changes, between ``every`` (the floor) and
    ``every_max`` (the ceiling): after a poll that found new items it halves (never under the
    floor), after each poll that found none it grows by half (never over the ceiling), but
    not past half the time the feed has been quiet (since the last poll that found new
    items), and never shrinks. A feed that changes often is read often: one
    that changes every two ``every`` stays at its floor, so each of its changes is read within
    ``every``; one that sleeps for weeks costs its publisher a request every ``every_max``.
    (Half the quiet time is the heuristic of HTTP caches, RFC 9111 4.2.2, made bolder.)

Session-aware
    With ``during_sessions``, a feed is polled at that interval while a session of the timeline
    is on and during the day before it starts; a wait that would run into such a window is cut
    at its start, so the first poll of a session week is not a whole ``every_max`` late.

The server's word
    ``Cache-Control: max-age`` and ``Retry-After`` longer than the floor are honoured.

Failing
    A failing feed backs off as before (``next_poll_delay``); its interval is kept for when it
    recovers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.domain.model import SessionEvent
from bot.domain.planner import next_poll_delay

#: After a change the interval is divided by this; after nothing new, multiplied by GROWTH.
SHRINK = 2.0
GROWTH = 1.5
#: An interval grows no longer than the time the feed has been quiet divided by this.
QUIET_SHARE = 2.0
#: Polling at ``during_sessions`` starts this long before a session.
BEFORE_SESSION = timedelta(days=1)

Mode = Literal["fixed", "adaptive", "sessions", "backing off"]


@dataclass(frozen=True, slots=True)
class Schedule:
    """How one source may be polled: its floor, its ceiling, its session-week interval."""

    every: timedelta
    every_max: timedelta
    during_sessions: timedelta | None = None

    @property
    def adaptive(self) -> bool:
        return self.every_max > self.every


@dataclass(frozen=True, slots=True)
class NextPoll:
    """The interval to remember, the wait before the next poll, and why."""

    interval: timedelta
    delay: timedelta
    mode: Mode
    #: the server asked for a longer wait (Cache-Control max-age, Retry-After)
    server: bool = False


Window = tuple[datetime, datetime]


def session_windows(events: Iterable[SessionEvent]) -> list[Window]:
    """From the day before each session (not a deadline, not cancelled) to its end."""
    windows = []
    for event in events:
        if event.kind != "session" or event.status in ("cancelled", "postponed"):
            continue
        end = event.end or event.start + timedelta(hours=1)
        windows.append((event.start - BEFORE_SESSION, end))
    return sorted(windows)


def next_poll(
    schedule: Schedule,
    interval: timedelta | None,
    *,
    changed: bool,
    failures: int,
    backoff_cap: timedelta,
    server_wait: timedelta | None,
    windows: Sequence[Window],
    now: datetime,
    quiet: timedelta | None = None,
) -> NextPoll:
    """The next poll of a source after one that ``changed`` (found new items) or not; ``quiet``:
    how long since a poll last brought something new (``None``: not known)."""
    current = interval if interval is not None else schedule.every
    mode: Mode
    if failures > 0:
        return NextPoll(
            current, next_poll_delay(schedule.every, failures, backoff_cap), "backing off"
        )
    if not schedule.adaptive:
        current, mode = schedule.every, "fixed"
    elif changed:
        current, mode = max(schedule.every, current / SHRINK), "adaptive"
    else:
        grown = current * GROWTH
        if quiet is not None:  # not past half the quiet time, and never shorter
            grown = min(grown, max(current, quiet / QUIET_SHARE))
        current, mode = min(schedule.every_max, grown), "adaptive"
    current = min(max(current, schedule.every), max(schedule.every_max, schedule.every))
    delay = current
    during = schedule.during_sessions
    if during is not None:
        if any(start <= now < end for start, end in windows):
            delay, mode = during, "sessions"
        else:
            ahead = [start for start, _ in windows if start > now]
            if ahead and min(ahead) - now < delay:
                delay = min(ahead) - now  # wake up for the session week
    if server_wait is not None and server_wait > schedule.every and server_wait > delay:
        return NextPoll(current, server_wait, mode, server=True)
    return NextPoll(current, delay, mode)
