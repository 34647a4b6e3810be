"""Small rules of the domain at their edges: dates shown for all-day events, countdowns and
durations, states found by name, words and patterns, and who follows what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain.countries import StateMatch, find_state, name_key, normalise
from bot.domain.durations import format_duration, humanize
from bot.domain.follows import Follow, Person, add_follow, followers, matches, state_names
from bot.domain.matching import Matcher, compile_term, is_regex
from bot.domain.model import Alert, AlertId, ChannelName, SessionEvent
from bot.domain.timefmt import event_span, format_span

VIENNA = ZoneInfo("Europe/Vienna")
NEW_YORK = ZoneInfo("America/New_York")
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


# ------------------------------------------------------------------------------- dates


def midnight(day: int, tz: ZoneInfo = NEW_YORK) -> datetime:
    return datetime(2026, 12, day, tzinfo=tz).astimezone(UTC)


def test_all_day_spans_end_the_day_before_their_exclusive_end() -> None:
    assert format_span(midnight(7), midnight(8), NEW_YORK, all_day=True) == "Mon 07 Dec 2026"
    assert (
        format_span(midnight(7), midnight(10), NEW_YORK, all_day=True)
        == "Mon 07 Dec 2026 – Wed 09 Dec 2026"
    )
    assert format_span(midnight(7), None, NEW_YORK, all_day=True) == "Mon 07 Dec 2026"
    # an end before the start is read as the start's day
    assert format_span(midnight(7), midnight(6), NEW_YORK, all_day=True) == "Mon 07 Dec 2026"
    naive = datetime(2026, 12, 7)
    assert format_span(naive, None, NEW_YORK, all_day=True) == "Mon 07 Dec 2026"


def test_an_all_day_event_keeps_the_days_of_its_own_zone() -> None:
    meeting = SessionEvent(
        "cal:m", "cal", "Meeting", midnight(7), midnight(10), all_day=True, timezone=NEW_YORK.key
    )
    # in Vienna the days would start at 06:00; the meeting's days are New York's
    assert event_span(meeting, VIENNA) == "Mon 07 Dec 2026 – Wed 09 Dec 2026"
    floating = SessionEvent(
        "cal:f", "cal", "Floating", midnight(7, VIENNA), midnight(9, VIENNA), all_day=True
    )
    assert event_span(floating, VIENNA) == "Mon 07 Dec 2026 – Tue 08 Dec 2026"
    timed = SessionEvent("cal:t", "cal", "Timed", midnight(7), midnight(7) + timedelta(hours=2))
    assert event_span(timed, VIENNA) == "Mon 07 Dec 2026, 06:00–08:00 CET"


# ------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (-5, "now"),
        (0, "now"),
        (1, "less than a minute"),
        (59, "less than a minute"),
        (60, "1 minute"),
        (61, "1 minute"),
        (3600, "1 hour"),
        (3660, "1 hour 1 minute"),
        (7320, "2 hours 2 minutes"),
        (86400, "1 day"),
        (86400 + 3599, "1 day"),
        (2 * 86400 + 7200, "2 days 2 hours"),
    ],
)
def test_countdowns_for_people(seconds: int, shown: str) -> None:
    assert humanize(timedelta(seconds=seconds)) == shown


def test_durations_are_spelled_as_maintainers_write_them() -> None:
    assert format_duration(timedelta(0)) == "0m"
    assert format_duration(timedelta(days=1, hours=2, minutes=3, seconds=4)) == "1d2h3m4s"
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_duration(timedelta(seconds=45)) == "45s"


# ------------------------------------------------------------------------------- states

STATES = (
    "Germany",
    "Republic of Korea",
    "Democratic People's Republic of Korea",
    "Côte d'Ivoire",
    "Guinea",
    "Guinea-Bissau",
    "Equatorial Guinea",
    "Papua New Guinea",
    "Gabon",
    "Gambia",
    "Ghana",
    "Georgia",
    "Greece",
    "Grenada",
)


def test_names_are_compared_without_case_accents_or_apostrophes() -> None:
    assert normalise("Côte d’Ivoire") == normalise("COTE D'IVOIRE") == "cote divoire"
    assert name_key("Ivory Coast") == name_key("Côte d’Ivoire")
    assert name_key("Turkey") == name_key("Türkiye") and name_key("US") != name_key("UK")


def test_a_state_is_found_by_a_part_of_its_name_or_the_closest_names() -> None:
    assert find_state("germ", STATES) == StateMatch("Germany")
    assert find_state("cote d’ivoire", STATES) == StateMatch("Côte d'Ivoire")
    # a word of one name only
    assert find_state("bissau", STATES) == StateMatch("Guinea-Bissau")
    # a word of several names, or the start of several: never a guess, at most five
    assert find_state("korea", STATES) == StateMatch("Republic of Korea")  # a known other name
    assert find_state("guinea", STATES) == StateMatch("Guinea")
    assert find_state("g", STATES) == StateMatch(
        None, ("Gabon", "Gambia", "Georgia", "Germany", "Ghana")
    )
    assert find_state("new", STATES) == StateMatch("Papua New Guinea")
    assert find_state("", STATES) == StateMatch(None)
    # misspelt: the closest names, at most three
    assert find_state("grenade", STATES) == StateMatch(None, ("Grenada", "Greece"))
    close = find_state("ghanna", ("Ghana", "Ghanb", "Ghanc", "Ghand", "Ghane"))
    assert close.found is None and len(close.suggestions) == 3


def test_a_state_is_found_in_the_words_of_several_names() -> None:
    names = ("Island South", "Island North", "Lesotho")
    assert find_state("island", names) == StateMatch(None, ("Island North", "Island South"))
    names = ("The Isle Alpha", "Some Isle")
    assert find_state("isle", names) == StateMatch(None, ("Some Isle", "The Isle Alpha"))
    assert find_state("alpha", names) == StateMatch("The Isle Alpha")


def test_a_state_goes_by_its_names_with_and_without_their_parenthesis() -> None:
    assert state_names("Venezuela (Bolivarian Republic of)") == (
        "Venezuela (Bolivarian Republic of)",
        "Venezuela",
    )
    assert "Netherlands" in state_names("Netherlands (Kingdom of the)")
    assert "Kingdom of the Netherlands" in state_names("Netherlands (Kingdom of the)")
    assert state_names("Germany") == ("Germany",)
    assert state_names("Odd (one) (two)") == ("Odd (one) (two)", "Odd")


# ------------------------------------------------------------------------------- words


def test_patterns_are_slashed_and_ignore_case() -> None:
    assert [is_regex(t) for t in ("/", "//", "/a/", "/a", "a/", "a")] == [
        False,
        True,
        True,
        False,
        False,
        False,
    ]
    assert compile_term("/CYBER.?CRIME/").search("a cybercrime treaty")
    matcher = Matcher.build(["/treaty$/", "a/"], [])
    assert matcher.matches("the TREATY") == ("/treaty$/",)
    assert matcher.matches("see a/ b") == ("a/",)


# ------------------------------------------------------------------------------- follows


def alert(kind: str, title: str, **kw: object) -> Alert:
    base: dict[str, object] = {
        "kind": kind,
        "id": AlertId(f"{kind}:1"),
        "channels": (ChannelName("alerts"),),
        "source": "x",
        "title": title,
        "url": None,
        "text": "",
        "at": NOW,
    }
    base.update(kw)
    return Alert(**base)  # type: ignore[arg-type]


def test_follows_are_the_same_whatever_the_case_and_spacing() -> None:
    mine = (Follow("words", "Data  Protection"), Follow("state", "Turkey"))
    assert add_follow(mine, Follow("words", "data protection")) == mine
    assert add_follow(mine, Follow("state", "Türkiye")) == mine
    assert add_follow(mine, Follow("words", "Turkey")) == (*mine, Follow("words", "Turkey"))
    assert add_follow(list(mine), Follow("state", "TURKEY")) == mine  # always a tuple


def test_an_article_is_followed_in_the_news_only() -> None:
    art24 = Follow("clause", "art-24", "24")
    news = alert("news", "States debate Article 24 safeguards")
    assert matches(art24, news)
    assert not matches(art24, alert("session-change", "Article 24 session moved"))
    assert not matches(art24, alert("session-reminder", "Article 24 briefing"))
    assert not matches(art24, alert("source-health", "Article 24 feed failing"))
    assert matches(art24, alert("clause-change", "Art. 24", source="ART-24"))


def test_a_state_is_not_found_inside_a_longer_place_name() -> None:
    guinea = Follow("state", "Guinea")
    assert matches(guinea, alert("news", "Guinea signs the convention"))
    assert not matches(guinea, alert("news", "Papua New Guinea signs the convention"))
    assert not matches(guinea, alert("news", "Equatorial Guinea and Guinea-Bissau sign"))
    assert matches(guinea, alert("news", "Equatorial Guinea and Guinea sign"))
    assert not matches(guinea, alert("session-reminder", "Guinea hosts a meeting"))


def test_source_health_goes_to_no_one() -> None:
    everyone = {Person("slack", "U1"): (Follow("words", "failing"),)}
    assert followers(alert("source-health", "Feed is failing"), everyone) == []
    assert followers(alert("news", "Feed is failing"), everyone) == [Person("slack", "U1")]
