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


def test_a_name_before_a_parenthesis_keeps_all_its_words() -> None:
    assert state_names("Saint Vincent (and the Grenadines)") == (
        "Saint Vincent (and the Grenadines)",
        "Saint Vincent",
    )


def test_a_home_page_shows_words_as_words_even_when_they_look_like_a_clause() -> None:
    from bot.domain.home import home_view
    from bot.domain.model import Clause

    art24 = Clause("art-24", "24", "Conditions and safeguards", "open")
    page = home_view([], [Follow("words", "art-24")], [art24], VIENNA, NOW)
    [shown] = page.follows
    assert "".join(s.text for s in shown.line) == "Words: “art-24”"


# ------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    ("text", "limit", "short"),
    [
        ("short enough", 12, "short enough"),
        ("abc", 1, "…"),
        ("abcdefghij", 5, "abcd…"),
        ("one two three four", 10, "one two…"),  # cut at the last space past the middle
        ("one twothreefour", 10, "one twoth…"),  # no space past the middle: cut in the word
        ("ab cdefghijkl", 9, "ab cdefg…"),  # a space before a third: not a word boundary
        ("abcd efghijkl", 9, "abcd efg…"),  # a space at the middle, not past it
        ("abc, defghijk", 6, "abc…"),  # punctuation before the cut goes
        (", leading then more", 11, ", leading…"),
        ("wordX and more", 7, "wordX…"),
        ("  spaced   out   words  ", 100, "spaced out words"),
    ],
)
def test_shorten_cuts_on_a_word_and_marks_the_cut(text: str, limit: int, short: str) -> None:
    from bot.domain.text import shorten

    assert shorten(text, limit) == short
    assert len(shorten(text, limit)) <= max(limit, 1)


# ------------------------------------------------------------------------------- holding


def test_quiet_hours_let_through_what_cannot_wait_and_nothing_at_its_edge() -> None:
    from datetime import time

    from bot.domain.holding import ChannelRules, QuietRule, hold_for

    rules = ChannelRules(quiet=QuietRule(time(22, 0), time(7, 0), VIENNA))
    night = datetime(2026, 12, 5, 23, 0, tzinfo=VIENNA).astimezone(UTC)
    end = datetime(2026, 12, 6, 7, 0, tzinfo=VIENNA).astimezone(UTC)

    def held(kind: str, start: datetime) -> bool:
        an = alert(kind, "x", event_start=start)
        return hold_for(an, ChannelName("alerts"), rules, night) is not None

    assert not held("session-reminder", end - timedelta(minutes=1))  # starts before the end
    assert held("session-reminder", end)  # at the end of the quiet hours: it can wait
    assert not held("session-change", night + timedelta(hours=47))
    assert held("session-change", night + timedelta(hours=48))


def test_a_digest_or_quiet_period_is_found_in_the_channel_s_own_day() -> None:
    from datetime import time

    from bot.domain.holding import DigestRule, QuietRule, next_digest, quiet_end

    # Monday 23:30 UTC is already Tuesday 00:30 in Vienna
    now = datetime(2026, 12, 7, 23, 30, tzinfo=UTC)
    tuesdays = DigestRule(time(0, 15), frozenset({1}), VIENNA)
    assert next_digest(tuesdays, now) == datetime(2026, 12, 15, 0, 15, tzinfo=VIENNA)
    mondays = DigestRule(time(23, 45), frozenset({0}), VIENNA)
    assert next_digest(mondays, now) == datetime(2026, 12, 14, 23, 45, tzinfo=VIENNA)
    after_midnight = QuietRule(time(0, 0), time(1, 0), VIENNA)
    assert quiet_end(after_midnight, now) == datetime(2026, 12, 8, 1, 0, tzinfo=VIENNA)
    assert quiet_end(QuietRule(time(0, 0), time(1, 0), NEW_YORK), now) is None


# ------------------------------------------------------------------------------- planner


def test_a_fingerprint_ignores_case_in_the_host_only() -> None:
    from bot.domain.model import FeedItem
    from bot.domain.planner import fingerprint

    def fp(link: str) -> str | None:
        return fingerprint(FeedItem("k", "Title", link, "", None))

    assert fp("https://WWW.E.org/News/1") == fp("http://e.org/News/1/")
    assert fp("https://e.org/News/1") != fp("https://e.org/news/1")
    assert fp("https://e.org/a/B/c") != fp("https://e.org/a/b/c")
    # an address in the query is not where the link's own address ends
    assert fp("https://e.org/go?to=https://x.org/a") != fp("https://e.org/go?to=https://x.org/b")
    assert fp("https://e.org/go?to=https://x.org/a") != fp(
        "https://other.org/go?to=https://x.org/a"
    )
    assert fp("https://e.org/ABX") != fp("https://e.org/AB")
    assert fp("https://e.org/a#x#y") == fp("https://e.org/a#z")


def test_a_first_poll_is_never_read_as_a_reissue() -> None:
    from bot.domain.matching import Matcher
    from bot.domain.model import FeedItem, FeedState, SourceId
    from bot.domain.planner import FeedRule, plan_feed

    rule = FeedRule(SourceId("hrw"), "HRW", (ChannelName("alerts"),), Matcher.build([], []), 2, 3)
    old = [
        FeedItem(f"k{n}", f"Old {n}", f"https://e.org/{n}", "", NOW - timedelta(days=10 + n))
        for n in range(4)
    ]
    plan = plan_feed(rule, FeedState(), old, NOW, VIENNA, last_success=NOW - timedelta(days=1))
    assert [a.title for a in plan.alerts] == ["Old 1", "Old 0"]  # the backfill, oldest first


def test_as_many_old_items_as_a_poll_may_bring_are_posted() -> None:
    from bot.domain.matching import Matcher
    from bot.domain.model import FeedItem, FeedState, SourceId
    from bot.domain.planner import FeedRule, plan_feed

    rule = FeedRule(SourceId("hrw"), "HRW", (ChannelName("alerts"),), Matcher.build([], []), 0, 3)
    state = FeedState(True, {"k0": NOW - timedelta(days=30)}, {})
    old = [
        FeedItem(f"k{n}", f"Late {n}", f"https://e.org/{n}", "", NOW - timedelta(days=n))
        for n in range(1, 4)
    ]
    plan = plan_feed(rule, state, old, NOW, VIENNA, last_success=NOW - timedelta(hours=1))
    assert [a.title for a in plan.alerts] == ["Late 3", "Late 2", "Late 1"]


def test_health_keeps_its_backoff_and_a_success_clears_it() -> None:
    from bot.domain.model import SourceHealth
    from bot.domain.planner import HealthRule, plan_health

    rule = HealthRule("hrw", "HRW", "feed", 3, (ChannelName("ops"),))
    later = NOW + timedelta(hours=1)
    failed = plan_health(rule, SourceHealth(), "HTTP 429", NOW, not_before=later)
    assert failed.health.not_before == later and failed.changed
    waiting = SourceHealth(last_success=NOW, not_before=later)  # a Retry-After on a success
    cleared = plan_health(rule, waiting, None, NOW)
    assert cleared.changed and cleared.health.not_before is None
    assert not plan_health(rule, SourceHealth(last_success=NOW), None, NOW).changed
