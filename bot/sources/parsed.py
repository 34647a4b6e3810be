"""What the parsers return, apart from the parsers themselves: importing these types costs
nothing, so the process that fetches never has to load feedparser or icalendar when the
parsing happens in worker processes."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.model import FeedItem, SessionEvent
from bot.domain.treaty import TreatyStatus


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    title: str | None
    items: tuple[FeedItem, ...]
    warning: str | None = None


@dataclass(frozen=True, slots=True)
class ParseFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedCalendar:
    """The occurrences in the window, sorted by start, and what had to be left out."""

    events: tuple[SessionEvent, ...]
    warnings: tuple[str, ...]
    truncated: bool


@dataclass(frozen=True, slots=True)
class CalendarFailed:
    """The bytes are not a usable iCalendar file; ``reason`` says why, for people."""

    reason: str


@dataclass(frozen=True, slots=True)
class ParsedDepositary:
    """The depositary's record of the treaty."""

    status: TreatyStatus


@dataclass(frozen=True, slots=True)
class DepositaryFailed:
    """The bytes are not the depositary's XML; ``reason`` says why, for people."""

    reason: str
