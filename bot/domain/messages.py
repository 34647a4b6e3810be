"""Every sentence the bot shows to people, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.domain.model import FeedItem
from bot.domain.text import Bullets, Paragraph, Rich, Span, bold, italic, link, para, shorten
from bot.domain.timefmt import format_local

SUMMARY_LIMIT = 400
TITLE_LIMIT = 300


def news_body(source_name: str, item: FeedItem, terms: Sequence[str], tz: ZoneInfo) -> Rich:
    title = shorten(item.title, TITLE_LIMIT) or "(untitled)"
    blocks: list[Paragraph | Bullets] = [para(bold(source_name), " · ", link(title, item.link))]
    meta = []
    if item.published is not None:
        meta.append(f"Published {format_local(item.published, tz)}")
    if terms:
        meta.append("matched: " + ", ".join(terms))
    if meta:
        blocks.append(para(italic(" · ".join(meta))))
    if item.summary:
        blocks.append(para(shorten(item.summary, SUMMARY_LIMIT)))
    return tuple(blocks)


def news_batch_title(source_name: str, count: int) -> str:
    return f"{source_name}: {count} new items at once"


def news_batch_body(source_name: str, items: Sequence[FeedItem]) -> Rich:
    shown = list(items)[-5:]
    entries = tuple((link(shorten(i.title, 120) or "(untitled)", i.link),) for i in reversed(shown))
    return (
        para(
            bold(source_name),
            f" published {len(items)} new matching items in one go (often a feed that re-issued"
            " its item ids). They are summarised here instead of posted one by one.",
        ),
        Paragraph((Span("Newest:"),)),
        Bullets(entries),
    )


def _what(kind: str) -> str:
    return "Calendar" if kind == "calendar" else "Feed"


def health_failing_title(kind: str, name: str) -> str:
    return f"{_what(kind)} {name} is failing"


def health_failing_body(
    kind: str, name: str, source: str, failures: int, error: str, last_success: datetime | None
) -> Rich:
    since = (
        f"Last successful poll: {last_success.strftime('%Y-%m-%d %H:%M UTC')}."
        if last_success
        else "It has not been polled successfully yet."
    )
    return (
        para(bold(f"{_what(kind)} {name} ({source}) is failing"), f": {failures} polls in a row."),
        para("Cause: ", Span(error, "code")),
        para(
            since, " The bot keeps retrying with growing intervals and will say when it recovers."
        ),
    )


def health_recovered_title(kind: str, name: str) -> str:
    return f"{_what(kind)} {name} has recovered"


def health_recovered_body(
    kind: str, name: str, source: str, since: datetime, now: datetime
) -> Rich:
    return (
        para(
            bold(f"{_what(kind)} {name} ({source}) has recovered"),
            f" after failing since {since.strftime('%Y-%m-%d %H:%M UTC')}.",
        ),
    )
