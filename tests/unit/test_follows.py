"""Personal follows: the commands (parsing, resolution, the limit), matching, outbox rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.clock import FixedClock
from bot.delivery import Outbox
from bot.domain.commands import CommandView, Reply, TreatyView, handle, parse_command
from bot.domain.follows import (
    MAX_FOLLOWS,
    Follow,
    Person,
    dm_channel,
    dm_user,
    followers,
    matches,
)
from bot.domain.home import home_view
from bot.domain.model import Alert, AlertId, AlertKind, ChannelName, Clause, SessionEvent
from bot.domain.text import render_plain, render_spans_plain
from bot.domain.treaty import EntryIntoForceRule, Participant, TreatySource, TreatyStatus
from bot.store.base import Changes
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore
from tests.unit.test_delivery import FakeTransport

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
UTC_ZONE = ZoneInfo("UTC")
CLAUSES = (
    Clause("art-24", "24", "Conditions and safeguards", "contested"),
    Clause("art-4", "4", "Offences under other conventions", "open"),
    Clause("art-45-46", "45-46", "Joint investigations", "agreed"),
)
SOURCE = TreatySource(
    "depositary", "UN depositary", "https://treaties.un.org/x", (ChannelName("alerts"),)
)
STATUS = TreatyStatus(
    (
        Participant("Germany", date(2025, 10, 25)),
        Participant("United States of America", date(2025, 10, 25)),
        Participant("Republic of Korea", date(2025, 10, 25)),
        Participant("Democratic People's Republic of Korea", None),
        Participant("Türkiye", None),
    )
)


def view(
    follows: tuple[Follow, ...] = (),
    *,
    depositary: bool = True,
    clauses: tuple[Clause, ...] = CLAUSES,
) -> CommandView:
    treaty = TreatyView(STATUS, EntryIntoForceRule(40, 90), SOURCE, NOW) if depositary else None
    return CommandView((), clauses, (), (), UTC_ZONE, treaty=treaty, follows=follows)


def ask(text: str, v: CommandView | None = None) -> Reply:
    return handle(text, v or view(), NOW)


def followed(text: str, v: CommandView | None = None) -> Follow:
    reply = ask(text, v)
    assert reply.action == "follows" and reply.follows, render_plain(reply.body)
    return reply.follows[-1]


def alert(
    kind: AlertKind = "news",
    title: str = "",
    text: str = "",
    *,
    source: str = "hrw",
    subjects: tuple[str, ...] = (),
    alert_id: str = "news:hrw:1",
) -> Alert:
    return Alert(
        kind,
        AlertId(alert_id),
        (ChannelName("alerts"),),
        source,
        title,
        None,
        text,
        NOW,
        subjects=subjects,
    )


# ----------------------------------------------------------------------------- parsing


def test_the_three_commands_parse_and_follow_needs_something() -> None:
    assert parse_command("follow art-24").query == "art-24"  # type: ignore[union-attr]
    assert parse_command("!treaty unfollow all").query == "all"  # type: ignore[union-attr]
    assert parse_command("following").name == "following"  # type: ignore[union-attr]
    assert parse_command("follows").name == "following"  # type: ignore[union-attr]
    for text in ("follow", "unfollow", "follow share"):
        reply = ask(text)
        assert not reply.ok and "needs a clause, a state or some words" in render_plain(reply.body)
    assert not ask("following everything").ok


def test_share_outside_quotes_is_ignored_inside_quotes_it_is_a_word() -> None:
    assert followed("follow privacy share") == Follow("words", "privacy")
    assert followed('follow "market share"') == Follow("words", "market share")
    assert followed("follow “market share” share") == Follow("words", "market share")


def test_every_answer_is_private_even_with_share() -> None:
    for text in ("follow art-24 share", "share following", "unfollow all share", "follow 99 share"):
        reply = ask(text, view((Follow("words", "x"),)))
        assert reply.share is False and reply.direct is True


# ----------------------------------------------------------------------------- resolution


@pytest.mark.parametrize(
    "text", ["follow art-24", "follow 24", "follow Art. 24", "follow article 24"]
)
def test_a_clause_is_found_by_id_or_article(text: str) -> None:
    assert followed(text) == Follow("clause", "art-24", "24")


def test_an_article_within_a_range_finds_its_clause_and_an_unknown_one_is_refused() -> None:
    assert followed("follow 46") == Follow("clause", "art-45-46", "45-46")
    refused = ask("follow art. 99")
    assert refused.action is None and not refused.ok
    assert 'follow "art. 99"' in render_plain(refused.body)  # how to follow the words instead
    assert followed('follow "art. 99"') == Follow("words", "art. 99")


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("follow germany", "Germany"),
        ("follow GERM", "Germany"),
        ("follow US", "United States of America"),
        ("follow turkey", "Türkiye"),
        ("follow South Korea", "Republic of Korea"),
    ],
)
def test_a_state_is_found_as_country_finds_it(text: str, state: str) -> None:
    assert followed(text) == Follow("state", state)


def test_without_the_depositary_a_name_is_words_unless_it_is_a_known_other_name() -> None:
    assert followed("follow germany", view(depositary=False)) == Follow("words", "germany")
    usa = followed("follow USA", view(depositary=False))
    assert usa == Follow("state", "United States of America")


def test_words_quoted_or_not_and_what_is_refused() -> None:
    assert followed('follow "data protection"') == Follow("words", "data protection")
    assert followed("follow  data   protection") == Follow("words", "data protection")
    assert followed('follow "germany"') == Follow("words", "germany")  # quotes: always words
    for bad in ('follow "!!"', 'follow ""', "follow " + "x" * 101):
        reply = ask(bad)
        assert reply.action is None and not reply.ok, bad


def test_following_twice_changes_nothing_and_the_limit_is_clear() -> None:
    mine = (Follow("clause", "art-24", "24"),)
    again = ask("follow 24", view(mine))
    assert again.action is None and "already follow" in again.title
    full = tuple(Follow("words", f"word{i}") for i in range(MAX_FOLLOWS))
    refused = ask("follow art-4", view(full))
    assert refused.action is None and not refused.ok
    assert f"{MAX_FOLLOWS} things" in render_plain(refused.body)
    assert ask("follow art-4", view(full[:-1])).follows == (
        *full[:-1],
        Follow("clause", "art-4", "4"),
    )


def test_unfollow_by_what_was_typed_its_key_another_name_or_all() -> None:
    mine = (
        Follow("clause", "art-24", "24"),
        Follow("state", "United States of America"),
        Follow("words", "data protection"),
        Follow("words", "germany"),
    )
    v = view(mine)
    assert ask("unfollow article 24", v).follows == mine[1:]
    assert ask("unfollow U.S.A.", v).follows == (mine[0], *mine[2:])
    assert ask("unfollow words:data protection", v).follows == (*mine[:2], mine[3])
    assert ask('unfollow "DATA protection"', v).follows == (*mine[:2], mine[3])
    # followed as words before the state was known: still found by what was typed
    assert ask("unfollow germany", v).follows == mine[:3]
    missing = ask("unfollow privacy", v)
    assert missing.action is None and not missing.ok
    gone = ask("unfollow all", v)
    assert gone.action == "follows" and gone.follows == ()
    assert ask("unfollow all", view()).action is None


def test_following_lists_each_with_its_unfollow_command() -> None:
    mine = (Follow("clause", "art-24", "24"), Follow("words", "<!channel> privacy"))
    text = render_plain(ask("following", view(mine)).body)
    assert "Art. 24 — Conditions and safeguards" in text and "unfollow art-24" in text
    assert 'unfollow "<!channel> privacy"' in text  # the user's words, as plain text
    assert "follow art-24" in render_plain(ask("following").body)  # how to start


def test_help_lists_the_follow_commands() -> None:
    text = render_plain(ask("help").body)
    for example in ("follow art-24", "unfollow art-24", "following"):
        assert example in text


# ----------------------------------------------------------------------------- matching


def test_a_clause_follow_matches_its_changes_and_news_naming_its_article() -> None:
    art24 = Follow("clause", "art-24", "24")
    assert matches(art24, alert("clause-change", "Art. 24 is now agreed", source="art-24"))
    assert not matches(art24, alert("clause-change", "Art. 4 is now agreed", source="art-4"))
    for named in ("Article 24 safeguards", "Under art. 24(1) of the treaty", "see Arts 24 and 25"):
        assert matches(art24, alert("news", named)), named
    for other in ("Article 245", "article 2", "24 states signed", "part 24"):
        assert not matches(art24, alert("news", other)), other
    ranged = Follow("clause", "art-45-46", "45-46")
    assert matches(ranged, alert("news", "", "Joint teams under Article 46"))
    assert not matches(ranged, alert("news", "Article 47"))


def test_a_state_follow_matches_its_actions_and_news_naming_it() -> None:
    usa = Follow("state", "United States of America")
    assert matches(
        usa, alert("treaty-action", "United States of America signed", subjects=(usa.value,))
    )
    assert not matches(usa, alert("treaty-action", "Germany signed", subjects=("Germany",)))
    for named in ("The US signs", "U.S. position", "United States joins", "USA"):
        assert matches(usa, alert("news", named)), named
    for other in ("Let us sign", "the bus", "USAID budget"):
        assert not matches(usa, alert("news", other)), other
    turkey = Follow("state", "Türkiye")
    assert matches(turkey, alert("news", "Turkey and Turkiye"))
    assert matches(turkey, alert("news", "Türkiye ratifies"))
    iran = Follow("state", "Iran (Islamic Republic of)")
    assert matches(iran, alert("news", "Iran abstains"))
    # a name inside another state's or place's name is not this state
    assert not matches(usa, alert("news", "Latin America and South America"))
    korea = Follow("state", "Republic of Korea")
    assert not matches(korea, alert("news", "North Korea, the DPRK, and the Korean peninsula"))
    assert matches(korea, alert("news", "North Korea and South Korea"))
    assert not matches(Follow("state", "Congo"), alert("news", "DR Congo signs"))


def test_words_match_as_whole_words_in_any_case_and_health_never_goes_to_people() -> None:
    words = Follow("words", "data protection")
    assert matches(words, alert("news", "", "New DATA\nProtection rules"))
    assert matches(words, alert("session-change", "Data protection workshop moved"))
    assert not matches(words, alert("news", "dataprotection"))
    assert not matches(Follow("words", "cyber"), alert("news", "cybercrime"))
    health = alert("source-health", "data protection feed failing")
    assert not matches(words, health)
    people = {Person("slack", "U1"): (words,)}
    assert followers(health, people) == []
    assert followers(alert("news", "data protection"), people) == [Person("slack", "U1")]


def test_dm_channels_name_the_person() -> None:
    assert dm_channel("@ann:example.org") == "dm:@ann:example.org"
    assert dm_user("dm:U0ANN") == "U0ANN"
    assert dm_user("alerts") is None and dm_user("dm:") is None


# ----------------------------------------------------------------------------- outbox rows


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    yield Outbox(store, {"slack": FakeTransport(), "matrix": FakeTransport()}, FixedClock(NOW))
    await store.close()


async def test_rows_go_to_each_follower_once_on_their_platform(outbox: Outbox) -> None:
    news = alert("news", "Article 24 and data protection", alert_id="news:hrw:7")
    people = {
        Person("slack", "U0ANN"): (Follow("clause", "art-24", "24"), Follow("words", "data")),
        Person("matrix", "@bo:example.org"): (Follow("words", "data protection"),),
        Person("slack", "U0CY"): (Follow("words", "privacy"),),
        Person("teams", "T1"): (Follow("words", "data"),),  # no such transport here
    }
    rows = outbox.rows_for_people([news, news], people)
    assert [(r.key, r.channel, r.transport, r.state) for r in rows] == [
        ("news:hrw:7|dm:U0ANN|slack", "dm:U0ANN", "slack", "pending"),
        ("news:hrw:7|dm:@bo:example.org|matrix", "dm:@bo:example.org", "matrix", "pending"),
    ]
    await outbox.store.commit(Changes(enqueue=rows))
    assert outbox.rows_for_people([news], people) == []  # once per person, ever


# ----------------------------------------------------------------------------- the home page


def test_the_home_page_shows_three_dates_and_each_follow_with_its_key() -> None:
    events = [
        SessionEvent(f"s:{n}", "s", f"Session {n}", datetime(2026, 4, n, 9, tzinfo=UTC))
        for n in range(1, 6)
    ]
    past = SessionEvent("s:0", "s", "Over", datetime(2026, 1, 1, tzinfo=UTC))
    follows = (Follow("clause", "art-24", "24"), Follow("state", "Germany"))
    page = home_view([past, *reversed(events)], follows, CLAUSES, UTC_ZONE, NOW)
    dates = [render_spans_plain(line) for line in page.dates]
    assert len(dates) == 3 and "Session 1" in dates[0] and "Session 3" in dates[2]
    assert [f.key for f in page.follows] == ["clause:art-24", "state:Germany"]
    assert "Conditions and safeguards" in render_spans_plain(page.follows[0].line)
    empty = home_view([], (), CLAUSES, UTC_ZONE, NOW)
    assert empty.dates == () and empty.follows == () and empty.no_dates and empty.no_follows
    # the unfollow a button sends finds the follow
    v = view(follows)
    for item in page.follows:
        assert handle(f'unfollow "{item.key}"', v, NOW).action == "follows"
    assert replace(page, title="x").title == "x"
