"""Every sentence the commands show to people (the answers of ``bot.domain.commands``).

Two kinds of text meet here, and they are never mixed up:

- *Our own* sentences. Some are written as strings with `backticks` around command words
  (usage errors, which also travel as ``UsageError.message``); ``inline`` turns those into
  code spans. Only our templates and the user's own command word, passed through ``echo``
  (backticks and line breaks removed, shortened), ever go through ``inline``.
- *Untrusted* text from feeds, calendars and YAML files (titles, venues, summaries, errors).
  It is placed in ``Span``\\ s as it is, never parsed: a title such as ``<!channel>`` or
  ``@room`` stays inert text that each transport escapes for its platform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.domain import messages
from bot.domain.countries import clean_name
from bot.domain.durations import humanize
from bot.domain.follows import Follow
from bot.domain.messages import subscribe_paragraph
from bot.domain.model import Clause, NewsRecord, SessionEvent, SourceCounts, SourceView
from bot.domain.text import Block, Bullets, Paragraph, Rich, Span, bold, italic, link, para, shorten
from bot.domain.timefmt import event_span, format_local, format_span
from bot.domain.treaty import Participant, Standing, Statement, TreatyAction, TreatySource

if TYPE_CHECKING:
    from bot.domain.commands import ReplicaInfo

TITLE_LIMIT = 200
SUMMARY_LIMIT = 600
ERROR_LIMIT = 160
ECHO_LIMIT = 40


def code(text: str) -> Span:
    return Span(text, "code")


def inline(message: str) -> tuple[Span, ...]:
    """Our own sentence with `code` words -> spans (odd backtick-separated parts are code)."""
    spans: list[Span] = []
    for index, part in enumerate(message.split("`")):
        if part:
            spans.append(Span(part, "code" if index % 2 else "plain"))
    return tuple(spans)


def echo(word: str) -> str:
    """The user's own word, safe to quote inside one of our `backtick` sentences."""
    return shorten(" ".join(word.replace("`", "'").split()), ECHO_LIMIT)


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


# ------------------------------------------------------------------------------- help


@dataclass(frozen=True, slots=True)
class CommandHelp:
    """How one command is written and what it does, for ``help`` and usage errors."""

    name: str
    usage: str
    example: str
    summary: str
    admin: bool = False


HELP: tuple[CommandHelp, ...] = (
    CommandHelp(
        "next-session",
        "next-session",
        "next-session",
        "the next session, meeting or deadline, with a countdown",
    ),
    CommandHelp(
        "sessions", "sessions [N]", "sessions 10", "the next N sessions (default 5, at most 25)"
    ),
    CommandHelp(
        "clauses",
        "clauses [STATUS or WORD]",
        "clauses contested",
        "the clauses not yet settled, or those with that status "
        "(open, contested, agreed, adopted, reserved, deferred, all) or word",
    ),
    CommandHelp("clause", "clause ID", "clause 4", "one clause in full, by id or article"),
    CommandHelp(
        "news",
        "news [N] [WORD]",
        "news 3 privacy",
        "the latest matched news items (default 5, at most 20), optionally with a word",
    ),
    CommandHelp("feeds", "feeds", "feeds", "the watched feeds and calendars, and their health"),
    CommandHelp(
        "ratifications",
        "ratifications",
        "ratifications",
        "signatories, parties, the instruments still needed for entry into force (or its "
        "date), and the latest actions, from the depositary's record",
    ),
    CommandHelp(
        "country",
        "country NAME",
        "country germany",
        "one state's signature, ratification (or accession) and declarations",
    ),
    CommandHelp(
        "follow",
        "follow CLAUSE, STATE or WORDS",
        "follow art-24",
        "the alerts about a clause, a state or some words, sent to you directly "
        '(e.g. follow germany, follow "data protection"; at most 50)',
    ),
    CommandHelp(
        "unfollow",
        "unfollow THING or all",
        "unfollow art-24",
        "stop following something (unfollow all: everything)",
    ),
    CommandHelp("following", "following", "following", "what you follow"),
    CommandHelp("help", "help [COMMAND]", "help clauses", "this list, or how to use one command"),
    CommandHelp(
        "status",
        "status",
        "status",
        "version, uptime, each source's last success and error, queued alerts, transports",
        admin=True,
    ),
    CommandHelp(
        "reload", "reload", "reload", "re-read config/ now and report any problems", admin=True
    ),
)
HELP_BY_NAME = {entry.name: entry for entry in HELP}

HELP_TITLE = "Treaty Watch commands"


def help_body() -> Rich:
    items = tuple(
        (code(entry.example), Span(" — " + entry.summary + (" (admins)" if entry.admin else "")))
        for entry in HELP
    )
    return (
        para("Commands, with one example each:"),
        Bullets(items),
        para(
            "Answers are shown only to you; add ",
            code("share"),
            " to post one in the channel, e.g. ",
            code("next-session share"),
            ".",
        ),
    )


