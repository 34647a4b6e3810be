"""Every alert's words (``bot/domain/messages.py``), word for word: each case of ``CASES``
against its expected text in ``tests/data/messages/<case>.txt``, rendered as
``test_golden_replies`` renders answers (bold, italic, code and links marked).

After an intended change of wording, rewrite the expected files and read the diff:

    TREATY_BOT_WRITE_GOLDEN=1 python -m pytest tests/unit/test_golden_messages.py
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain import messages as m
from bot.domain.model import Alert, AlertId, ChannelName, Clause, FeedItem, SessionEvent
from bot.domain.text import Bullets, Rich, Span, link, para
from bot.domain.treaty import Standing, Statement, TreatyAction
from tests.unit.test_golden_replies import check, marked, rendered

VIENNA = ZoneInfo("Europe/Vienna")
NOW = datetime(2026, 2, 27, 10, 0, tzinfo=UTC)
LONG = "word " * 100  # longer than any title or summary limit

ITEM = FeedItem(
    key="k1",
    title="States sign the convention in Hanoi",
    link="https://e.org/1",
    published=NOW - timedelta(hours=3),
    summary="Sixty-five states signed on the first day. " * 20,
)
BARE = FeedItem(key="k2", title="", link=None, published=None, summary="")
SESSION = SessionEvent(
    key="sessions:ahc-8",
    source="sessions",
    title="Ad Hoc Committee, eighth session",
    start=datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
    end=datetime(2026, 3, 6, 23, 0, tzinfo=UTC),
    timezone="America/New_York",
    location="UN Headquarters, New York",
    url="https://www.unodc.org/ahc8",
)
MOVED = SessionEvent(
    key="sessions:ahc-8",
    source="sessions",
    title="Ad Hoc Committee, eighth session",
    start=datetime(2026, 3, 9, 15, 0, tzinfo=UTC),
    end=datetime(2026, 3, 13, 23, 0, tzinfo=UTC),
    timezone="America/New_York",
    location="Palais des Nations, Geneva",
    status="rescheduled",
)
DEADLINE = SessionEvent(
    key="sessions:close",
    source="sessions",
    title="Close of signature",
    start=datetime(2026, 12, 30, 23, 0, tzinfo=UTC),
    end=datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
    kind="deadline",
    all_day=True,
    timezone="Europe/Vienna",
    status="tentative",
)
ONGOING = SessionEvent(
    key="cal:x",
    source="cal",
    title="Informal consultation",
    start=NOW - timedelta(hours=1),
    end=NOW + timedelta(hours=2),
    kind="informal",
    timezone="Europe/Vienna",
)
ART4 = Clause(
    id="art-4",
    article="4",
    title="Offences established in accordance with other conventions",
    status="contested",
    summary="Lets states criminalise any offence of other treaties when committed online.",
    links=("https://example.org/analysis",),
)
BARE_CLAUSE = Clause(id="art-9", article="9", title="Other offences", status="open")
STANDING = Standing(signatories=65, counted=12, needed=40, in_force=None)
ONE = Standing(signatories=1, counted=40, needed=40, in_force=date(2027, 3, 1))
DECLARATION = Statement("Viet Nam", "declaration", "In accordance with article 47 … " * 30)
OBJECTION = Statement("Germany", "objection", "Germany objects to the reservation of X.")
NOTIFICATION = Statement("France", "notification", "France notifies the Secretary-General.")


def alert(kind: str, title: str, body: Rich = (), url: str | None = "https://e.org/a") -> Alert:
    return Alert(
        kind, AlertId(f"{kind}:x"), (ChannelName("alerts"),), "x", title, url, "", NOW, body
    )  # type: ignore[arg-type]


def text(value: str | Rich | tuple[str, Rich] | list[tuple[Span, ...]]) -> str:
    if isinstance(value, str):
        return value + "\n"
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        title, body = value
        return f"title: {title}\n---\n" + "\n".join(rendered(body)) + "\n"  # type: ignore[arg-type]
    if isinstance(value, list):
        return "\n".join(marked(line) for line in value) + "\n"
    return "\n".join(rendered(value)) + "\n"  # type: ignore[arg-type]


# computed in each case, not when the module is imported: the mutation test attributes a
# call to the test that makes it
def group() -> list[tuple[Span, ...]]:
    return [m.news_group_entry(ITEM, VIENNA), m.news_group_entry(BARE, VIENNA)]


def burst() -> Alert:
    return alert("news", "HRW: 2 new items", (para("x"), Bullets(tuple(group()))))


CASES: dict[str, Callable[[], str | Rich | tuple[str, Rich] | list[tuple[Span, ...]]]] = {
    "news": lambda: m.news_body("Human Rights Watch", ITEM, ("cybercrime", "Hanoi"), VIENNA),
    "news-bare": lambda: m.news_body("HRW", BARE, (), VIENNA),
    "news-long-title": lambda: m.news_body("HRW", FeedItem("k", LONG, None, "", None), (), VIENNA),
    "news-group": lambda: (
        m.news_group_title("HRW", 2, 1, 1),
        m.news_group_body("HRW", group(), total=2, first=1, part=1, parts=1),
    ),
    "news-group-part": lambda: (
        m.news_group_title("HRW", 45, 2, 3),
        m.news_group_body("HRW", group(), total=45, first=21, part=2, parts=3),
    ),
    "reissue-repeated-and-older": lambda: (
        m.news_reissue_title("HRW", 5),
        m.news_reissue_body("HRW", repeated=3, older=2, last_success=NOW, posted=1, tz=VIENNA),
    ),
    "reissue-one-repeated": lambda: (
        m.news_reissue_title("HRW", 1),
        m.news_reissue_body("HRW", repeated=1, older=0, last_success=None, posted=2, tz=VIENNA),
    ),
    "reissue-repeated": lambda: m.news_reissue_body(
        "HRW", repeated=4, older=0, last_success=None, posted=0, tz=VIENNA
    ),
    "reissue-one-older": lambda: m.news_reissue_body(
        "HRW", repeated=0, older=1, last_success=NOW, posted=0, tz=VIENNA
    ),
    "reissue-older": lambda: m.news_reissue_body(
        "HRW", repeated=0, older=7, last_success=None, posted=0, tz=VIENNA
    ),
    "failing-feed": lambda: (
        m.health_failing_title("feed", "HRW"),
        m.health_failing_body("feed", "HRW", "hrw", 3, "HTTP 503", NOW - timedelta(days=1)),
    ),
    "failing-calendar-never-polled": lambda: (
        m.health_failing_title("calendar", "UNODC events"),
        m.health_failing_body("calendar", "UNODC events", "unodc", 5, "timeout", None),
    ),
    "failing-depositary": lambda: m.health_failing_title("depositary", "UNTC"),
    "recovered": lambda: (
        m.health_recovered_title("calendar", "UNODC events"),
        m.health_recovered_body("calendar", "UNODC events", "unodc", NOW - timedelta(hours=5), NOW),
    ),
    "recovered-depositary": lambda: m.health_recovered_title("depositary", "UNTC"),
    "reminder-14-days": lambda: (
        m.reminder_title(SESSION, timedelta(days=14), SESSION.start - timedelta(days=14)),
        m.reminder_body(
            SESSION,
            timedelta(days=14),
            False,
            SESSION.start - timedelta(days=14),
            VIENNA,
            calendar_url="https://bot.example.org/calendar.ics",
        ),
    ),
    "reminder-now-late": lambda: (
        m.reminder_title(DEADLINE, timedelta(0), DEADLINE.start + timedelta(minutes=20)),
        m.reminder_body(
            DEADLINE, timedelta(0), True, DEADLINE.start + timedelta(minutes=20), VIENNA
        ),
    ),
    "reminder-ongoing": lambda: (
        m.reminder_title(ONGOING, timedelta(hours=1), NOW),
        m.reminder_body(ONGOING, timedelta(hours=1), False, NOW, VIENNA),
    ),
    "reminder-meeting-ahead": lambda: m.reminder_title(
        ONGOING, timedelta(hours=2), NOW - timedelta(hours=3)
    ),
    "change-added": lambda: (
        m.session_change_title("added", SESSION),
        m.session_change_body("added", None, SESSION, VIENNA, NOW),
    ),
    "change-added-without-url": lambda: m.session_change_body("added", None, MOVED, VIENNA, NOW),
    "change-rescheduled": lambda: (
        m.session_change_title("rescheduled", MOVED),
        m.session_change_body("rescheduled", SESSION, MOVED, VIENNA, NOW),
    ),
    "change-moved": lambda: (
        m.session_change_title("moved", MOVED),
        m.session_change_body("moved", SESSION, MOVED, VIENNA, NOW),
    ),
    "change-moved-from-nowhere": lambda: m.session_change_body(
        "moved", DEADLINE, SESSION, VIENNA, NOW
    ),
    "change-cancelled": lambda: (
        m.session_change_title("cancelled", DEADLINE),
        m.session_change_body("cancelled", SESSION, DEADLINE, VIENNA, NOW),
    ),
    "change-status": lambda: (
        m.session_change_title("status", ONGOING),
        m.session_change_body("status", SESSION, MOVED, VIENNA, NOW),
    ),
    "change-removed": lambda: (
        m.session_change_title("removed", DEADLINE),
        m.session_change_body("removed", DEADLINE, None, VIENNA, NOW),
    ),
    "change-other": lambda: (
        m.session_change_title("renamed", SESSION),
        m.session_change_body("renamed", SESSION, MOVED, VIENNA, NOW),
    ),
    "clause-changed": lambda: (
        m.clause_change_title(ART4, "open"),
        m.clause_change_body(ART4, "open"),
    ),
    "clause-tracked": lambda: (
        m.clause_change_title(BARE_CLAUSE, None),
        m.clause_change_body(BARE_CLAUSE, None),
    ),
    "config-problems": lambda: (
        m.config_problems_title(2),
        m.config_problems_body("config/", ["bot.yaml:3: a: bad", "feeds.yaml:7: b: worse"]),
    ),
    "config-problem-and-more": lambda: (
        m.config_problems_title(1),
        m.config_problems_body("config/", [f"feeds.yaml:{n}: x" for n in range(23)]),
    ),
    "delivery-failed": lambda: (
        m.delivery_failed_title("slack", "alerts"),
        m.delivery_failed_body("slack", "alerts", "channel_not_found"),
    ),
    "apology": lambda: m.apology("ref-1234"),
    "transport-problem": lambda: (
        m.transport_problem_title("matrix"),
        m.transport_problem_body("matrix", "cannot reach the homeserver"),
    ),
    "treaty-signature": lambda: (
        m.treaty_action_title(TreatyAction("Germany", "signature", date(2025, 10, 25))),
        m.treaty_action_body(
            TreatyAction("Germany", "signature", date(2025, 10, 25)), STANDING, "UNTC", "https://t"
        ),
    ),
    "treaty-ratification-in-force": lambda: (
        m.treaty_action_title(TreatyAction("Viet Nam", "ratification", date(2026, 1, 15))),
        m.treaty_action_body(
            TreatyAction("Viet Nam", "ratification", date(2026, 1, 15)), ONE, "UNTC", None
        ),
    ),
    "treaty-accession-undated": lambda: (
        m.treaty_action_title(TreatyAction("Türkiye", "accession", None)),
        m.treaty_action_body(TreatyAction("Türkiye", "accession", None), STANDING, "UNTC", None),
    ),
    "treaty-other-consents": lambda: "\n".join(
        m.treaty_action_title(TreatyAction("X", kind, None))  # type: ignore[arg-type]
        for kind in ("acceptance", "approval", "succession")
    ),
    "treaty-declaration": lambda: (
        m.treaty_action_title(TreatyAction("Viet Nam", "statement-made", None, DECLARATION)),
        m.treaty_action_body(
            TreatyAction("Viet Nam", "statement-made", None, DECLARATION), STANDING, "UNTC", None
        ),
    ),
    "treaty-withdrawn-objection": lambda: (
        m.treaty_action_title(TreatyAction("Germany", "statement-withdrawn", None, OBJECTION)),
        m.treaty_action_body(
            TreatyAction("Germany", "statement-withdrawn", None, OBJECTION), ONE, "UNTC", None
        ),
    ),
    "treaty-statement-words": lambda: (
        "\n".join(
            m.statement_word(kind)
            for kind in ("declaration", "reservation", "objection", "notification", "")
        )
        + "\n"
        + m.treaty_action_title(TreatyAction("France", "statement-made", None, NOTIFICATION))
    ),
    "entry-into-force": lambda: "\n".join(
        (
            m.entry_into_force_description(40, "Viet Nam", date(2026, 12, 1)),
            m.entry_into_force_description(40, "Viet Nam", None),
            m.first_conference_description(date(2027, 3, 1)),
            m.day(date(2025, 10, 5)),
        )
    ),
    "digest": lambda: (
        m.grouped_title("digest", 2, 1, 1),
        m.grouped_body(
            "digest",
            [
                *m.held_lines(alert("clause-change", "Clause open → contested"), VIENNA),
                *m.held_lines(alert("treaty-action", LONG, url=None), VIENNA),
            ],
            1,
            1,
            2,
        ),
    ),
    "quiet-hours-parts": lambda: (
        m.grouped_title("quiet", 1, 2, 3),
        m.grouped_body(
            "quiet",
            [
                *m.held_lines(burst(), VIENNA),
                *m.held_lines(alert("session-reminder", ""), VIENNA),
                *m.held_lines(alert("source-health", "Feed HRW is failing"), VIENNA),
                *m.held_lines(alert("session-change", "Session moved"), VIENNA),
                *m.held_lines(alert("other-kind", "Something"), VIENNA),
            ],
            2,
            3,
            1,
        ),
    ),
    "held-one": lambda: m.grouped_title("quiet", 5, 1, 1),
    "digest-one": lambda: (
        m.grouped_title("digest", 1, 1, 2),
        m.grouped_body("digest", m.held_lines(alert("news", "x" * 300, url=None), VIENNA), 1, 2, 1),
    ),
    "config-problems-one-more": lambda: m.config_problems_body(
        "config/", [f"feeds.yaml:{n}: x" for n in range(21)]
    ),
    "reminder-title-with-colons": lambda: m.reminder_body(
        SessionEvent("s:x", "s", "AHC: closing: vote", NOW + timedelta(days=2)),
        timedelta(days=2),
        False,
        NOW,
        VIENNA,
    ),
    "countdown-edges": lambda: "\n".join(
        (
            m.countdown(SessionEvent("s:a", "s", "A", NOW, NOW + timedelta(hours=1)), NOW),
            m.countdown(SessionEvent("s:b", "s", "B", NOW - timedelta(hours=1), NOW), NOW),
            m.countdown(SessionEvent("s:c", "s", "C", NOW), NOW),
        )
    ),
    "subscribe": lambda: (m.subscribe_paragraph("https://bot.example.org/calendar.ics"),),
    "countdown": lambda: "\n".join(
        (
            m.countdown(SESSION, NOW),
            m.countdown(ONGOING, NOW),
            m.countdown(ONGOING, NOW + timedelta(hours=3)),
            m.clause_label(ART4),
        )
    ),
    "link-only": lambda: (para(link("x", None)),),
}


@pytest.mark.parametrize("name", list(CASES))
def test_message_is_word_for_word(name: str) -> None:
    check(name, text(CASES[name]()), "messages")
