"""Each kind of configuration mistake is reported with its file, line and key path."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bot.configuration import load_config
from bot.errors import ConfigError, Problem
from tests.conftest import REPO, ConfigFactory


def problems(directory: Path) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    return list(info.value.problems)


def only(directory: Path) -> Problem:
    found = problems(directory)
    assert len(found) == 1, [str(p) for p in found]
    return found[0]


def test_shipped_config_is_valid() -> None:
    config = load_config(REPO / "config")
    assert config.feeds, "the shipped config watches feeds"


def test_minimal_config_loads_with_defaults(config_dir: ConfigFactory) -> None:
    config = load_config(config_dir())
    assert config.feeds == ()
    assert config.bot.reminders.lead_times[0] == timedelta(days=14)
    assert config.bot.fetch.per_host == 2


def test_feed_defaults_are_applied(config_dir: ConfigFactory) -> None:
    config = load_config(
        config_dir(
            feeds="""
            defaults: {every: 30m, match: [cybercrime], backfill: 2}
            feeds:
              - {id: a, url: "https://example.org/a.xml"}
              - {id: b, url: "https://example.org/b.xml", every: 2h, match: []}
            """
        )
    )
    a, b = config.feeds
    assert (a.every, a.match, a.backfill, a.channels) == (
        timedelta(minutes=30),
        ("cybercrime",),
        2,
        ("alerts",),
    )
    assert (b.every, b.match) == (timedelta(hours=2), ())
    assert a.name == "a"


def test_yaml_syntax_error(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="feeds:\n  - id: a\n    url: [unclosed\n"))
    assert p.file == "feeds.yaml"
    assert p.line is not None and p.line >= 3
    assert "YAML syntax error" in p.message


def test_tab_indentation(config_dir: ConfigFactory) -> None:
    p = only(config_dir(clauses="clauses:\n  - id: a\n\tarticle: 4\n"))
    assert (p.file, p.line) == ("clauses.yaml", 3)
    assert "tab" in p.message


def test_duplicate_yaml_key(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="defaults: {every: 15m}\ndefaults: {every: 30m}\n"))
    assert p.file == "feeds.yaml" and p.line == 2
    assert "duplicate" in p.message


def test_unknown_key_with_suggestion(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            feeds="""
            feeds:
              - id: a
                url: https://example.org/a.xml
                evry: 30m
            """
        )
    )
    assert (p.file, p.line, p.path) == ("feeds.yaml", 4, "feeds[0].evry")
    assert "unknown key 'evry'" in p.message and "'every'" in p.message


def test_unknown_top_level_key(config_dir: ConfigFactory) -> None:
    p = only(config_dir(bot="timezone: UTC\nchanels: {}\n"))
    assert (p.file, p.line, p.path) == ("bot.yaml", 2, "chanels")
    assert "did you mean 'channels'" in p.message


def test_wrong_type(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="feeds:\n  - id: a\n    url: https://e.org/x\n    backfill: many\n"))
    assert (p.line, p.path) == (4, "feeds[0].backfill")
    assert "integer" in p.message


def test_wrong_type_list_expected(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="feeds:\n  id: a\n"))
    assert (p.line, p.path) == (1, "feeds")
    assert "list" in p.message


@pytest.mark.parametrize("value", ["15", "15 minutes", "1x", "-5m", "m"])
def test_bad_duration(config_dir: ConfigFactory, value: str) -> None:
    p = only(config_dir(feeds=f"defaults:\n  every: {value!r}\n"))
    assert (p.file, p.line, p.path) == ("feeds.yaml", 2, "defaults.every")
    assert "duration" in p.message or "unit" in p.message


def test_interval_under_minimum(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="feeds:\n  - id: a\n    url: https://e.org/x\n    every: 30s\n"))
    assert (p.line, p.path) == (4, "feeds[0].every")
    assert "at least 1m" in p.message


def test_unknown_time_zone(config_dir: ConfigFactory) -> None:
    p = only(config_dir(bot="timezone: Europe/Berln\n"))
    assert (p.file, p.line, p.path) == ("bot.yaml", 1, "timezone")
    assert "unknown time zone 'Europe/Berln'" in p.message


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/feed",
        "feeds.xml",
        "/etc/passwd",
        "file:///etc/passwd",
        "http://user:secret@example.org/x",
        "https://",
    ],
)
def test_bad_feed_url(config_dir: ConfigFactory, url: str) -> None:
    p = only(config_dir(feeds=f"feeds:\n  - id: a\n    url: {url!r}\n"))
    assert (p.line, p.path) == (3, "feeds[0].url")
    assert "secret" not in str(p)


def test_duplicate_ids_across_feeds_and_calendars(config_dir: ConfigFactory) -> None:
    found = problems(
        config_dir(
            feeds="feeds:\n  - {id: un, url: 'https://e.org/a'}\n  - {id: un, url: 'https://e.org/b'}\n",
            sessions="calendars:\n  - {id: un, url: 'https://e.org/c.ics'}\n",
        )
    )
    assert [(p.file, p.line, p.path) for p in found] == [
        ("feeds.yaml", 3, "feeds[1].id"),
        ("sessions.yaml", 2, "calendars[0].id"),
    ]
    assert all("duplicate id 'un'" in p.message for p in found)


def test_duplicate_clause_id(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            clauses="""
            clauses:
              - {id: art-4, article: "4", title: A, status: open}
              - {id: art-4, article: "5", title: B, status: open}
            """
        )
    )
    assert (p.file, p.line, p.path) == ("clauses.yaml", 3, "clauses[1].id")


def test_channel_not_defined(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            feeds="feeds:\n  - id: a\n    url: https://e.org/x\n    channels: [alerts, press]\n"
        )
    )
    assert "press" in p.message


def test_default_channel_must_exist_when_used(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            bot="timezone: UTC\nchannels: {news: {}}\n",
            feeds="feeds:\n  - id: a\n    url: https://e.org/x\n",
        )
    )
    assert (p.file, p.path) == ("feeds.yaml", "defaults.channels[0]")
    assert "'alerts'" in p.message


def test_channel_not_defined_line(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            feeds="feeds:\n  - id: a\n    url: https://e.org/x\n    channels: [alerts, press]\n"
        )
    )
    assert (p.file, p.line, p.path) == ("feeds.yaml", 4, "feeds[0].channels[1]")
    assert "'press' is not defined in bot.yaml" in p.message


def test_reminder_channel_not_defined(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            bot="timezone: UTC\nchannels: {ops: {}}\n",
            sessions="sessions:\n  - {id: s, title: S, start: 2026-12-31}\n",
        )
    )
    assert (p.file, p.path) == ("bot.yaml", "reminders.channels[0]")
    assert "'alerts'" in p.message


@pytest.mark.parametrize("term", ["/(unclosed/", "/[a-/", "/*x/"])
def test_invalid_regex(config_dir: ConfigFactory, term: str) -> None:
    p = only(config_dir(feeds=f"defaults:\n  match:\n    - cybercrime\n    - {term!r}\n"))
    assert (p.line, p.path) == (4, "defaults.match[1]")
    assert "invalid regex" in p.message


def test_bad_channel_addresses(config_dir: ConfigFactory) -> None:
    found = problems(
        config_dir(bot="channels:\n  alerts: {slack: '#general', matrix: 'room'}\n  ops: {}\n")
    )
    assert [(p.line, p.path) for p in found] == [
        (2, "channels.alerts.slack"),
        (2, "channels.alerts.matrix"),
    ]


def test_python_tags_are_refused(config_dir: ConfigFactory) -> None:
    found = problems(config_dir(feeds="defaults: !!python/object:os.system {}\n"))
    assert any("tag" in p.message and p.line == 1 for p in found)


def test_session_dates(config_dir: ConfigFactory) -> None:
    found = problems(
        config_dir(
            sessions="""
            sessions:
              - id: s1
                title: One
                start: 2026-03-10T10:00
                end: 2026-03-01T18:00
              - id: s2
                title: Two
                start: next tuesday
            """
        )
    )
    assert [(p.line, p.path) for p in found] == [(5, "sessions[0].end"), (8, "sessions[1].start")]


def test_missing_required_key(config_dir: ConfigFactory) -> None:
    p = only(config_dir(feeds="feeds:\n  - id: a\n"))
    assert (p.line, p.path) == (2, "feeds[0].url")
    assert "required" in p.message


def test_missing_bot_yaml(tmp_path: Path) -> None:
    (tmp_path / "feeds.yaml").write_text("feeds: []\n")
    p = only(tmp_path)
    assert p.file == "bot.yaml" and "missing" in p.message


def test_every_problem_reported_in_one_run(config_dir: ConfigFactory) -> None:
    found = problems(
        config_dir(
            bot="timezone: Mars/Olympus\nchannels: {alerts: {}}\nfetch: {per_hots: 2}\n",
            feeds="""
            feeds:
              - {id: a, url: "ftp://x", every: 10s}
              - {id: a, url: "https://e.org/x", channels: [nowhere]}
            """,
            clauses="clauses:\n  - {id: c, article: '1', title: T, status: sleepy}\n",
        )
    )
    rendered = [str(p) for p in found]
    assert len(found) == 7, rendered
    assert rendered[0].startswith("bot.yaml:1: timezone:")
    assert all(":" in r.split(" ")[0] for r in rendered)


def test_slack_http_mode_needs_the_server(config_dir: ConfigFactory) -> None:
    p = only(config_dir(bot="channels: {}\nslack: {mode: http}\nhttp:\n  port: 0\n"))
    assert (p.file, p.line, p.path) == ("bot.yaml", 4, "http.port")