def command_help_title(name: str) -> str:
    return f"How to use {name}"


def command_help_body(entry: CommandHelp) -> Rich:
    blocks: list[Block] = [
        para(code(entry.usage), " — " + entry.summary + "."),
        para("Example: ", code(entry.example)),
    ]
    if entry.admin:
        blocks.append(para(italic("For the bot's admins only.")))
    return tuple(blocks)


# ------------------------------------------------------------------------------- usage errors

UNKNOWN_TITLE = "Unknown command"


def usage_title(name: str) -> str:
    return f"How to use {name}"


def usage_line(name: str) -> str:
    entry = HELP_BY_NAME[name]
    if entry.usage == entry.example:
        return f"Usage: `{entry.usage}`."
    return f"Usage: `{entry.usage}`, e.g. `{entry.example}`."


def unknown_command(word: str, suggestion: str | None) -> str:
    if suggestion is None:
        return f"Unknown command `{echo(word)}`. Try `help` for the list of commands."
    return f"Unknown command `{echo(word)}`. Did you mean `{suggestion}`? Try `help`."


def takes_no_arguments(name: str) -> str:
    return f"`{name}` takes no arguments. {usage_line(name)}"


def too_many_arguments(name: str) -> str:
    return f"`{name}` takes at most one number. {usage_line(name)}"


def bad_count(name: str, got: str, maximum: int) -> str:
    return f"`{name}` takes a number from 1 to {maximum}, not “{echo(got)}”. {usage_line(name)}"


def needs_argument(name: str) -> str:
    return f"`{name}` needs a clause id or article number. {usage_line(name)}"


def needs_thing(name: str) -> str:
    return f"`{name}` needs a clause, a state or some words. {usage_line(name)}"


def usage_body(message: str) -> Rich:
    return (Paragraph(inline(message)),)


# ------------------------------------------------------------------------------- admin


ADMIN_TITLE = "Admins only"


def admin_only_body(name: str) -> Rich:
    return (
        para(
            code(name),
            " needs the admin permission. Admins are listed under ",
            code("admins:"),
            " in ",
            code("config/bot.yaml"),
            "; ask one of them.",
        ),
    )


RELOAD_TITLE = "Reloading configuration"


def reload_started_body() -> Rich:
    return (para("Re-reading ", code("config/"), " now…"),)


RELOADED_TITLE = "Configuration reloaded"
PROBLEMS_SHOWN = 15


def reloaded_body() -> Rich:
    return (
        para("Re-read ", code("config/"), ": no problems found; the new configuration is in use."),
    )


def reload_problems_title(count: int) -> str:
    return f"Configuration not reloaded: {plural(count, 'problem')}"


def reload_problems_body(problems: Sequence[str]) -> Rich:
    shown = list(problems)[:PROBLEMS_SHOWN]
    blocks: list[Block] = [
        para(
            f"Found {plural(len(problems), 'problem')} in ",
            code("config/"),
            "; the bot keeps running with its last good configuration.",
        ),
        Bullets(tuple((code(shorten(p, 300)),) for p in shown)),
    ]
    if len(problems) > len(shown):
        blocks.append(
            para(
                f"… and {len(problems) - len(shown)} more; ",
                code("treaty-bot check"),
                " lists them all.",
            )
        )
    return tuple(blocks)


# ------------------------------------------------------------------------------- sessions

KIND_WORDS = {"session": "Session", "informal": "Informal meeting", "deadline": "Deadline"}
STATUS_NOTES = {
    "tentative": "tentative — the dates are not confirmed yet",
    "postponed": "postponed — new dates to be announced",
    "concluded": "concluded",
    "cancelled": "cancelled",
}
STATUS_TAGS = {"tentative": " (tentative)", "postponed": " (postponed)"}


def _kind(event: SessionEvent) -> str:
    return KIND_WORDS.get(event.kind, "Session")


def _title(event: SessionEvent) -> str:
    return shorten(event.title, TITLE_LIMIT) or "(untitled)"


def is_ongoing(event: SessionEvent, now: datetime) -> bool:
    return event.start <= now and event.end is not None and now < event.end


def countdown(event: SessionEvent, now: datetime) -> str:
    if event.start > now:
        verb = "due in" if event.kind == "deadline" else "starts in"
        return f"{verb} {humanize(event.start - now)}"
    if event.end is not None and event.end > now:
        return f"ongoing, ends in {humanize(event.end - now)}"
    return "over"


