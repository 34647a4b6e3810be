from __future__ import annotations

import pytest

from bot.domain.durations import format_duration, humanize, parse_duration
from bot.domain.matching import Matcher


def test_words_are_case_insensitive_and_whole() -> None:
    m = Matcher.build(["cybercrime", "Ad Hoc Committee"], [])
    assert m.matches("New CYBERCRIME treaty") == ("cybercrime",)
    assert m.matches("the ad hoc  committee met") == ("Ad Hoc Committee",)
    assert m.matches("anticybercrimes law") is None  # not a whole word
    assert m.matches("nothing here") is None


def test_regex_terms() -> None:
    m = Matcher.build([r"/\bAHC\b/", "/cyber-?crime/"], [])
    assert m.matches("the AHC met") == (r"/\bAHC\b/",)
    assert m.matches("cyber-crime") == ("/cyber-?crime/",)
    assert m.matches("MAHCO") is None


def test_exclude_wins() -> None:
    m = Matcher.build(["cybercrime"], ["sponsored"])
    assert m.matches("cybercrime", "Sponsored content") is None
    assert m.matches("cybercrime", "analysis") == ("cybercrime",)


def test_no_match_list_matches_everything() -> None:
    assert Matcher.build([], []).matches("anything") == ()
    assert Matcher.build([], ["spam"]).matches("spam here") is None


def test_special_characters_in_words_are_literal() -> None:
    m = Matcher.build(["C++", "art. 4"], [])
    assert m.matches("about C++ code") == ("C++",)
    assert m.matches("see art. 4 now") == ("art. 4",)
    assert m.matches("art 4") is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("2h", 7200),
        ("7d", 604800),
        ("1h30m", 5400),
        ("0m", 0),
        ("1w", 604800),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "15", "m", "15 minutes", "-5m", "1.5h", "5y"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_humanize() -> None:
    assert humanize(parse_duration("3d4h5m")) == "3 days 4 hours"
    assert humanize(parse_duration("1h1m")) == "1 hour 1 minute"
    assert humanize(parse_duration("45m")) == "45 minutes"
    assert humanize(parse_duration("0m")) == "now"
