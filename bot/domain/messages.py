"""Every sentence the bot shows to people, in one place."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from bot.domain.durations import humanize
from bot.domain.model import Alert, Clause, FeedItem, SessionEvent
from bot.domain.text import Bullets, Paragraph, Rich, Span, bold, italic, link, para, shorten
from bot.domain.timefmt import event_span, format_local, format_span

if TYPE_CHECKING:
    from bot.domain.treaty import Standing, TreatyAction

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


#: Titles in a grouped message are cut to this many characters (the link is kept whole).
GROUP_TITLE_LIMIT = 120


def _items(count: int) -> str:
    return f"{count} {'item' if count == 1 else 'items'}"


def news_group_title(source_name: str, total: int, part: int, parts: int) -> str:
    suffix = f" (part {part} of {parts})" if parts > 1 else ""
    return f"{source_name}: {total} new items{suffix}"


def news_group_entry(item: FeedItem, tz: ZoneInfo) -> tuple[Span, ...]:
    """One item of a grouped message: its linked title, and when it was published."""
    spans = [link(shorten(item.title, GROUP_TITLE_LIMIT) or "(untitled)", item.link)]
    if item.published is not None:
        spans.append(italic(f" · {format_local(item.published, tz)}"))
    return tuple(spans)


def news_group_body(
    source_name: str,
    entries: Sequence[tuple[Span, ...]],
    *,
    total: int,
    first: int,
    part: int,
    parts: int,
) -> Rich:
    """A burst of new items in one message (or one part of several), every item listed."""
    if parts > 1:
        last = first + len(entries) - 1
        where = f" Part {part} of {parts}: items {first} to {last}, oldest first."
    else:
        where = " All of them, oldest first:"
    return (
        para(bold(source_name), f" published {total} new matching items at once.{where}"),
        Bullets(tuple(entries)),
    )


def news_reissue_title(source_name: str, count: int) -> str:
    return f"{source_name} re-issued {_items(count)}: not posted again"


def news_reissue_body(
    source_name: str,
    *,
    repeated: int,
    older: int,
    last_success: datetime | None,
    posted: int,
    tz: ZoneInfo,
) -> Rich:
    """Why items that look new were not posted: the feed re-issued them under new ids."""
    since = f" ({format_local(last_success, tz)})" if last_success is not None else ""
    if repeated and older:
        what = (
            f" re-issued {_items(repeated + older)} under new ids: {repeated} already shown "
            f"(the same title and link) and {older} older than its last successful poll{since}."
        )
    elif repeated:
        ids = "a new id" if repeated == 1 else "new ids"
        what = f" re-issued {_items(repeated)} already shown (the same title and link) under {ids}."
    else:
        ids = "a new id" if older == 1 else "new ids"
        what = f" re-issued {_items(older)} older than its last successful poll{since} under {ids}."
    blocks: list[Paragraph | Bullets] = [
        para(bold(source_name), what, " They are not posted again.")
    ]
    if posted:
        verb, pronoun = ("is", "it is") if posted == 1 else ("are", "they are")
        blocks.append(
            para(f"{_items(posted)} that came with them {verb} new: {pronoun} posted as usual.")
        )
    return tuple(blocks)


def _what(kind: str) -> str:
    return {"calendar": "Calendar", "depositary": "Source"}.get(kind, "Feed")


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


# ------------------------------------------------------------------------------- sessions

KIND_NAMES = {"session": "Session", "informal": "Meeting", "deadline": "Deadline"}


def when_lines(event: SessionEvent, tz: ZoneInfo) -> list[Span]:
    """The event's dates in the coalition's zone and, if another, in the venue's."""
    spans = [Span(event_span(event, tz))]
    venue = ZoneInfo(event.timezone) if event.timezone else None
    if venue is not None and not event.all_day and venue.key != tz.key:
        local = format_span(event.start, event.end, venue)
        if local != spans[0].text:
            spans.append(Span(f" (local time: {local})"))
    return spans


def countdown(event: SessionEvent, now: datetime) -> str:
    if event.start > now:
        return f"starts in {humanize(event.start - now)}"
    if event.end is not None and event.end > now:
        return f"ongoing, ends in {humanize(event.end - now)}"
    return "started"


