"""The command engine: one grammar for Slack, Matrix and the terminal.

``parse_command(text) -> Command | UsageError``, ``answer(command, view, now) -> Reply``, and
``handle(text, view, now)`` for both. Pure: the app builds a ``CommandView`` (what the answer is
computed from) and renders the ``Reply`` (neutral rich text) on its transport.

Grammar
    ``[/treaty | !treaty] NAME [ARGS…]``. The transport strips its prefix, but one left in
    place is tolerated. Names are case-insensitive (``_`` reads as ``-``); whitespace is free.
    The word ``share`` anywhere (before or after the name, among the arguments) asks for the
    answer to be posted in the channel: it sets ``share=True`` and is not an argument. Empty
    input is ``help``. Usage errors and refusals are never shared.

Admin commands
    ``status`` and ``reload`` answer only when ``view.is_admin`` (the app decides who is an
    admin from ``config/bot.yaml`` and the asking user); others get a polite refusal naming
    the admin permission.

Reload protocol
    Re-reading ``config/`` is I/O, so the engine only *asks* for it: for an admin,
    ``answer`` returns a ``Reply`` with ``action == "reload"`` (its body says "Re-reading
    config/ now…"). The app must check ``reply.action`` before sending: run its reload, then
    send ``reload_result(problems, share=reply.share)`` instead (or after, as an interim
    note). Any reply whose ``action`` is ``None`` is simply sent.

        reply = handle(text, view, now)
        if reply.action == "reload":
            problems = await app.reload()
            reply = reload_result([str(p) for p in problems], share=reply.share)
        await transport.reply(..., reply)

Follows protocol
    ``follow``, ``unfollow`` and ``following`` answer from ``view.follows`` (what the asker
    follows now) and are never shared: ``share`` is ignored and ``reply.direct`` is set. A
    change comes back as ``action == "follows"`` with ``reply.follows``, the asker's whole
    new list, which the app stores before it sends the answer. The engine enforces
    ``MAX_FOLLOWS``; if the stored list changed meanwhile, the app answers again from it.

        if reply.action == "follows":
            await store.commit(Changes(follows={person: reply.follows}))
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo

from bot.domain import replies, treaty
from bot.domain.countries import clean_name, find_state, name_key
from bot.domain.follows import (
    MAX_FOLLOWS,
    MAX_WORDS,
    Follow,
    add_follow,
    known_state,
    remove_follow,
)
from bot.domain.model import Clause, NewsRecord, SessionEvent, SourceCounts, SourceView
from bot.domain.text import Rich
from bot.domain.treaty import EntryIntoForceRule, TreatySource, TreatyStatus

COMMANDS: tuple[str, ...] = (
    "next-session",
    "sessions",
    "clauses",
    "clause",
    "news",
    "feeds",
    "ratifications",
    "country",
    "follow",
    "unfollow",
    "following",
    "help",
    "status",
    "reload",
)
ADMIN_COMMANDS = frozenset({"status", "reload"})
ALIASES: Mapping[str, str] = {
    "next": "next-session",
    "nextsession": "next-session",
    "sources": "feeds",
    "commands": "help",
    "ratification": "ratifications",
    "signatures": "ratifications",
    "parties": "ratifications",
    "state": "country",
    "follows": "following",
    "followed": "following",
}
#: Commands about the asker alone: never shared (see "Follows" above).
PERSONAL_COMMANDS = frozenset({"follow", "unfollow", "following"})
#: The commands that read ``CommandView.sources`` (with thousands of sources, describing each
#: one is the costly part of a view: the others are answered without it).
SOURCE_COMMANDS = frozenset({"feeds", "status"})
PREFIXES = ("/treaty", "!treaty")
SHARE_WORD = "share"

SESSIONS_DEFAULT, SESSIONS_MAX = 5, 25
NEWS_DEFAULT, NEWS_MAX = 5, 20
CLAUSE_STATUSES = ("open", "contested", "agreed", "adopted", "reserved", "deferred")
SETTLED = frozenset({"agreed", "adopted"})
OVER = frozenset({"cancelled", "concluded"})

Action = Literal["reload", "follows"]


# ------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class Command:
    """A well-formed command. ``count`` (sessions, news) and ``query`` (clauses, clause, news,
    help) are the parsed arguments; ``args`` keeps the raw words, ``share`` removed."""

    name: str
    args: tuple[str, ...] = ()
    share: bool = False
    count: int | None = None
    query: str | None = None


@dataclass(frozen=True, slots=True)
class UsageError:
    """A command that cannot be answered as written.

    ``message`` is a short friendly sentence (command words in `backticks`, which the reply
    renders as code); ``suggestion`` the closest valid command line, if any; ``command`` the
    command it is about (``None`` for an unknown command).
    """

    message: str
    suggestion: str | None = None
    command: str | None = None


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """One replica on a shared database, for ``status``."""

    name: str  # host and process id
    me: bool  # the replica answering
    heartbeat_age: float  # seconds since its last heartbeat
    shards: tuple[int, ...]
    jobs: tuple[str, ...]
    stopped: bool = False  # it said so when it stopped
    silent: bool = False  # no heartbeat for longer than a lease: dead, or cut off


@dataclass(frozen=True, slots=True)
class StatusInfo:
    """Runtime facts for ``status``, gathered by the app."""

    version: str
    started_at: datetime
    queued_alerts: int = 0
    transports: tuple[str, ...] = ()
    #: with replicas on a shared database: every one the database knows (else empty)
    replicas: tuple[ReplicaInfo, ...] = ()
    shards: int = 0


@dataclass(frozen=True, slots=True)
class TreatyView:
    """The depositary's record for the treaty commands: ``status`` is ``None`` until a first
    record was read; ``problem`` is the latest error while the source fails."""

    status: TreatyStatus | None
    rule: EntryIntoForceRule
    source: TreatySource
    as_of: datetime | None = None
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class CommandView:
    """What an answer is computed from. ``news`` is newest first; ``tz`` the coalition's zone."""

    sessions: tuple[SessionEvent, ...]
    clauses: tuple[Clause, ...]
    news: tuple[NewsRecord, ...]
    #: every source, or (with ``source_counts``) those ``replies.listed`` of them
    sources: tuple[SourceView, ...]
    tz: ZoneInfo
    is_admin: bool = False
    #: how many sources there are and fail, when ``sources`` holds only the listed ones
    source_counts: SourceCounts | None = None
    status: StatusInfo | None = None
    source_names: Mapping[str, str] = field(default_factory=dict)
    #: the depositary's record (``None`` when treaty.yaml names no depositary)
    treaty: TreatyView | None = None
    #: where the timeline is served as a calendar to subscribe to (``None``: not public)
    calendar_url: str | None = None
    #: what the asker follows (``follow``, ``unfollow``, ``following``)
    follows: tuple[Follow, ...] = ()


