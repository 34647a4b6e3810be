"""Every answer, word for word: each command line of ``CASES``, answered from a fixed view at a
fixed instant, against its expected text in ``tests/data/replies/<case>.txt``.

What members read is the product: a change of wording, of a style (bold, code, a link) or of
what an answer says in an unusual situation shows up here as a diff to review. After an
intended change, rewrite the expected files and read the diff before committing:

    TREATY_BOT_WRITE_GOLDEN=1 python -m pytest tests/unit/test_golden_replies.py
"""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.domain.commands import (
    CommandView,
    Reply,
    StatusInfo,
    TreatyView,
    handle,
    parse_command,
    reload_result,
)
from bot.domain.follows import Follow
from bot.domain.home import home_view
from bot.domain.model import (
    Clause,
    NewsRecord,
    SessionEvent,
    SourceHealth,
    SourceId,
    SourceView,
)
from bot.domain.text import Bullets, Paragraph, Rich, Span
from bot.domain.treaty import (
    EntryIntoForceRule,
    Participant,
    Statement,
    TreatySource,
    TreatyStatus,
)

DATA = Path(__file__).resolve().parent.parent / "data"
WRITE = os.environ.get("TREATY_BOT_WRITE_GOLDEN") == "1"

VIENNA = ZoneInfo("Europe/Vienna")
NOW = datetime(2026, 2, 27, 10, 0, tzinfo=UTC)  # Fri 27 Feb 2026, 11:00 CET


def event(key: str, start: datetime, end: datetime | None = None, **kw: object) -> SessionEvent:
    base: dict[str, object] = {
        "key": f"sessions:{key}",
        "source": "sessions",
        "title": key,
        "start": start,
        "end": end,
    }
    base.update(kw)
    return SessionEvent(**base)  # type: ignore[arg-type]