def event_details(event: SessionEvent, tz: ZoneInfo, now: datetime) -> list[Paragraph | Bullets]:
    blocks: list[Paragraph | Bullets] = [Paragraph(tuple(when_lines(event, tz)))]
    facts = []
    if event.location:
        facts.append(f"Venue: {event.location}")
    if event.status not in ("scheduled",):
        facts.append(f"Status: {event.status}")
    if facts:
        blocks.append(para(" · ".join(facts)))
    blocks.append(para(italic(countdown(event, now).capitalize())))
    return blocks


def reminder_title(event: SessionEvent, lead: timedelta, now: datetime) -> str:
    kind = KIND_NAMES.get(event.kind, "Session")
    if lead <= timedelta(0):
        return f"{kind} starting now: {shorten(event.title, TITLE_LIMIT)}"
    return f"{kind} {countdown(event, now)}: {shorten(event.title, TITLE_LIMIT)}"


def reminder_body(
    event: SessionEvent,
    lead: timedelta,
    late: bool,
    now: datetime,
    tz: ZoneInfo,
    *,
    calendar_url: str | None = None,
) -> Rich:
    title = shorten(event.title, TITLE_LIMIT)
    head: list[Span] = [bold(reminder_title(event, lead, now).split(": ", 1)[0] + ": ")]
    head.append(link(title, event.url) if event.url else Span(title))
    if event.status == "tentative":
        head.append(Span(" (tentative)"))
    blocks: list[Paragraph | Bullets] = [Paragraph(tuple(head))]
    blocks.extend(event_details(event, tz, now))
    if late:
        blocks.append(
            para(italic("Sent late: the bot was not running when this reminder was due."))
        )
    if calendar_url:
        blocks.append(subscribe_paragraph(calendar_url))
    return tuple(blocks)


def subscribe_paragraph(calendar_url: str) -> Paragraph:
    """The invitation to follow the timeline in a calendar app (``/calendar.ics``)."""
    return para(
        "Subscribe to the timeline in your calendar app: ", link(calendar_url, calendar_url)
    )


# the calendar served at /calendar.ics
CALENDAR_NAME = "Treaty Watch"
CALENDAR_DESCRIPTION = (
    "Sessions, meetings and deadlines of the UN Convention against Cybercrime, as Treaty Watch "
    "knows them."
)
CALENDAR_CATEGORIES = {"session": "Session", "informal": "Informal meeting", "deadline": "Deadline"}
CALENDAR_POSTPONED = " (postponed)"
CALENDAR_UNTITLED = "(untitled)"


CHANGE_WORDS = {
    "added": "added",
    "rescheduled": "rescheduled",
    "moved": "moved",
    "cancelled": "cancelled",
    "status": "status changed",
    "removed": "removed from the calendar",
}


def session_change_title(what: str, event: SessionEvent) -> str:
    kind = KIND_NAMES.get(event.kind, "Session")
    return f"{kind} {CHANGE_WORDS.get(what, what)}: {shorten(event.title, TITLE_LIMIT)}"


def session_change_body(
    what: str,
    old: SessionEvent | None,
    new: SessionEvent | None,
    tz: ZoneInfo,
    now: datetime,
) -> Rich:
    event = new or old
    assert event is not None
    title = shorten(event.title, TITLE_LIMIT)
    kind = KIND_NAMES.get(event.kind, "Session")
    blocks: list[Paragraph | Bullets] = [
        para(bold(f"{kind} {CHANGE_WORDS.get(what, what)}: "), link(title, event.url))
    ]
    if what == "rescheduled" and old is not None and new is not None:
        was = event_span(old, tz)
        now_ = event_span(new, tz)
        blocks.append(para(f"{was} → {now_}"))
    elif what == "moved" and old is not None and new is not None:
        blocks.append(para(f"{old.location or '(no venue)'} → {new.location or '(no venue)'}"))
    elif what in ("status", "cancelled") and old is not None and new is not None:
        blocks.append(para(f"Status: {old.status} → {new.status}"))
    elif what == "added" and new is not None:
        blocks.extend(event_details(new, tz, now))
    elif what == "removed" and old is not None:
        blocks.append(para(f"It was planned for {event_span(old, tz)}."))
    return tuple(blocks)


