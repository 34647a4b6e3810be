"""Command edges: typos that still get a suggestion, clauses named by id or by a range typed
with an em dash, empty quotes, a venue in UTC, and plain text spans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.commands import CommandView, UsageError, handle, parse_command, unquote
from bot.domain.follows import Follow
from bot.domain.model import Clause, SessionEvent
from bot.domain.text import Paragraph, Rich, Span, plain, render_plain

VIENNA = ZoneInfo("Europe/Vienna")
NOW = datetime(2026, 2, 27, 10, 0, tzinfo=UTC)  # Fri 27 Feb 2026, 11:00 CET

CLAUSES = (
    Clause(id="core-offences", article="7-10", title="Core cyber offences", status="agreed"),
    Clause(id="art-5", article="5", title="Respect for human rights", status="open"),
    Clause(id="protocol-art-5", article="5", title="Protocol: scope", status="open"),
)


def view(
    *,
    sessions: tuple[SessionEvent, ...] = (),
    follows: tuple[Follow, ...] = (),
) -> CommandView:
    return CommandView(
        sessions=sessions,
        clauses=CLAUSES,
        news=(),
        sources=(),
        tz=VIENNA,
        follows=follows,
    )


def lines(body: Rich) -> list[str]:
    return render_plain(body).splitlines()


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [
        # an underscore reads as a hyphen, in a typo as in a name
        ("n_session", "next-session"),
        ("latest_news", "news"),
        # loose typos and abbreviations still get the closest command
        ("ratify", "ratifications"),
        ("ratif", "ratifications"),
        ("cmd", "help"),
    ],
)
def test_unknown_command_suggests_the_closest_one(typed: str, suggested: str) -> None:
    parsed = parse_command(typed)
    assert isinstance(parsed, UsageError)
    assert parsed.suggestion == suggested
    assert f"`{suggested}`" in parsed.message


def test_a_clause_named_by_its_id_is_that_clause_even_when_another_shares_its_article() -> None:
    by_id = handle("clause art-5", view(), NOW)
    assert by_id.ok
    assert by_id.title == "Art. 5 — Respect for human rights"
    by_article = handle("clause 5", view(), NOW)
    assert by_article.title == "Several clauses match"
    assert "clause protocol-art-5" in render_plain(by_article.body)


@pytest.mark.parametrize("typed", ["7—10", "7–10", "7-10", "art. 7 — 10"])
def test_a_range_typed_with_any_dash_finds_its_clause(typed: str) -> None:
    reply = handle(f"clause {typed}", view(), NOW)
    assert reply.ok
    assert reply.title == "Art. 7-10 — Core cyber offences"


@pytest.mark.parametrize("text", ['""', "“”", "''", '"  "'])
def test_empty_quotes_are_quotes_around_nothing(text: str) -> None:
    assert unquote(text) == ("", True)


def test_unfollow_of_empty_quotes_echoes_nothing_quoted() -> None:
    reply = handle('unfollow ""', view(follows=(Follow("words", "privacy"),)), NOW)
    assert not reply.ok
    assert reply.title == "Not followed"
    assert lines(reply.body)[0] == "You do not follow “”."


def test_a_venue_in_utc_is_labelled_utc() -> None:
    briefing = SessionEvent(
        key="sessions:utc",
        source="sessions",
        title="Online briefing",
        start=NOW + timedelta(days=1),
        end=NOW + timedelta(days=1, hours=2),
        timezone="UTC",
    )
    reply = handle("next-session", view(sessions=(briefing,)), NOW)
    assert reply.title == "Next session: Online briefing"
    assert "Venue time (UTC): Sat 28 Feb 2026, 10:00–12:00 UTC" in lines(reply.body)


def test_plain_text_is_one_unstyled_unlinked_span() -> None:
    span = plain("<!channel> & @room")
    assert span == Span("<!channel> & @room", "plain", None)
    assert render_plain((Paragraph((span,)),)) == "<!channel> & @room"
