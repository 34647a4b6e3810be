"""A person's home page (Slack's App Home tab): the next dates and what they follow.

Pure: the app gathers the timeline and the person's follows, ``home_view`` decides what the
page says, and the transport renders it (with an Unfollow button per follow, whose value is
``HomeFollow.key``: ``unfollow KEY`` removes it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.domain import replies
from bot.domain.commands import upcoming_events
from bot.domain.follows import Follow
from bot.domain.model import Clause, SessionEvent
from bot.domain.text import Rich, Span


@dataclass(frozen=True, slots=True)
class HomeFollow:
    """One follow on the page: how it reads, and the key its Unfollow button sends."""

    line: tuple[Span, ...]
    key: str


@dataclass(frozen=True, slots=True)
class HomeView:
    """What the page shows, in order: a title, an introduction, the next dates (or a note
    that none is ahead), and the follows (or how to start)."""

    title: str
    intro: Rich
    dates_title: str
    dates: tuple[tuple[Span, ...], ...]
    no_dates: Rich
    follows_title: str
    follows: tuple[HomeFollow, ...]
    no_follows: Rich
    unfollow_label: str


def home_view(
    events: Sequence[SessionEvent],
    follows: Sequence[Follow],
    clauses: Sequence[Clause],
    tz: ZoneInfo,
    now: datetime,
) -> HomeView:
    """The page for someone who follows ``follows``, at ``now``: the next
    ``replies.HOME_SHOWN_DATES`` sessions, meetings or deadlines of ``events``."""
    ahead = upcoming_events(events, now)[: replies.HOME_SHOWN_DATES]
    by_id = {c.id.casefold(): c for c in clauses}
    shown = tuple(
        HomeFollow(
            replies.home_follow_line(
                f, by_id.get(f.value.casefold()) if f.kind == "clause" else None
            ),
            f.key,
        )
        for f in follows
    )
    return HomeView(
        title=replies.HOME_TITLE,
        intro=replies.home_intro(),
        dates_title=replies.HOME_DATES_TITLE,
        dates=tuple(replies.session_line(e, tz, now) for e in ahead),
        no_dates=replies.home_no_dates(),
        follows_title=replies.HOME_FOLLOWS_TITLE,
        follows=shown,
        no_follows=replies.home_no_follows(),
        unfollow_label=replies.HOME_UNFOLLOW,
    )