# ------------------------------------------------------------------------------- clauses


def clause_label(clause: Clause) -> str:
    return f"Art. {clause.article} — {clause.title}"


def clause_change_title(clause: Clause, old: str | None) -> str:
    if old is None:
        return f"Clause now tracked: {shorten(clause_label(clause), TITLE_LIMIT)}"
    return f"Clause {old} → {clause.status}: {shorten(clause_label(clause), TITLE_LIMIT)}"


def clause_change_body(clause: Clause, old: str | None) -> Rich:
    link_url = clause.links[0] if clause.links else None
    blocks: list[Paragraph | Bullets] = [
        para(
            bold(f"Art. {clause.article}"),
            " — ",
            link(shorten(clause.title, TITLE_LIMIT), link_url),
        ),
        para("Status: ", bold(f"{old or 'new'} → {clause.status}")),
    ]
    if clause.summary:
        blocks.append(para(shorten(clause.summary, SUMMARY_LIMIT)))
    return tuple(blocks)


# ------------------------------------------------------------------------------- configuration


def config_problems_title(count: int) -> str:
    return f"Configuration not applied: {count} problem{'' if count == 1 else 's'}"


def config_problems_body(directory: str, problems: Sequence[str]) -> Rich:
    shown = list(problems)[:20]
    more = len(problems) - len(shown)
    blocks: list[Paragraph | Bullets] = [
        para(
            bold(f"The configuration in {directory} was not applied"),
            "; the bot keeps running on the last good one. Fix these and save again "
            "(treaty-bot check lists them too):",
        ),
        Bullets(tuple((Span(p, "code"),) for p in shown)),
    ]
    if more > 0:
        blocks.append(para(f"…and {more} more."))
    return tuple(blocks)


def delivery_failed_title(transport: str, channel: str) -> str:
    return f"Cannot post to #{channel} on {transport.capitalize()}"


def delivery_failed_body(transport: str, channel: str, error: str) -> Rich:
    return (
        para(
            bold(f"Alerts for #{channel} cannot be posted on {transport.capitalize()}"),
            ". They are kept, and tried again at the next restart or configuration reload.",
        ),
        para("Cause: ", Span(error, "code")),
    )


def apology(reference: str) -> tuple[str, Rich]:
    """For a command that failed unexpectedly: the details are in the log, under ``reference``."""
    return (
        "Sorry, something went wrong",
        (
            para(
                "Sorry, something went wrong while answering. The maintainers can find the "
                "details in the log under reference ",
                Span(reference, "code"),
                ".",
            ),
        ),
    )


def transport_problem_title(transport: str) -> str:
    return f"{transport.capitalize()} needs attention"


def transport_problem_body(transport: str, problem: str) -> Rich:
    return (
        para(bold(f"{transport.capitalize()}: "), problem),
        para("Alerts for it are kept in the outbox and sent once this is fixed."),
    )


# ------------------------------------------------------------------------------- the treaty

ENTRY_INTO_FORCE_TITLE = "The Convention enters into force"
FIRST_CONFERENCE_TITLE = "Latest date for the first Conference of the States Parties"
STATEMENT_LIMIT = 300

_CONSENT_WORDS = {
    "ratification": ("ratified", "ratification"),
    "acceptance": ("accepted", "acceptance"),
    "approval": ("approved", "approval"),
    "accession": ("acceded to", "accession"),
    "succession": ("succeeded to", "succession"),
}


def day(value: date) -> str:
    """``25 Oct 2025``, as the depositary writes dates."""
    return f"{value.day} {value:%b %Y}"


def statement_word(kind: str) -> str:
    return f"an {kind}" if kind[:1] in "aeiou" else f"a {kind}"