SESSIONS = (
    event(
        "ahc-7",
        datetime(2024, 1, 29, 15, 0, tzinfo=UTC),
        datetime(2024, 2, 9, 23, 0, tzinfo=UTC),
        title="Ad Hoc Committee, concluding session",
        status="concluded",
    ),
    event(
        "ongoing",
        datetime(2026, 2, 26, 8, 0, tzinfo=UTC),
        datetime(2026, 2, 28, 17, 0, tzinfo=UTC),
        title="Regional consultation",
        timezone="Asia/Bangkok",
        location="UNCC, Bangkok",
    ),
    event(
        "cancelled",
        datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        datetime(2026, 3, 1, 17, 0, tzinfo=UTC),
        status="cancelled",
        title="Cancelled briefing",
    ),
    event(
        "ahc-8",
        datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
        datetime(2026, 3, 6, 23, 0, tzinfo=UTC),
        title="Ad Hoc Committee, eighth session",
        timezone="America/New_York",
        location="UN Headquarters, New York",
        url="https://www.unodc.org/ahc8",
        description="Negotiation of the protocol.",
    ),
    event(
        "comments",
        datetime(2026, 3, 20, 23, 0, tzinfo=UTC),
        kind="deadline",
        title="Written comments on the protocol draft",
        status="rescheduled",
    ),
    event(
        "close",
        datetime(2026, 12, 30, 23, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
        kind="deadline",
        all_day=True,
        timezone="Europe/Vienna",
        title="Close of signature",
        status="postponed",
    ),
    event(
        "informal",
        datetime(2026, 4, 14, 8, 0, tzinfo=UTC),
        datetime(2026, 4, 14, 16, 0, tzinfo=UTC),
        kind="informal",
        title="Intersessional consultation",
        timezone="Europe/Vienna",
        location="Vienna International Centre",
    ),
)

CLAUSES = (
    Clause(
        id="art-4",
        article="4",
        title="Offences established in accordance with other conventions",
        status="contested",
        summary="Lets states criminalise any offence of other treaties when committed online.",
        concerns=("scope", "human-rights"),
        links=("https://example.org/analysis", "https://example.org/text"),
        updated=date(2024, 8, 8),
    ),
    Clause(id="art-7-10", article="7-10", title="Core cyber offences", status="agreed"),
    Clause(
        id="art-24",
        article="24",
        title="Conditions and safeguards",
        status="open",
        summary="Safeguards for procedural powers, such as human rights law.",
        concerns=("safeguards",),
    ),
    Clause(id="art-24-bis", article="24 bis", title="Privacy safeguards", status="deferred"),
    Clause(id="art-28-4", article="28(4)", title="Compelled assistance", status="reserved"),
    Clause(id="art-41-43", article="41–43", title="24/7 network", status="adopted"),
)

NEWS = (
    NewsRecord(
        SourceId("hrw"),
        "k3",
        "UN cybercrime treaty threatens privacy",
        "https://www.hrw.org/news/3",
        NOW - timedelta(hours=2),
        NOW - timedelta(hours=1),
        ("cybercrime",),
    ),
    NewsRecord(
        SourceId("eff"),
        "k2",
        "Ad Hoc Committee closes with a vote",
        "https://www.eff.org/2",
        None,
        NOW - timedelta(days=1),
        ("Ad Hoc Committee",),
    ),
    NewsRecord(
        SourceId("hrw"),
        "k1",
        "States sign the convention in Hanoi",
        None,
        NOW - timedelta(days=3),
        NOW - timedelta(days=3),
        ("cybercrime",),
    ),
)

SOURCES = (
    SourceView(
        id="hrw",
        name="Human Rights Watch",
        kind="feed",
        url="https://www.hrw.org/rss/news",
        every=timedelta(minutes=30),
        health=SourceHealth(last_success=NOW - timedelta(minutes=10)),
        last_poll=NOW - timedelta(minutes=10),
        last_outcome="ok",
        next_poll=NOW + timedelta(minutes=20),
        schedule="adaptive",
        interval=timedelta(minutes=30),
    ),
    SourceView(
        id="eff",
        name="EFF Deeplinks",
        kind="feed",
        url="https://www.eff.org/rss",
        every=timedelta(minutes=15),
        health=SourceHealth(
            failures=3,
            last_success=NOW - timedelta(days=1),
            last_error="HTTP 503 Service Unavailable",
            last_error_at=NOW - timedelta(minutes=5),
            failing_since=NOW - timedelta(hours=1),
            alerted=True,
        ),
        last_poll=NOW - timedelta(minutes=5),
        last_outcome="http_error",
        moved_to="https://www.eff.org/rss/updates.xml",
    ),
    SourceView(
        id="unodc-events",
        name="UNODC events",
        kind="calendar",
        url="https://example.org/events.ics",
        every=timedelta(hours=6),
        health=SourceHealth(),
    ),
    SourceView(
        id="depositary",
        name="UN Treaty Collection",
        kind="depositary",
        url="https://treaties.un.org/doc/Publication/MTDSG/Volume%20I/Chapter%20XVIII/XVIII-16.en.xml",
        every=timedelta(hours=12),
        health=SourceHealth(last_success=NOW - timedelta(hours=3)),
        pushed=True,
    ),
)

RULE = EntryIntoForceRule(40, 90)
DEPOSITARY = TreatySource("depositary", "UN Treaty Collection", "https://treaties.un.org/x", ())
STATUS = TreatyStatus(
    participants=(
        Participant("Germany", date(2025, 10, 25)),
        Participant("Viet Nam", date(2025, 10, 25), date(2026, 1, 15), "ratification"),
        Participant("Türkiye", date(2025, 10, 26), date(2026, 2, 2), "accession"),
        Participant("European Union", date(2025, 10, 25), date(2026, 2, 10), "approval"),
        Participant("United States of America", date(2025, 10, 25)),
    ),
    statements=(
        Statement("Viet Nam", "declaration", "In accordance with article 47, paragraph 2 …"),
        Statement("Türkiye", "reservation", "Türkiye does not consider itself bound by 63(2)."),
    ),
)
FOLLOWS = (
    Follow("clause", "art-24", "24"),
    Follow("state", "Germany"),
    Follow("words", "data protection"),
)


def view(**kw: object) -> CommandView:
    base: dict[str, object] = {
        "sessions": SESSIONS,
        "clauses": CLAUSES,
        "news": NEWS,
        "sources": SOURCES,
        "tz": VIENNA,
        "is_admin": True,
        "status": StatusInfo("1.2.3", NOW - timedelta(days=2, hours=3), 4, ("slack", "matrix")),
        "source_names": {s.id: s.name for s in SOURCES},
        "treaty": TreatyView(STATUS, RULE, DEPOSITARY, NOW - timedelta(hours=3)),
        "calendar_url": "https://bot.example.org/calendar.ics",
        "follows": FOLLOWS,
    }
    base.update(kw)
    return CommandView(**base)  # type: ignore[arg-type]


EMPTY = view(
    sessions=(),
    clauses=(),
    news=(),
    sources=(),
    is_admin=False,
    status=None,
    source_names={},
    treaty=None,
    calendar_url=None,
    follows=(),
)
NOT_READ = view(treaty=TreatyView(None, RULE, DEPOSITARY, None, "HTTP 503"))
FAILING = view(treaty=replace(view().treaty, problem="the record lost 5 participants"))  # type: ignore[arg-type]
IN_FORCE = view(
    treaty=TreatyView(
        TreatyStatus(
            tuple(
                Participant(name, date(2025, 10, 25), date(2026, 1, 1), "ratification")
                for name in (f"State {chr(65 + n % 26)}{chr(97 + n // 26)}" for n in range(41))
            )
        ),
        RULE,
        DEPOSITARY,
        NOW,
    )
)
FULL_OF_FOLLOWS = view(follows=tuple(Follow("words", f"topic {n}") for n in range(50)))
JUST_ENDED = view(
    sessions=(
        event(
            "ended",
            NOW - timedelta(hours=3),
            NOW,
            title="Briefing that ends now",
            url="https://e.org/briefing",
        ),
        # started later but ended earlier: the last one is the one that ended last
        event("late", NOW - timedelta(hours=1), NOW - timedelta(minutes=1), title="Late one"),
        event("cancelled", NOW + timedelta(days=1), status="cancelled", title="Cancelled"),
        event("over", NOW - timedelta(days=3), NOW - timedelta(days=2), status="concluded"),
    )
)


def source(n: int, **kw: object) -> SourceView:
    base: dict[str, object] = {
        "id": f"feed-{n:02d}",
        "name": f"Feed {n:02d}",
        "kind": "feed",
        "url": f"https://feeds.example.org/{n}",
        "every": timedelta(minutes=30),
        "health": SourceHealth(last_success=NOW - timedelta(minutes=n)),
    }
    base.update(kw)
    return SourceView(**base)  # type: ignore[arg-type]


#: What is rare: an untitled event, a deadline, an event starting this very minute, a venue
#: zone with an underscore, a long timeline; a clause without title and with six links; a
#: source failing once, one due now, one whose address is not a web address; one signatory
#: and one party, a state with many long declarations and no signature.
EDGE = view(
    sessions=(
        event("now", NOW, NOW + timedelta(hours=3), title="", timezone="Europe/Vienna"),
        event(
            "ba",
            NOW + timedelta(days=1, hours=2),
            NOW + timedelta(days=1, hours=5),
            title="Regional meeting",
            timezone="America/Argentina/Buenos_Aires",
            url="https://e.org/ba",
        ),
        event("due", NOW + timedelta(days=2), kind="deadline", title="Comments due"),
        *(
            event(f"w{n}", NOW + timedelta(weeks=n), NOW + timedelta(weeks=n, hours=1))
            for n in range(1, 31)
        ),
    ),
    clauses=(
        Clause(
            id="art-99",
            article="99",
            title="",
            status="open",
            links=tuple(f"https://example.org/{n}" for n in range(6)),
        ),
        Clause(id="art-41-43", article="41–43", title="24/7 network", status="open"),
        Clause(id="art-43-2", article="43(2)", title="Joint investigations", status="open"),
    ),
    news=(NewsRecord(SourceId("hrw"), "k9", "", "https://www.hrw.org/9", None, NOW, ()),),
    sources=(
        source(1, health=SourceHealth(failures=1, last_error="timeout", last_error_at=NOW)),
        source(2, next_poll=NOW, schedule="sessions"),
        source(3, url="file:local.xml", schedule="adaptive", interval=timedelta(hours=1)),
        source(4, health=SourceHealth()),
    ),
    status=StatusInfo("1.2.3", NOW - timedelta(minutes=5)),
    treaty=TreatyView(
        TreatyStatus(
            (
                Participant("France"),
                Participant("Viet Nam", date(2026, 2, 3), date(2026, 2, 3), "ratification"),
            ),
            tuple(
                Statement("France", kind, f"{kind.capitalize()} {n}: " + "long text " * 40)
                for n, kind in enumerate(("declaration", "reservation", "objection", "declaration"))
            ),
        ),
        RULE,
        DEPOSITARY,
        None,
    ),
)
SETTLED = view(clauses=(Clause("art-7", "7", "Illegal access", "agreed"),))
ENTERED = view(
    sessions=(),
    treaty=TreatyView(
        TreatyStatus(
            tuple(
                Participant(name, date(2025, 10, 25), date(2025, 11, 29), "ratification")
                for name in (f"State {chr(65 + n % 26)}{chr(97 + n // 26)}" for n in range(40))
            )
        ),
        RULE,
        DEPOSITARY,
        NOW,
    ),
)
FAILING_HEALTH = SourceHealth(failures=3, last_error="HTTP 500", last_error_at=NOW)
FORTY = view(sources=(*(source(n) for n in range(39)), source(39, health=FAILING_HEALTH)))
FORTY_ONE = view(sources=tuple(source(n) for n in range(41)))

#: The next event in the venue's zone shown when it differs: Berlin keeps Vienna's hours.
BERLIN_FIRST = view(
    sessions=(
        event(
            "berlin",
            NOW + timedelta(hours=2),
            NOW + timedelta(hours=4),
            title="Berlin briefing",
            timezone="Europe/Berlin",
        ),
        *EDGE.sessions[1:],
    )
)
BUENOS_AIRES_FIRST = view(sessions=EDGE.sessions[1:])
DEADLINE_FIRST = view(sessions=EDGE.sessions[2:])
MANY_CLAUSES = view(
    clauses=tuple(
        Clause(id=f"art-{n}", article=str(n), title=f"Article {n}", status="open")
        for n in range(10, 42)
    )
)
LONG_TITLE = Clause(id="art-5", article="5", title="T" * 81, status="open")
CLOSE_CLAUSES = view(
    clauses=(
        *(
            Clause(id=f"art-{n}", article=str(n), title=f"Article {n}", status="open")
            for n in (11, 12, 13, 14)
        ),
        Clause(id="art-7-9", article="7—9", title="With an em dash", status="open"),
        LONG_TITLE,
    ),
    follows=(Follow("clause", "art-24", "24"),),
)
THREE_STATEMENTS = view(
    treaty=TreatyView(
        TreatyStatus(
            (Participant("Germany", date(2025, 10, 25)),),
            tuple(Statement("Germany", "declaration", f"Declaration {n}.") for n in range(3)),
        ),
        RULE,
        DEPOSITARY,
        NOW,
    )
)
SOURCE_EDGES = view(
    sources=(
        source(5, url="http://plain.example.org/feed"),
        source(6, next_poll=NOW + timedelta(seconds=1)),
        source(
            7,
            health=SourceHealth(
                last_success=NOW, last_error="timeout", last_error_at=NOW - timedelta(hours=1)
            ),
        ),
    )
)


#: case name -> (view, command line)
CASES: dict[str, tuple[CommandView, str]] = {
    "help": (view(), "help"),
    "help-sessions": (view(), "help sessions"),
    "help-follow": (view(), "help follow"),
    "help-unknown": (view(), "help banana"),
    "help-not-admin": (EMPTY, "help"),
    "next-session": (view(), "next-session"),
    "next-session-shared": (view(), "next-session share"),
    "next-session-nothing-ahead": (view(sessions=SESSIONS[:1]), "next-session"),
    "next-session-none": (EMPTY, "next-session"),
    "sessions": (view(), "sessions"),
    "sessions-2": (view(), "sessions 2"),
    "sessions-none": (EMPTY, "sessions"),
    "sessions-0": (view(), "sessions 0"),
    "sessions-word": (view(), "sessions many"),
    "clauses": (view(), "clauses"),
    "clauses-contested": (view(), "clauses contested"),
    "clauses-word": (view(), "clauses privacy"),
    "clauses-no-match": (view(), "clauses banana"),
    "clauses-none": (EMPTY, "clauses"),
    "clause-4": (view(), "clause 4"),
    "clause-article": (view(), "clause art. 28"),
    "clause-several": (view(), "clause 24"),
    "clause-unknown": (view(), "clause 99"),
    "clause-missing": (view(), "clause"),
    "news": (view(), "news"),
    "news-2-word": (view(), "news 2 privacy"),
    "news-no-match": (view(), "news banana"),
    "news-none": (EMPTY, "news"),
    "feeds": (view(), "feeds"),
    "feeds-none": (EMPTY, "feeds"),
    "ratifications": (view(), "ratifications"),
    "ratifications-not-read": (NOT_READ, "ratifications"),
    "ratifications-failing": (FAILING, "ratifications"),
    "ratifications-in-force": (IN_FORCE, "ratifications"),
    "ratifications-no-depositary": (EMPTY, "ratifications"),
    "country-viet-nam": (view(), "country viet nam"),
    "country-turkey": (view(), "country turkey"),
    "country-us": (view(), "country US"),
    "country-unknown": (view(), "country germny"),
    "country-not-read": (NOT_READ, "country germany"),
    "country-missing": (view(), "country"),
    "follow-clause": (view(follows=()), "follow art-24"),
    "follow-state": (view(follows=()), "follow turkey"),
    "follow-words": (view(follows=()), 'follow "data protection"'),
    "follow-already": (view(), "follow art-24"),
    "follow-too-many": (FULL_OF_FOLLOWS, "follow privacy"),
    "follow-several-clauses": (view(follows=()), "follow 24"),
    "follow-unknown-clause": (view(follows=()), "follow art. 99"),
    "follow-missing": (view(), "follow"),
    "unfollow-clause": (view(), "unfollow art-24"),
    "unfollow-all": (view(), "unfollow all"),
    "unfollow-not-followed": (view(), "unfollow art-4"),
    "unfollow-nothing-followed": (view(follows=()), "unfollow art-4"),
    "following": (view(), "following"),
    "following-nothing": (view(follows=()), "following"),
    "status": (view(), "status"),
    "status-not-admin": (EMPTY, "status"),
    "reload": (view(), "reload"),
    "unknown": (view(), "nxt-session"),
    "unknown-close-to-an-alias": (view(), "folow art-24"),
    "sessions-shared": (view(), "sessions share"),
    "sessions-too-many": (view(), "sessions 26"),
    "sessions-two-numbers": (view(), "sessions 1 2"),
    "sessions-just-ended": (JUST_ENDED, "sessions"),
    "next-session-just-ended": (JUST_ENDED, "next-session"),
    "feeds-with-words": (view(), "feeds please"),
    "clauses-all": (view(), "clauses all shared"),
    "clauses-all-shared": (view(), "clauses all share"),
    "clause-range-start": (view(), "clause 7"),
    "clause-range-end": (view(), "clause art. 10 share"),
    "clause-close": (view(), "clause art-25"),
    "news-too-many": (view(), "news 21"),
    "news-2-word-shared": (view(), "share news 2 privacy"),
    "help-shared": (view(), "help share"),
    "help-clause-shared": (view(), "/treaty help clause share"),
    "help-two-words": (view(), "help clause news"),
    "country-shared": (view(), "country viet nam share"),
    "follow-shared": (view(follows=()), "follow germany share"),
    "follow-quoted-share": (view(follows=()), 'follow "privacy share" share'),
    "follow-quoted-words-share": (view(follows=()), "follow “data protection” share"),
    "follow-unclosed-quote": (view(follows=()), "follow 'open quote share"),
    "follow-one-quoted-word": (view(follows=()), "follow 'share'"),
    "follow-empty-quotes": (view(follows=()), 'follow ""'),
    "follow-only-share": (view(follows=()), "!treaty follow share"),
    "follow-too-long": (view(follows=()), "follow " + "w" * 101),
    "follow-longest": (view(follows=()), "follow " + "w" * 100),
    "follow-germany-not-read": (NOT_READ, "follow germany"),
    "unfollow-article": (view(), "unfollow 24"),
    "unfollow-other-name": (view(), "unfollow deutschland"),
    "unfollow-state-other-name": (view(follows=(Follow("state", "Türkiye"),)), "unfollow turkey"),
    "unfollow-quoted": (view(), 'unfollow "data protection"'),
    "unfollow-quoted-unknown": (view(), 'unfollow "art-24"'),
    "unfollow-key": (view(), "unfollow clause:art-24"),
    "unfollow-resolved": (view(), "unfollow conditions and safeguards"),
    "unfollow-all-shared": (view(), "unfollow all share"),
    "unfollow-all-nothing": (view(follows=()), "unfollow all"),
    "reload-shared": (view(), "reload share"),
    "edge-next-session": (EDGE, "next-session"),
    "edge-sessions": (EDGE, "sessions"),
    "edge-sessions-most": (EDGE, "sessions 25"),
    "edge-clause-untitled": (EDGE, "clause 99"),
    "edge-clauses": (EDGE, "clauses"),
    "edge-several-clauses": (EDGE, "clause 43"),
    "edge-follow-several-clauses": (view(clauses=EDGE.clauses, follows=()), "follow 43"),
    "edge-follow-untitled": (view(clauses=EDGE.clauses, follows=()), "follow 99"),
    "edge-following": (
        view(
            clauses=EDGE.clauses,
            follows=(Follow("clause", "art-99", "99"), Follow("clause", "gone")),
        ),
        "following",
    ),
    "edge-unknown-follow-clause": (view(clauses=EDGE.clauses, follows=()), "follow art 42"),
    "edge-news": (EDGE, "news"),
    "edge-feeds": (EDGE, "feeds"),
    "edge-status": (EDGE, "status"),
    "edge-status-no-sources": (view(sources=(), status=StatusInfo("1.2.3", NOW)), "status"),
    "edge-ratifications": (EDGE, "ratifications"),
    "edge-country": (EDGE, "country france"),
    "edge-help-status": (EDGE, "help status"),
    "settled-clauses": (SETTLED, "clauses"),
    "settled-clauses-open": (SETTLED, "clauses open"),
    "entered-next-session": (ENTERED, "next-session"),
    "not-read-next-session": (view(sessions=(), treaty=NOT_READ.treaty), "next-session"),
    "feeds-forty": (FORTY, "feeds"),
    "feeds-forty-one": (FORTY_ONE, "feeds"),
    "next-session-berlin": (BERLIN_FIRST, "next-session"),
    "next-session-buenos-aires": (BUENOS_AIRES_FIRST, "next-session"),
    "next-session-deadline": (DEADLINE_FIRST, "next-session"),
    "clauses-many": (MANY_CLAUSES, "clauses"),
    "clause-close-many": (CLOSE_CLAUSES, "clause 19"),
    "clause-em-dash": (CLOSE_CLAUSES, "clause 7—9"),
    "clause-spaced": (CLOSE_CLAUSES, "clause 7 - 9"),
    "follow-long-title": (CLOSE_CLAUSES, "follow art-5"),
    "follow-unknown-clause-two-close": (CLOSE_CLAUSES, "follow art 19"),
    "unfollow-clause-gone": (CLOSE_CLAUSES, "unfollow 24"),
    "entered-ratifications": (ENTERED, "ratifications"),
    "in-force-next-session": (view(sessions=(), treaty=IN_FORCE.treaty), "next-session"),
    "country-three-statements": (THREE_STATEMENTS, "country germany"),
    "feeds-source-edges": (SOURCE_EDGES, "feeds"),
    "status-source-edges": (SOURCE_EDGES, "status"),
    "follow-lone-quote": (view(follows=()), 'follow " share " x'),
    "follow-empty-quote-token": (view(follows=()), 'follow "" share x'),
    "follow-quoted-word-then-share": (view(follows=()), 'follow "ab" share'),
    "follow-share-first": (view(follows=()), "follow share privacy"),
    "unfollow-quoted-share": (
        view(follows=(Follow("words", "a share b"),)),
        'unfollow "a share b" share',
    ),
    "unfollow-quoted-not-followed": (view(), 'unfollow "nothing here"'),
}


def marked(spans: tuple[Span, ...]) -> str:
    out: list[str] = []
    for span in spans:
        text = {"bold": "*{}*", "italic": "_{}_", "code": "`{}`"}.get(span.style, "{}")
        text = text.format(span.text)
        out.append(f"[{text}]({span.href})" if span.href else text)
    return "".join(out)


def rendered(blocks: Rich) -> list[str]:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            lines.append(marked(block.spans))
        else:
            assert isinstance(block, Bullets)
            lines.extend(f"• {marked(item)}" for item in block.items)
    return lines


def reply_text(line: str, reply: Reply) -> str:
    follows = ", ".join(f.key for f in reply.follows) if reply.follows is not None else "-"
    head = [
        f"parsed: {parse_command(line)!r}",
        f"title: {reply.title}",
        f"share={reply.share} ok={reply.ok} action={reply.action} direct={reply.direct}",
        f"follows: {follows}",
        "---",
    ]
    return "\n".join(head + rendered(reply.body)) + "\n"


def check(name: str, actual: str, folder: str = "replies", suffix: str = ".txt") -> None:
    path = DATA / folder / f"{name}{suffix}"
    if WRITE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
    assert path.exists(), f"{path} is missing: write it with TREATY_BOT_WRITE_GOLDEN=1"
    assert actual == path.read_text(), f"{name}: the answer differs from {path}"


@pytest.mark.parametrize("name", list(CASES))
def test_answer_is_word_for_word(name: str) -> None:
    command_view, line = CASES[name]
    check(name, reply_text(line, handle(line, command_view, NOW)))


RELOADS: dict[str, tuple[list[str], bool | None]] = {
    "reloaded": ([], None),
    "reloaded-shared": ([], True),
    "reload-problems": (
        ["bot.yaml:3: channels: " + "far too long " * 30, "feeds.yaml:7: " + "x" * 287],
        False,
    ),
    "reload-many-problems": ([f"feeds.yaml:{n}: feeds[{n}].url: missing" for n in range(23)], True),
}


@pytest.mark.parametrize("name", list(RELOADS))
def test_reload_answer_is_word_for_word(name: str) -> None:
    problems, share = RELOADS[name]
    reply = reload_result(problems) if share is None else reload_result(problems, share=share)
    check(name, reply_text("reload", reply))


@pytest.mark.parametrize("follows", [FOLLOWS, ()], ids=["follows", "nothing-followed"])
def test_home_page_is_word_for_word(follows: tuple[Follow, ...]) -> None:
    page = home_view(SESSIONS, follows, CLAUSES, VIENNA, NOW)
    lines = [
        f"title: {page.title}",
        *rendered(page.intro),
        f"## {page.dates_title}",
        *(marked(line) for line in page.dates),
        *rendered(page.no_dates),
        f"## {page.follows_title}",
        *(f"{marked(f.line)} [{page.unfollow_label}: {f.key}]" for f in page.follows),
        *rendered(page.no_follows),
    ]
    check(f"home-{'follows' if follows else 'nothing-followed'}", "\n".join(lines) + "\n")