def venue_zone(event: SessionEvent, tz: ZoneInfo) -> ZoneInfo | None:
    """The venue's zone when it shows other clock times than the coalition's."""
    if not event.timezone or event.all_day:
        return None
    try:
        venue = ZoneInfo(event.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        return None
    if venue.key == tz.key:
        return None
    if format_span(event.start, event.end, venue) == format_span(event.start, event.end, tz):
        return None
    return venue


def zone_label(zone: ZoneInfo) -> str:
    """``America/New_York`` -> ``New York``."""
    return zone.key.rsplit("/", 1)[-1].replace("_", " ")


def next_session_title(event: SessionEvent, now: datetime) -> str:
    kind = _kind(event).lower()
    if is_ongoing(event, now):
        return f"Ongoing {kind}: {_title(event)}"
    return f"Next {kind}: {_title(event)}"


def next_session_body(
    event: SessionEvent, tz: ZoneInfo, now: datetime, *, calendar_url: str | None = None
) -> Rich:
    head: list[Span] = [bold(f"{_kind(event)}: "), link(_title(event), event.url)]
    if event.kind == "deadline":
        head.append(Span(" (deadline)"))
    blocks: list[Block] = [
        Paragraph(tuple(head)),
        para("When: ", event_span(event, tz)),
    ]
    venue = venue_zone(event, tz)
    if venue is not None:
        blocks.append(
            para(f"Venue time ({zone_label(venue)}): ", format_span(event.start, event.end, venue))
        )
    if event.location:
        blocks.append(para("Where: ", Span(shorten(event.location, TITLE_LIMIT))))
    if event.status in STATUS_NOTES:
        blocks.append(para("Status: ", bold(STATUS_NOTES[event.status])))
    blocks.append(para(italic(countdown(event, now).capitalize() + ".")))
    if calendar_url:
        blocks.append(subscribe_paragraph(calendar_url))
    return tuple(blocks)


NOTHING_AHEAD_TITLE = "No upcoming session"


def nothing_ahead_body(
    last: SessionEvent | None, tz: ZoneInfo, *, calendar_url: str | None = None
) -> Rich:
    blocks: list[Block] = [para("No session, meeting or deadline is scheduled ahead.")]
    if last is not None:
        ended = event_span(last, tz)
        blocks.append(
            para(
                f"The last one was {_kind(last).lower()} ",
                link(_title(last), last.url),
                f" ({ended}).",
            )
        )
    if calendar_url:
        blocks.append(subscribe_paragraph(calendar_url))
    return tuple(blocks)


def sessions_title(count: int) -> str:
    return "Next session" if count == 1 else f"Next {count} sessions"


def session_line(event: SessionEvent, tz: ZoneInfo, now: datetime) -> tuple[Span, ...]:
    spans = [
        Span(event_span(event, tz)),
        Span(f" · {_kind(event)}: "),
        link(_title(event), event.url),
    ]
    if event.status in STATUS_TAGS:
        spans.append(Span(STATUS_TAGS[event.status]))
    if is_ongoing(event, now):
        spans.append(italic(" — ongoing"))
    return tuple(spans)


def sessions_body(
    events: Sequence[SessionEvent],
    more: int,
    tz: ZoneInfo,
    now: datetime,
    *,
    calendar_url: str | None = None,
) -> Rich:
    blocks: list[Block] = [Bullets(tuple(session_line(e, tz, now) for e in events))]
    if more:
        blocks.append(
            para(f"… and {more} more; e.g. ", code(f"sessions {min(len(events) + more, 25)}"), ".")
        )
    if calendar_url:
        blocks.append(subscribe_paragraph(calendar_url))
    return tuple(blocks)


# ------------------------------------------------------------------------------- clauses

CLAUSES_SHOWN = 30


def clause_line(clause: Clause) -> tuple[Span, ...]:
    return (
        bold(f"Art. {clause.article}"),
        Span(" — "),
        Span(shorten(clause.title, TITLE_LIMIT) or "(untitled)"),
        Span(" — "),
        italic(clause.status),
    )


def clauses_title(mode: str, value: str) -> str:
    if mode == "status":
        return f"{value.capitalize()} clauses"
    if mode == "word":
        return f"Clauses mentioning “{shorten(value, ECHO_LIMIT)}”"
    if mode == "all":
        return "All tracked clauses"
    return "Clauses not yet settled"


def clauses_body(clauses: Sequence[Clause], example: str) -> Rich:
    shown = list(clauses)[:CLAUSES_SHOWN]
    blocks: list[Block] = [Bullets(tuple(clause_line(c) for c in shown))]
    if len(clauses) > len(shown):
        blocks.append(
            para(f"… and {len(clauses) - len(shown)} more; narrow it down with a status or a word.")
        )
    blocks.append(para(italic("One in full: "), code(f"clause {example}")))
    return tuple(blocks)


def no_clauses_body(mode: str, value: str, tracked: int) -> Rich:
    if tracked == 0:
        return (para("No clauses are tracked yet."),)
    if mode == "status":
        return (
            para(f"No clause is {value} at the moment. "),
            para("Try ", code("clauses all"), "."),
        )
    if mode == "word":
        return (
            para("No clause mentions “", Span(shorten(value, ECHO_LIMIT)), "”."),
            para("Try ", code("clauses"), " for those not yet settled."),
        )
    return (
        para("Every tracked clause is settled (agreed or adopted)."),
        para("Try ", code("clauses all"), "."),
    )


def clause_title(clause: Clause) -> str:
    return f"Art. {clause.article} — {shorten(clause.title, TITLE_LIMIT) or '(untitled)'}"


def clause_body(clause: Clause) -> Rich:
    status: list[Span] = [Span("Status: "), bold(clause.status)]
    if clause.updated is not None:
        status.append(Span(f" (updated {clause.updated.strftime('%d %b %Y')})"))
    blocks: list[Block] = [
        para(bold(f"Art. {clause.article}"), " — ", Span(shorten(clause.title, TITLE_LIMIT))),
        Paragraph(tuple(status)),
    ]
    if clause.summary:
        blocks.append(para(Span(shorten(clause.summary, SUMMARY_LIMIT))))
    if clause.concerns:
        blocks.append(para("Concerns: ", Span(", ".join(clause.concerns))))
    if clause.links:
        blocks.append(para("Links:"))
        blocks.append(Bullets(tuple((link(url, url),) for url in clause.links[:5])))
    return tuple(blocks)


SEVERAL_CLAUSES_TITLE = "Several clauses match"


def several_clauses_body(query: str, clauses: Sequence[Clause]) -> Rich:
    return (
        para("Several clauses match “", Span(shorten(query, ECHO_LIMIT)), "”:"),
        Bullets(tuple((*clause_line(c), Span(" — "), code(f"clause {c.id}")) for c in clauses)),
    )


UNKNOWN_CLAUSE_TITLE = "Unknown clause"


def did_you_mean(command: str, close: Sequence[str]) -> Paragraph:
    """``Did you mean `clause 4` or `clause 5`?``"""
    spans: list[Span] = [Span("Did you mean ")]
    for index, candidate in enumerate(close):
        if index:
            spans.append(Span(" or "))
        spans.append(code(f"{command} {candidate}"))
    spans.append(Span("?"))
    return Paragraph(tuple(spans))


def unknown_clause_body(query: str, close: Sequence[str]) -> Rich:
    blocks: list[Block] = [
        para("No tracked clause matches “", Span(shorten(query, ECHO_LIMIT)), "”."),
    ]
    if close:
        blocks.append(did_you_mean("clause", close))
    blocks.append(para("Try ", code("clauses all"), " for the list."))
    return tuple(blocks)


# ------------------------------------------------------------------------------- news


def news_title(word: str | None) -> str:
    if word:
        return f"Latest news about “{shorten(word, ECHO_LIMIT)}”"
    return "Latest news"


def news_line(item: NewsRecord, source_name: str, tz: ZoneInfo) -> tuple[Span, ...]:
    when = item.published or item.seen_at
    return (
        bold(source_name),
        Span(" · "),
        link(shorten(item.title, TITLE_LIMIT) or "(untitled)", item.link),
        Span(" · "),
        Span(format_local(when, tz)),
    )


def news_body(lines: Sequence[tuple[Span, ...]]) -> Rich:
    return (Bullets(tuple(lines)),)


def no_news_body(word: str | None) -> Rich:
    if word:
        return (
            para("No recent news item mentions “", Span(shorten(word, ECHO_LIMIT)), "”."),
            para("Try ", code("news"), " for the latest of all."),
        )
    return (para("No matching news item has been seen yet."),)


# ------------------------------------------------------------------------------- feeds

FEEDS_TITLE = "Watched sources"
KIND_NAMES = {"feed": "feed", "calendar": "calendar"}


def _source_name(source: SourceView) -> Span:
    name = shorten(source.name, TITLE_LIMIT) or source.id
    href = source.url if source.url.startswith(("http://", "https://")) else None
    return Span(name, "bold", href)


def _is_failing(source: SourceView) -> bool:
    return source.health.failures > 0


def schedule_text(source: SourceView, now: datetime | None) -> str:
    """``every 30 minutes, next in 12 minutes, adaptive (now every 45 minutes)``."""
    parts = [f"every {humanize(source.every)}"]
    if source.next_poll is not None and now is not None:
        wait = source.next_poll - now
        parts.append("next now" if wait.total_seconds() <= 0 else f"next in {humanize(wait)}")
    if source.schedule:
        mode = source.schedule
        if mode == "adaptive" and source.interval is not None and source.interval != source.every:
            mode += f" (now every {humanize(source.interval)})"
        elif mode == "sessions":
            mode = "session week: polled more often"
        parts.append(mode)
    if source.pushed:
        parts.append("pushed by its hub")
    return ", ".join(parts)


def source_line(source: SourceView, tz: ZoneInfo, now: datetime | None = None) -> tuple[Span, ...]:
    health = source.health
    spans: list[Span] = [
        _source_name(source),
        Span(f" ({KIND_NAMES.get(source.kind, source.kind)}) — "),
    ]
    if health.failures > 0:
        spans.append(bold("failing"))
        spans.append(Span(f" ({plural(health.failures, 'failure')} in a row"))
        if health.last_error:
            spans.append(Span(", last error: "))
            spans.append(code(shorten(health.last_error, ERROR_LIMIT)))
        spans.append(Span(")"))
    elif health.last_success is None:
        spans.append(Span("not polled yet"))
    else:
        spans.append(Span("ok"))
    if health.last_success is not None:
        spans.append(Span(f" · last success {format_local(health.last_success, tz)}"))
    elif health.failures > 0:
        spans.append(Span(" · no successful poll yet"))
    spans.append(Span(" · " + schedule_text(source, now)))
    if source.moved_to:  # from a server's Location header: shown as code, never as a link
        spans.append(Span(" · moved permanently to "))
        spans.append(code(shorten(source.moved_to, MOVED_LIMIT)))
        spans.append(Span(": update its url in the configuration"))
    return tuple(spans)


#: A chat message lists at most this many sources (failing ones first).
FEEDS_SHOWN = 40

T = TypeVar("T")


def listed(items: Sequence[T], failing: Callable[[T], bool], limit: int = FEEDS_SHOWN) -> list[T]:
    """The sources a message lists: all of them up to ``limit``; beyond, the failing ones
    first (they matter most), then the others, each group in the configuration's order."""
    if len(items) <= limit:
        return list(items)
    first = [i for i in items if failing(i)][:limit]
    if len(first) < limit:
        first += islice((i for i in items if not failing(i)), limit - len(first))
    return first


def counts_of(sources: Sequence[SourceView], counts: SourceCounts | None) -> SourceCounts:
    """``counts`` when the caller counted every source, else those of ``sources``."""
    if counts is not None:
        return counts
    return SourceCounts(len(sources), sum(1 for s in sources if _is_failing(s)))


def feeds_body(
    sources: Sequence[SourceView],
    tz: ZoneInfo,
    now: datetime | None = None,
    counts: SourceCounts | None = None,
) -> Rich:
    """``sources``: every source, or (with ``counts``) those ``listed`` of them."""
    total = counts_of(sources, counts)
    if not total.total:
        return (
            para(
                "No feeds or calendars are watched yet. Maintainers add them in ",
                code("config/feeds.yaml"),
                " and ",
                code("config/sessions.yaml"),
                ".",
            ),
        )
    shown = listed(sources, _is_failing)
    body: list[Block] = [
        para(
            f"{plural(total.total, 'source')}: {total.total - total.failing} ok, "
            f"{total.failing} failing."
        ),
        Bullets(tuple(source_line(s, tz, now) for s in shown)),
    ]
    if total.total > len(shown):
        body.append(_more_sources(total.total - len(shown)))
    return tuple(body)


def _more_sources(rest: int) -> Paragraph:
    return para(f"… and {plural(rest, 'more source')}, failing ones listed first.")


#: Characters of a moved source's new address shown.
MOVED_LIMIT = 200


# ------------------------------------------------------------------------------- status

STATUS_TITLE = "Bot status"


def status_runtime(
    version: str,
    started_at: datetime,
    queued: int,
    transports: Sequence[str],
    tz: ZoneInfo,
    now: datetime,
) -> list[Block]:
    return [
        para(
            "Version ",
            bold(version),
            f" · up {humanize(now - started_at)} (since {format_local(started_at, tz)})",
        ),
        para(f"Queued alerts: {queued}"),
        para("Transports: ", ", ".join(transports) if transports else "none"),
    ]


def status_replicas(replicas: Sequence[ReplicaInfo], shards: int) -> list[Block]:
    """One line per replica sharing the database: its shards, jobs and last heartbeat."""
    if not replicas:
        return []
    running = [r for r in replicas if not (r.stopped or r.silent)]
    owned = {n for r in running for n in r.shards}
    lines: list[tuple[Span, ...]] = []
    for r in replicas:
        spans: list[Span] = [code(r.name)]
        if r.me:
            spans.append(Span(" (this one)"))
        if r.stopped:
            spans.append(Span(" · stopped"))
        elif r.silent:
            silent = humanize(timedelta(seconds=r.heartbeat_age))
            spans.append(Span(f" · silent for {silent} (dead, or cut off from the database)"))
        else:
            listed = ", ".join(map(str, r.shards)) if r.shards else "none"
            spans.append(Span(f" · shards {listed}"))
            if r.jobs:
                spans.append(Span(" · " + ", ".join(j.removeprefix("job:") for j in r.jobs)))
            age = r.heartbeat_age
            ago = f"{age:.0f} s" if age < 120 else humanize(timedelta(seconds=age))
            spans.append(Span(f" · heartbeat {ago} ago"))
        lines.append(tuple(spans))
    head = f"Replicas: {len(running)} running, {len(owned)} of {plural(shards, 'shard')} held"
    return [para(head), Bullets(tuple(lines))]


STATUS_UNAVAILABLE = "Runtime details (version, uptime, queue) are not available here."


def status_source_line(source: SourceView, tz: ZoneInfo) -> tuple[Span, ...]:
    health = source.health
    spans: list[Span] = [_source_name(source), Span(": ")]
    if health.last_success is not None:
        spans.append(Span(f"last success {format_local(health.last_success, tz)}"))
    else:
        spans.append(Span("no successful poll yet"))
    if health.last_error:
        spans.append(Span(" · last error"))
        if health.last_error_at is not None:
            spans.append(Span(f" at {format_local(health.last_error_at, tz)}"))
        spans.append(Span(": "))
        spans.append(code(shorten(health.last_error, ERROR_LIMIT)))
        if health.failures > 0:
            spans.append(Span(f" ({plural(health.failures, 'failure')} in a row)"))
    else:
        spans.append(Span(" · no errors"))
    return tuple(spans)


def status_body(
    runtime: list[Block],
    sources: Sequence[SourceView],
    tz: ZoneInfo,
    counts: SourceCounts | None = None,
) -> Rich:
    """``sources``: every source, or (with ``counts``) those ``listed`` of them."""
    total = counts_of(sources, counts)
    blocks: list[Block] = list(runtime) if runtime else [para(STATUS_UNAVAILABLE)]
    if total.total:
        shown = listed(sources, _is_failing)
        blocks.append(para(f"Sources ({total.total}, {total.failing} failing):"))
        blocks.append(Bullets(tuple(status_source_line(s, tz) for s in shown)))
        if total.total > len(shown):
            blocks.append(_more_sources(total.total - len(shown)))
    else:
        blocks.append(para("No sources are watched."))
    return tuple(blocks)


# ------------------------------------------------------------------------------- the treaty

RATIFICATIONS_TITLE = "Signatures and ratifications"
NOT_FOLLOWED_TITLE = "The depositary's record is not followed"
NOT_READ_TITLE = "The depositary's record has not been read yet"
UNKNOWN_STATE_TITLE = "No such participant"
LATEST_SHOWN = 5
STATEMENTS_SHOWN = 3


def not_followed_body() -> Rich:
    return (
        para(
            "This bot does not follow the treaty's status. Maintainers add the depositary's "
            "record in ",
            code("config/treaty.yaml"),
            ".",
        ),
    )


def not_read_body(problem: str | None) -> Rich:
    blocks: list[Block] = [
        para(
            "The bot has not read the depositary's record yet: it does at its first "
            "successful poll of the source (see ",
            code("feeds"),
            ").",
        )
    ]
    if problem:
        blocks.append(para("Latest error: ", Span(shorten(problem, ERROR_LIMIT))))
    return tuple(blocks)


def _action_line(action: TreatyAction) -> tuple[Span, ...]:
    when = messages.day(action.on) if action.on is not None else "undated"
    what = messages.treaty_action_title(action).removeprefix(action.state + " ")
    return (Span(when + " — "), bold(action.state), Span(" " + what.replace(" the Convention", "")))


def depositary_line(source: TreatySource, as_of: datetime | None, tz: ZoneInfo) -> Paragraph:
    read = f", as of {format_local(as_of, tz)}" if as_of is not None else ""
    return para("Source: ", link(source.name, source.page), read + ".")


def ratifications_body(
    signed: int,
    parties: int,
    where: Standing,
    latest: Sequence[TreatyAction],
    source: TreatySource,
    as_of: datetime | None,
    problem: str | None,
    tz: ZoneInfo,
    now: datetime,
) -> Rich:
    blocks: list[Block] = [
        para(
            bold(plural(signed, "signatory", "signatories")),
            ", ",
            bold(plural(parties, "party", "parties")),
            f" ({plural(where.counted, 'instrument')} counting toward entry into force).",
        )
    ]
    if where.in_force is not None:
        verb = "entered" if where.in_force <= now.date() else "enters"
        blocks.append(
            para(f"The Convention {verb} into force on ", bold(messages.day(where.in_force)), ".")
        )
    else:
        missing = where.needed - where.counted
        blocks.append(
            para(
                f"{where.counted} of the {where.needed} instruments needed for entry into "
                f"force: {plural(missing, 'more instrument')} needed.",
            )
        )
    if latest:
        blocks.append(para("Latest:"))
        blocks.append(Bullets(tuple(_action_line(a) for a in latest)))
    blocks.append(depositary_line(source, as_of, tz))
    if problem:
        blocks.append(
            para(italic("The latest poll failed: " + shorten(problem, ERROR_LIMIT) + "."))
        )
    return tuple(blocks)


def country_title(name: str) -> str:
    return f"{shorten(name, TITLE_LIMIT)} and the Convention"


def country_body(
    participant: Participant,
    statements: Sequence[Statement],
    source: TreatySource,
    as_of: datetime | None,
    tz: ZoneInfo,
) -> Rich:
    signed = messages.day(participant.signed) if participant.signed else "not signed"
    if participant.consent is not None and participant.consent_kind is not None:
        consent = f"{participant.consent_kind}, deposited on {messages.day(participant.consent)}"
    else:
        consent = "no instrument deposited"
    items: list[tuple[Span, ...]] = [
        (bold("Signature: "), Span(signed)),
        (bold("Consent to be bound: "), Span(consent)),
    ]
    if statements:
        kinds = sorted({s.kind for s in statements})
        items.append(
            (
                bold("Declarations and reservations: "),
                Span(f"{len(statements)} ({', '.join(kinds)})"),
            )
        )
    else:
        items.append((bold("Declarations and reservations: "), Span("none recorded")))
    blocks: list[Block] = [Bullets(tuple(items))]
    for statement in statements[:STATEMENTS_SHOWN]:
        blocks.append(
            para(italic(statement.kind.capitalize() + ": "), shorten(statement.text, 280))
        )
    if len(statements) > STATEMENTS_SHOWN:
        blocks.append(para(f"… and {len(statements) - STATEMENTS_SHOWN} more at the source."))
    blocks.append(depositary_line(source, as_of, tz))
    return tuple(blocks)


def unknown_state_body(query: str, close: Sequence[str]) -> Rich:
    blocks: list[Block] = [
        para("No participant of the treaty matches “", Span(shorten(query, ECHO_LIMIT)), "”."),
    ]
    if close:
        blocks.append(did_you_mean("country", close))
    blocks.append(
        para(
            "Only states that signed or joined the Convention are listed; ",
            code("ratifications"),
            " shows where the count stands.",
        )
    )
    return tuple(blocks)


def treaty_hint(where: Standing | None, now: datetime) -> Paragraph:
    """After "nothing scheduled": where the treaty stands, and the command that says more."""
    if where is None:
        return para("For the treaty's signatures and ratifications: ", code("ratifications"), ".")
    if where.in_force is not None:
        verb = "entered" if where.in_force <= now.date() else "enters"
        head = f"The Convention {verb} into force on {messages.day(where.in_force)}"
    else:
        head = (
            f"The Convention is not in force yet: {where.counted} of the {where.needed} "
            "instruments needed"
        )
    return para(head + "; ", code("ratifications"), " for the details.")


# ------------------------------------------------------------------------------- follows

FOLLOWING_TITLE = "What you follow"
TOO_MANY_FOLLOWS_TITLE = "You follow too many things"
NOT_FOLLOWING_TITLE = "Not followed"
UNFOLLOWED_ALL_TITLE = "You follow nothing now"
FOLLOW_KIND_WORDS = {"clause": "Clause", "state": "State", "words": "Words"}
FOLLOW_WHAT = {
    "clause": "its status changes, and news that names its article",
    "state": "its signature, ratification and declarations, and news that mentions it",
    "words": "alerts and news whose title or text holds these words",
}


def follow_label(follow: Follow, clause: Clause | None = None) -> str:
    """How a follow is named to people: ``Art. 24 — Title``, ``Germany``, ``“privacy”``."""
    if follow.kind == "clause":
        if clause is not None:
            return f"Art. {clause.article} — {shorten(clause.title, 80) or '(untitled)'}"
        return f"Art. {follow.article}" if follow.article else f"clause {follow.value}"
    if follow.kind == "state":
        return clean_name(follow.value)
    return f"“{shorten(follow.value, 100)}”"


def unfollow_command(follow: Follow) -> str:
    """The command that stops ``follow``, as people would type it."""
    if follow.kind == "clause":
        return f"unfollow {follow.value}"
    if follow.kind == "state":
        return f"unfollow {clean_name(follow.value)}"
    return f'unfollow "{shorten(follow.value, 100)}"'


def followed_title(label: str) -> str:
    return f"You now follow {label}"


def followed_body(follow: Follow, count: int, maximum: int) -> Rich:
    return (
        para(
            "You will get ",
            FOLLOW_WHAT[follow.kind],
            " in a direct message, as it happens.",
        ),
        para(
            f"You follow {plural(count, 'thing')} (at most {maximum}); ",
            code("following"),
            " lists them and ",
            code(unfollow_command(follow)),
            " stops this one.",
        ),
    )


def already_following_title(label: str) -> str:
    return f"You already follow {label}"


def already_following_body(follow: Follow) -> Rich:
    return (para(code("following"), " lists what you follow; ", code(unfollow_command(follow))),)


def too_many_follows_body(maximum: int) -> Rich:
    return (
        para(f"You follow {maximum} things, the most one person can."),
        para(
            "Stop following one first: ",
            code("following"),
            " lists them, with the ",
            code("unfollow"),
            " command for each.",
        ),
    )


def unfollowed_title(label: str) -> str:
    return f"You no longer follow {label}"


def unfollowed_body(left: int) -> Rich:
    if not left:
        return (para("You follow nothing now. ", code("help follow"), " says how to start."),)
    return (para(f"You still follow {plural(left, 'thing')}; ", code("following"), " lists them."),)


def unfollowed_all_body(removed: int) -> Rich:
    return (para(f"Stopped following {plural(removed, 'thing')}."),)


def not_following_body(query: str) -> Rich:
    return (
        para("You do not follow “", Span(shorten(query, ECHO_LIMIT)), "”."),
        para(code("following"), " lists what you follow."),
    )


def nothing_followed_body() -> Rich:
    return (
        para("You follow nothing yet."),
        para(
            "Follow a clause, a state or some words, and the alerts about it come to you "
            "directly: ",
            code("follow art-24"),
            ", ",
            code("follow germany"),
            ", ",
            code('follow "data protection"'),
            ".",
        ),
    )


def following_body(
    follows: Sequence[Follow], clauses: Sequence[Clause | None], maximum: int
) -> Rich:
    items = tuple(
        (
            bold(FOLLOW_KIND_WORDS[f.kind] + ": "),
            Span(follow_label(f, c)),
            Span(" — "),
            code(unfollow_command(f)),
        )
        for f, c in zip(follows, clauses, strict=True)
    )
    return (
        para(f"You follow {plural(len(follows), 'thing')} (at most {maximum}):"),
        Bullets(items),
        para(
            "Matching alerts come to you in a direct message. ", code("unfollow all"), " stops all."
        ),
    )


def several_follow_clauses_body(query: str, clauses: Sequence[Clause]) -> Rich:
    return (
        para("Several clauses match “", Span(shorten(query, ECHO_LIMIT)), "”:"),
        Bullets(tuple((*clause_line(c), Span(" — "), code(f"follow {c.id}")) for c in clauses)),
    )


def unknown_follow_clause_body(query: str, close: Sequence[str]) -> Rich:
    text = shorten(query, ECHO_LIMIT)
    blocks: list[Block] = [para("No tracked clause matches “", Span(text), "”.")]
    if close:
        spans: list[Span] = [Span("Did you mean ")]
        for index, candidate in enumerate(close):
            if index:
                spans.append(Span(" or "))
            spans.append(code(f"follow {candidate}"))
        spans.append(Span("?"))
        blocks.append(Paragraph(tuple(spans)))
    blocks.append(
        para("To follow these words in the news instead, quote them: ", code(f'follow "{text}"'))
    )
    return tuple(blocks)


def follow_words_problem(name: str, maximum: int) -> str:
    return (
        f"`{name}` needs a clause, a state or words of at most {maximum} characters, "
        f"with at least one letter or digit. {usage_line(name)}"
    )


# ------------------------------------------------------------------------------- Slack's App Home

HOME_TITLE = "Treaty Watch"
HOME_DATES_TITLE = "Next dates"
HOME_FOLLOWS_TITLE = "What you follow"
HOME_UNFOLLOW = "Unfollow"
HOME_SHOWN_DATES = 3


def home_intro() -> Rich:
    return (
        para(
            "Alerts and answers on the UN Convention against Cybercrime. Type ",
            code("/treaty help"),
            " anywhere for the commands.",
        ),
    )


def home_no_dates() -> Rich:
    return (para("No session, meeting or deadline is scheduled ahead."),)


def home_no_follows() -> Rich:
    return nothing_followed_body()


def home_follow_line(follow: Follow, clause: Clause | None) -> tuple[Span, ...]:
    return (bold(FOLLOW_KIND_WORDS[follow.kind] + ": "), Span(follow_label(follow, clause)))