def treaty_action_title(action: TreatyAction) -> str:
    if action.kind == "signature":
        return f"{action.state} signed the Convention"
    if action.kind in _CONSENT_WORDS:
        return f"{action.state} {_CONSENT_WORDS[action.kind][0]} the Convention"
    assert action.statement is not None
    made = "made" if action.kind == "statement-made" else "withdrew"
    return f"{action.state} {made} {statement_word(action.statement.kind)}"


def standing_line(where: Standing) -> str:
    signed = f"{where.signatories} {'signatory' if where.signatories == 1 else 'signatories'}"
    if where.in_force is not None:
        return (
            f"{signed}; {where.counted} instruments of ratification, acceptance, approval or "
            f"accession: the Convention enters into force on {day(where.in_force)}."
        )
    return (
        f"{signed}; {where.counted} of the {where.needed} instruments needed for entry into force."
    )


def treaty_action_body(
    action: TreatyAction, where: Standing, source_name: str, page: str | None
) -> Rich:
    blocks: list[Paragraph | Bullets] = []
    if action.kind == "signature" and action.on is not None:
        blocks.append(para(bold(action.state), f" signed the Convention on {day(action.on)}."))
    elif action.kind in _CONSENT_WORDS and action.on is not None:
        noun = _CONSENT_WORDS[action.kind][1]
        blocks.append(
            para(
                bold(action.state),
                f" deposited its instrument of {noun} on {day(action.on)}.",
            )
        )
    elif action.statement is not None:
        made = "made" if action.kind == "statement-made" else "withdrew"
        blocks.append(para(bold(action.state), f" {made} {statement_word(action.statement.kind)}:"))
        blocks.append(para(italic(shorten(action.statement.text, STATEMENT_LIMIT))))
    blocks.append(para(standing_line(where)))
    blocks.append(para("Source: ", link(source_name, page)))
    return tuple(blocks)


def entry_into_force_description(instruments: int, state: str, deposit: date | None) -> str:
    when = f" on {day(deposit)}" if deposit is not None else ""
    return (
        f"Computed from the depositary's record: the 90th day after the {instruments}th "
        f"instrument of ratification, acceptance, approval or accession ({state}{when}), "
        "article 65(1)."
    )


def first_conference_description(in_force: date) -> str:
    return (
        "The Secretary-General convenes the Conference of the States Parties not later than one "
        f"year after entry into force ({day(in_force)}), article 57(2)."
    )


# ------------------------------------------------------------------------------- held alerts

_KIND_LABELS = {
    "news": "News",
    "session-reminder": "Reminder",
    "session-change": "Session change",
    "clause-change": "Clause",
    "source-health": "Source",
    "treaty-action": "Treaty",
}


def grouped_title(reason: str, total: int, part: int, parts: int) -> str:
    what = "Digest" if reason == "digest" else "While the channel was quiet"
    items = f"{total} {'alert' if total == 1 else 'alerts'}"
    suffix = f" (part {part} of {parts})" if parts > 1 else ""
    return f"{what}: {items}{suffix}"


def held_lines(alert: Alert, tz: ZoneInfo) -> list[tuple[Span, ...]]:
    """What a held alert adds to the message that releases it: its title and link, then each
    item it lists, if it lists several (a burst of news)."""
    label = Span(_KIND_LABELS.get(alert.kind, alert.kind) + ": ", "bold")
    when = Span(f" ({format_local(alert.at, tz)})", "italic")
    items = [item for block in alert.body if isinstance(block, Bullets) for item in block.items]
    if not items:
        return [(label, link(shorten(alert.title, 200) or "(untitled)", alert.url), when)]
    head: tuple[Span, ...] = (label, Span(shorten(alert.title, 200)), when)
    return [head, *((Span("  "), *item) for item in items)]


def grouped_body(
    reason: str, lines: Sequence[tuple[Span, ...]], part: int, parts: int, total: int
) -> Rich:
    if reason == "digest":
        head = f"Digest: {total} {'alert' if total == 1 else 'alerts'} since the last one."
    else:
        head = (
            f"Held during the channel's quiet hours: {total} {'alert' if total == 1 else 'alerts'}."
        )
    if parts > 1:
        head += f" Part {part} of {parts}."
    return (para(head), Bullets(tuple(lines)))