@dataclass(frozen=True, slots=True)
class Reply:
    """An answer: a plain-text ``title``, a neutral rich ``body``, whether to post it in the
    channel (``share``), whether the command succeeded (``ok``), and an ``action`` the app must
    perform before answering (see "Reload protocol" above)."""

    title: str
    body: Rich
    share: bool
    ok: bool = True
    action: Action | None = None
    #: with ``action == "follows"``: the asker's follows as they are to be stored
    follows: tuple[Follow, ...] | None = None
    #: about the asker alone: a platform that cannot show a reply to one person only sends
    #: it to them directly
    direct: bool = False


# ------------------------------------------------------------------------------- parsing

_NUMBER = re.compile(r"[+-]?[0-9]+")


def parse_command(text: str) -> Command | UsageError:
    words = [w for w in text.split() if w.casefold() != SHARE_WORD]
    share = len(words) != len(text.split())
    if words and words[0].casefold() in PREFIXES:
        words = words[1:]
    if not words:
        return Command("help", (), share)
    name = canonical_name(words[0])
    args = tuple(words[1:])
    if name is None:
        suggestion = closest_command(words[0])
        return UsageError(replies.unknown_command(words[0], suggestion), suggestion)
    if name in ("follow", "unfollow"):  # "share" inside quotes is a word to follow
        raw = text.split()
        args = _unshared(raw[raw.index(words[0]) + 1 :])
    return _PARSERS[name](name, args, share)


def _unshared(tokens: Sequence[str]) -> tuple[str, ...]:
    """``tokens`` without the word ``share``, except where it is inside quotes."""
    kept: list[str] = []
    inside = False
    for token in tokens:
        opens = not inside and token[0] in _QUOTES_OPEN
        if not (inside or opens) and token.casefold() == SHARE_WORD:
            continue
        kept.append(token)
        if opens:
            inside = not (len(token) > 1 and token[-1] in _QUOTES_CLOSE)
        elif inside and token[-1] in _QUOTES_CLOSE:
            inside = False
    return tuple(kept)


def canonical_name(word: str) -> str | None:
    key = word.casefold().replace("_", "-")
    if key in COMMANDS:
        return key
    return ALIASES.get(key)


def closest_command(word: str) -> str | None:
    key = word.casefold().replace("_", "-")
    found = difflib.get_close_matches(key, [*COMMANDS, *ALIASES], n=1, cutoff=0.5)
    if not found:
        return None
    return ALIASES.get(found[0], found[0])


def _usage(name: str, message: str) -> UsageError:
    return UsageError(message, replies.HELP_BY_NAME[name].example, name)


def _no_args(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    if args:
        return _usage(name, replies.takes_no_arguments(name))
    return Command(name, args, share)


def _count(name: str, word: str, maximum: int) -> int | UsageError:
    if not _NUMBER.fullmatch(word):
        return _usage(name, replies.bad_count(name, word, maximum))
    value = int(word)
    if not 1 <= value <= maximum:
        return _usage(name, replies.bad_count(name, word, maximum))
    return value


def _sessions(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    if len(args) > 1:
        return _usage(name, replies.too_many_arguments(name))
    count = SESSIONS_DEFAULT
    if args:
        parsed = _count(name, args[0], SESSIONS_MAX)
        if isinstance(parsed, UsageError):
            return parsed
        count = parsed
    return Command(name, args, share, count=count)


def _clauses(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    return Command(name, args, share, query=" ".join(args) or None)


def _clause(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    if not args:
        return _usage(name, replies.needs_argument(name))
    return Command(name, args, share, query=" ".join(args))


def _news(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    count = NEWS_DEFAULT
    rest = args
    if rest and _NUMBER.fullmatch(rest[0]):
        parsed = _count(name, rest[0], NEWS_MAX)
        if isinstance(parsed, UsageError):
            return parsed
        count, rest = parsed, rest[1:]
    return Command(name, args, share, count=count, query=" ".join(rest) or None)


def _thing(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    if not args:
        return _usage(name, replies.needs_thing(name))
    return Command(name, args, False, query=" ".join(args))


def _help(name: str, args: tuple[str, ...], share: bool) -> Command | UsageError:
    if not args:
        return Command(name, args, share)
    wanted = canonical_name(args[0])
    if wanted is None or len(args) > 1:
        suggestion = closest_command(args[0])
        return UsageError(replies.unknown_command(" ".join(args), suggestion), suggestion)
    return Command(name, args, share, query=wanted)


_PARSERS: Mapping[str, Callable[[str, tuple[str, ...], bool], Command | UsageError]] = {
    "next-session": _no_args,
    "sessions": _sessions,
    "clauses": _clauses,
    "clause": _clause,
    "news": _news,
    "feeds": _no_args,
    "ratifications": _no_args,
    "country": _clause,
    "follow": _thing,
    "unfollow": _thing,
    "following": _no_args,
    "help": _help,
    "status": _no_args,
    "reload": _no_args,
}


# ------------------------------------------------------------------------------- answering


def needs_sources(command: Command | UsageError) -> bool:
    """Whether the answer to ``command`` reads the sources' descriptions."""
    return isinstance(command, Command) and command.name in SOURCE_COMMANDS


def handle(text: str, view: CommandView, now: datetime) -> Reply:
    """Parse and answer one command line."""
    return answer(parse_command(text), view, now)


def answer(command: Command | UsageError, view: CommandView, now: datetime) -> Reply:
    """The reply to ``command`` at ``now`` (aware). ``reload`` only asks the app to act."""
    if isinstance(command, UsageError):
        title = replies.usage_title(command.command) if command.command else replies.UNKNOWN_TITLE
        return Reply(title, replies.usage_body(command.message), share=False, ok=False)
    if command.name in ADMIN_COMMANDS and not view.is_admin:
        return Reply(
            replies.ADMIN_TITLE, replies.admin_only_body(command.name), share=False, ok=False
        )
    reply = _ANSWERS[command.name](command, view, now)
    if command.name in PERSONAL_COMMANDS:  # about the asker alone: never in the channel
        reply = replace(reply, share=False, direct=True)
    return reply


def reload_result(problems: Sequence[str], *, share: bool = False) -> Reply:
    """The answer to ``reload`` once the app has re-read ``config/``: its problems, if any."""
    if not problems:
        return Reply(replies.RELOADED_TITLE, replies.reloaded_body(), share)
    return Reply(
        replies.reload_problems_title(len(problems)),
        replies.reload_problems_body(problems),
        share,
        ok=False,
    )


def upcoming_events(events: Sequence[SessionEvent], now: datetime) -> list[SessionEvent]:
    """Events still ahead or ongoing (not cancelled or concluded), soonest first."""
    return sorted(
        (e for e in events if e.status not in OVER and (e.end or e.start) > now),
        key=lambda e: (e.start, e.key),
    )


def last_event(events: Sequence[SessionEvent], now: datetime) -> SessionEvent | None:
    """The most recently finished event that was not cancelled."""
    past = [e for e in events if e.status != "cancelled" and (e.end or e.start) <= now]
    return max(past, key=lambda e: (e.end or e.start, e.key), default=None)


def _next_session(command: Command, view: CommandView, now: datetime) -> Reply:
    ahead = upcoming_events(view.sessions, now)
    if not ahead:
        body = replies.nothing_ahead_body(
            last_event(view.sessions, now), view.tz, calendar_url=view.calendar_url
        )
        return Reply(replies.NOTHING_AHEAD_TITLE, _with_treaty(body, view, now), command.share)
    event = ahead[0]
    return Reply(
        replies.next_session_title(event, now),
        replies.next_session_body(event, view.tz, now, calendar_url=view.calendar_url),
        command.share,
    )


def _sessions_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    ahead = upcoming_events(view.sessions, now)
    if not ahead:
        body = replies.nothing_ahead_body(
            last_event(view.sessions, now), view.tz, calendar_url=view.calendar_url
        )
        return Reply(replies.NOTHING_AHEAD_TITLE, _with_treaty(body, view, now), command.share)
    count = command.count or SESSIONS_DEFAULT
    shown = ahead[:count]
    return Reply(
        replies.sessions_title(len(shown)),
        replies.sessions_body(
            shown, len(ahead) - len(shown), view.tz, now, calendar_url=view.calendar_url
        ),
        command.share,
    )


def _mentions(clause: Clause, word: str) -> bool:
    needle = word.casefold()
    haystack = (clause.id, clause.article, clause.title, clause.summary, *clause.concerns)
    return any(needle in text.casefold() for text in haystack)


def _clauses_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    query = (command.query or "").strip()
    key = query.casefold()
    if not query:
        mode, value = "unsettled", ""
        found = [c for c in view.clauses if c.status not in SETTLED]
    elif key in CLAUSE_STATUSES:
        mode, value = "status", key
        found = [c for c in view.clauses if c.status == key]
    elif key == "all":
        mode, value = "all", ""
        found = list(view.clauses)
    else:
        mode, value = "word", query
        found = [c for c in view.clauses if _mentions(c, query)]
    title = replies.clauses_title(mode, value)
    if not found:
        return Reply(title, replies.no_clauses_body(mode, value, len(view.clauses)), command.share)
    return Reply(title, replies.clauses_body(found, found[0].article), command.share)


_ARTICLE_PREFIX = re.compile(r"^(?:articles?|arts?)\.?(?=[\s.:-]*[0-9])[\s.:-]*")
_RANGE = re.compile(r"^([0-9]+)-([0-9]+)$")
_LEADING_NUMBER = re.compile(r"^([0-9]+)(?![0-9-])")


def article_key(text: str) -> str:
    """``Art. 4``, ``art-4``, ``Article 4`` -> ``4``; ``7–10`` -> ``7-10``; others casefolded."""
    key = text.casefold().strip().replace("–", "-").replace("—", "-")
    key = _ARTICLE_PREFIX.sub("", key)
    return re.sub(r"\s+", "", key)


def find_clauses(clauses: Sequence[Clause], query: str) -> list[Clause]:
    """The clauses ``query`` names: by id, by article, by a range or sub-article containing it."""
    raw = " ".join(query.split()).casefold()
    exact = [c for c in clauses if c.id.casefold() == raw]
    if exact:
        return exact
    key = article_key(query)
    by_article = [c for c in clauses if key in (article_key(c.article), article_key(c.id))]
    if by_article or not key.isdigit():
        return by_article
    number = int(key)
    within = []
    for clause in clauses:
        article = article_key(clause.article)
        span = _RANGE.match(article)
        lead = _LEADING_NUMBER.match(article)
        if (span and int(span[1]) <= number <= int(span[2])) or (lead and int(lead[1]) == number):
            within.append(clause)
    return within


def _clause_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    query = command.query or ""
    found = find_clauses(view.clauses, query)
    if len(found) == 1:
        clause = found[0]
        return Reply(replies.clause_title(clause), replies.clause_body(clause), command.share)
    if found:
        return Reply(
            replies.SEVERAL_CLAUSES_TITLE,
            replies.several_clauses_body(query, found),
            command.share,
        )
    names = {c.id.casefold(): c.id for c in view.clauses}
    names.update({article_key(c.article): c.article for c in view.clauses})
    close = difflib.get_close_matches(article_key(query), list(names), n=3, cutoff=0.5)
    ids = list(dict.fromkeys(names[c] for c in close))
    return Reply(
        replies.UNKNOWN_CLAUSE_TITLE,
        replies.unknown_clause_body(query, ids),
        share=False,
        ok=False,
    )


def _source_name(view: CommandView, source: str) -> str:
    if source in view.source_names:
        return view.source_names[source]
    for candidate in view.sources:
        if candidate.id == source:
            return candidate.name
    return source


def _news_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    word = command.query
    items = list(view.news)
    if word:
        needle = word.casefold()
        items = [n for n in items if needle in n.title.casefold()]
    items = items[: command.count or NEWS_DEFAULT]
    title = replies.news_title(word)
    if not items:
        return Reply(title, replies.no_news_body(word), command.share)
    lines = [replies.news_line(n, _source_name(view, n.source), view.tz) for n in items]
    return Reply(title, replies.news_body(lines), command.share)


def _feeds_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    return Reply(
        replies.FEEDS_TITLE,
        replies.feeds_body(view.sources, view.tz, now, view.source_counts),
        command.share,
    )


def _with_treaty(body: Rich, view: CommandView, now: datetime) -> Rich:
    """Nothing scheduled: the treaty's own timeline is where the work is."""
    t = view.treaty
    if t is None:
        return body
    where = treaty.standing(t.status, t.rule) if t.status is not None else None
    return (*body, replies.treaty_hint(where, now))


def _treaty_unavailable(view: CommandView) -> Reply | None:
    if view.treaty is None:
        return Reply(replies.NOT_FOLLOWED_TITLE, replies.not_followed_body(), False, ok=False)
    if view.treaty.status is None:
        return Reply(
            replies.NOT_READ_TITLE, replies.not_read_body(view.treaty.problem), False, ok=False
        )
    return None


def _record(view: CommandView) -> tuple[TreatyView, TreatyStatus] | Reply:
    """The depositary's record, or the answer that says why there is none."""
    unavailable = _treaty_unavailable(view)
    if unavailable is not None:
        return unavailable
    assert view.treaty is not None and view.treaty.status is not None
    return view.treaty, view.treaty.status


def _ratifications_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    record = _record(view)
    if isinstance(record, Reply):
        return record
    t, status = record
    body = replies.ratifications_body(
        len(treaty.signatories(status)),
        len(treaty.parties(status)),
        treaty.standing(status, t.rule),
        treaty.latest_actions(status, replies.LATEST_SHOWN),
        t.source,
        t.as_of,
        t.problem,
        view.tz,
        now,
    )
    return Reply(replies.RATIFICATIONS_TITLE, body, command.share)


def _country_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    record = _record(view)
    if isinstance(record, Reply):
        return record
    t, status = record
    query = command.query or ""
    match = find_state(query, [p.name for p in status.participants])
    participant = status.participant(match.found) if match.found else None
    if participant is None:
        return Reply(
            replies.UNKNOWN_STATE_TITLE,
            replies.unknown_state_body(query, match.suggestions),
            share=False,
            ok=False,
        )
    return Reply(
        replies.country_title(participant.name),
        replies.country_body(
            participant, status.statements_of(participant.name), t.source, t.as_of, view.tz
        ),
        command.share,
    )


_QUOTES_OPEN = "\"'“„‘«"
_QUOTES_CLOSE = "\"'”“’»"
_ARTICLE_LIKE = re.compile(r"(?:(?:articles?|arts?)\.?[\s.:-]*)?[0-9]+(?:\s*[-–]\s*[0-9]+)?")


def unquote(text: str) -> tuple[str, bool]:
    """``text`` with spaces collapsed and surrounding quotes removed; whether it was quoted."""
    text = " ".join(text.split())
    if len(text) >= 2 and text[0] in _QUOTES_OPEN and text[-1] in _QUOTES_CLOSE:
        return " ".join(text[1:-1].split()), True
    return text, False


def _state_named(text: str, view: CommandView) -> str | None:
    """The state ``text`` names: a participant as ``country`` finds it, or a well-known name."""
    t = view.treaty
    if t is not None and t.status is not None:
        match = find_state(text, [p.name for p in t.status.participants])
        if match.found is not None:
            return match.found
    return known_state(text)


def resolve_follow(query: str, view: CommandView) -> Follow | Reply:
    """What ``follow QUERY`` follows: a clause (by id or article, as ``clause`` finds it), a
    state, else the words (always the words when quoted); or the answer saying why not."""
    text, quoted = unquote(query)
    if not re.search(r"\w", text) or len(text) > MAX_WORDS:
        message = replies.follow_words_problem("follow", MAX_WORDS)
        return Reply(replies.usage_title("follow"), replies.usage_body(message), False, ok=False)
    if quoted:
        return Follow("words", text)
    found = find_clauses(view.clauses, text)
    if len(found) == 1:
        return Follow("clause", found[0].id, found[0].article)
    if found:
        body = replies.several_follow_clauses_body(text, found)
        return Reply(replies.SEVERAL_CLAUSES_TITLE, body, False, ok=False)
    if _ARTICLE_LIKE.fullmatch(text.casefold()):
        return Reply(
            replies.UNKNOWN_CLAUSE_TITLE,
            replies.unknown_follow_clause_body(text, _close_clauses(view.clauses, text)),
            False,
            ok=False,
        )
    state = _state_named(text, view)
    if state is not None:
        return Follow("state", clean_name(state))
    return Follow("words", text)


def _close_clauses(clauses: Sequence[Clause], query: str) -> list[str]:
    names = {c.id.casefold(): c.id for c in clauses}
    names.update({article_key(c.article): c.article for c in clauses})
    close = difflib.get_close_matches(article_key(query), list(names), n=3, cutoff=0.5)
    return list(dict.fromkeys(names[c] for c in close))


def _clause_of(follow: Follow, clauses: Sequence[Clause]) -> Clause | None:
    if follow.kind != "clause":
        return None
    key = follow.value.casefold()
    return next((c for c in clauses if c.id.casefold() == key), None)


def _label(follow: Follow, view: CommandView) -> str:
    return replies.follow_label(follow, _clause_of(follow, view.clauses))


def _follow_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    resolved = resolve_follow(command.query or "", view)
    if isinstance(resolved, Reply):
        return resolved
    label = _label(resolved, view)
    if any(f.same(resolved) for f in view.follows):
        return Reply(
            replies.already_following_title(label),
            replies.already_following_body(resolved),
            False,
        )
    if len(view.follows) >= MAX_FOLLOWS:
        return Reply(
            replies.TOO_MANY_FOLLOWS_TITLE,
            replies.too_many_follows_body(MAX_FOLLOWS),
            False,
            ok=False,
        )
    follows = add_follow(view.follows, resolved)
    return Reply(
        replies.followed_title(label),
        replies.followed_body(resolved, len(follows), MAX_FOLLOWS),
        False,
        action="follows",
        follows=follows,
    )


def find_followed(query: str, view: CommandView) -> Follow | None:
    """Which of the asker's follows ``query`` names: by its key (``clause:art-24``), its
    value, its article or another name of its state, else as ``follow`` would resolve it."""
    text, quoted = unquote(query)
    wanted = text.casefold()
    for follow in view.follows:
        if wanted in (follow.key.casefold(), follow.value.casefold()):
            return follow
    if quoted:
        return next((f for f in view.follows if f.same(Follow("words", text))), None)
    for follow in view.follows:
        if follow.kind == "state" and name_key(follow.value) == name_key(text):
            return follow
        if (
            follow.kind == "clause"
            and follow.article
            and article_key(text) == article_key(follow.article)
        ):
            return follow
    resolved = resolve_follow(text, view)
    if isinstance(resolved, Follow):
        return next((f for f in view.follows if f.same(resolved)), None)
    return None


def _unfollow_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    query = command.query or ""
    text, quoted = unquote(query)
    if not quoted and text.casefold() == "all":
        if not view.follows:
            return Reply(replies.FOLLOWING_TITLE, replies.nothing_followed_body(), False)
        return Reply(
            replies.UNFOLLOWED_ALL_TITLE,
            replies.unfollowed_all_body(len(view.follows)),
            False,
            action="follows",
            follows=(),
        )
    found = find_followed(query, view)
    if found is None:
        return Reply(replies.NOT_FOLLOWING_TITLE, replies.not_following_body(text), False, ok=False)
    follows = remove_follow(view.follows, found)
    return Reply(
        replies.unfollowed_title(_label(found, view)),
        replies.unfollowed_body(len(follows)),
        False,
        action="follows",
        follows=follows,
    )


def _following_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    if not view.follows:
        return Reply(replies.FOLLOWING_TITLE, replies.nothing_followed_body(), False)
    clauses = [_clause_of(f, view.clauses) for f in view.follows]
    return Reply(
        replies.FOLLOWING_TITLE,
        replies.following_body(view.follows, clauses, MAX_FOLLOWS),
        False,
    )


def _help_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    if command.query:
        entry = replies.HELP_BY_NAME[command.query]
        return Reply(
            replies.command_help_title(entry.name),
            replies.command_help_body(entry),
            command.share,
        )
    return Reply(replies.HELP_TITLE, replies.help_body(), command.share)


def _status_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    info = view.status
    runtime = (
        replies.status_runtime(
            info.version, info.started_at, info.queued_alerts, info.transports, view.tz, now
        )
        + replies.status_replicas(info.replicas, info.shards)
        if info is not None
        else []
    )
    return Reply(
        replies.STATUS_TITLE,
        replies.status_body(runtime, view.sources, view.tz, view.source_counts),
        command.share,
    )


def _reload_answer(command: Command, view: CommandView, now: datetime) -> Reply:
    return Reply(
        replies.RELOAD_TITLE, replies.reload_started_body(), command.share, action="reload"
    )


_ANSWERS: Mapping[str, Callable[[Command, CommandView, datetime], Reply]] = {
    "next-session": _next_session,
    "sessions": _sessions_answer,
    "clauses": _clauses_answer,
    "clause": _clause_answer,
    "news": _news_answer,
    "feeds": _feeds_answer,
    "ratifications": _ratifications_answer,
    "country": _country_answer,
    "follow": _follow_answer,
    "unfollow": _unfollow_answer,
    "following": _following_answer,
    "help": _help_answer,
    "status": _status_answer,
    "reload": _reload_answer,
}
