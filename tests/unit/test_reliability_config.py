"""Configuration cases of the reliability research not covered elsewhere (reliability 29, 38, 40).

YAML 1.1 traps (``22:30`` read as the sexagesimal 1350, ``no`` read as false) and source
addresses that are not plain http(s): each is refused, or read as written, with file and line.
"""

from __future__ import annotations

import pytest

from bot.cli import build_parser
from bot.configuration import load_config
from tests.conftest import ConfigFactory
from tests.unit.test_configuration import only


@pytest.mark.parametrize(
    ("key", "value"),
    [("failures_before_alert", "22:30"), ("backfill", "1:30"), ("max_new_items", "1:00:00")],
)
def test_a_sexagesimal_looking_number_is_refused_not_read_as_seconds(
    config_dir: ConfigFactory, key: str, value: str
) -> None:
    # YAML 1.1 (PyYAML) reads 22:30 as the integer 1350 (yaml/pyyaml#395)
    p = only(config_dir(feeds=f"feeds:\n  - id: a\n    url: https://e.org/x\n    {key}: {value}\n"))
    assert (p.file, p.line, p.path) == ("feeds.yaml", 4, f"feeds[0].{key}")
    assert "integer" in p.message


def test_a_clock_time_as_a_lead_time_is_refused(config_dir: ConfigFactory) -> None:
    bot = "timezone: UTC\nchannels: {alerts: {}}\nreminders:\n  lead_times: [1d, 22:30]\n"
    p = only(config_dir(bot=bot))
    assert (p.file, p.line) == ("bot.yaml", 4)
    assert p.path.startswith("reminders.lead_times")


def test_yaml_1_1_booleans_stay_the_words_written(config_dir: ConfigFactory) -> None:
    # YAML 1.1 turns no/yes/on/off (and NO, Norway's code) into booleans
    config = load_config(
        config_dir(
            feeds="feeds:\n  - id: a\n    url: https://e.org/x\n    match: [no, yes, on, off, NO]\n"
        )
    )
    assert config.feeds[0].match == ("no", "yes", "on", "off", "NO")


@pytest.mark.parametrize(
    "url",
    ["feed://example.org/rss", "gopher://example.org/1", "file://localhost/etc/passwd"],
)
def test_more_feed_schemes_are_refused(config_dir: ConfigFactory, url: str) -> None:
    p = only(config_dir(feeds=f"feeds:\n  - id: a\n    url: {url!r}\n"))
    assert (p.file, p.line, p.path) == ("feeds.yaml", 3, "feeds[0].url")


@pytest.mark.parametrize(
    "url",
    [
        "/etc/passwd",
        "../private/calendar.ics",
        "calendars/../../outside.ics",
        "file:///etc/passwd",
        "feed://example.org/c.ics",
        "gopher://example.org/1",
        "ftp://example.org/c.ics",
        "http://user:hunter2@example.org/c.ics",
    ],
)
def test_calendar_addresses_outside_http_and_the_config_directory_are_refused(
    config_dir: ConfigFactory, url: str
) -> None:
    p = only(config_dir(sessions=f"calendars:\n  - id: c\n    url: {url!r}\n"))
    assert (p.file, p.line, p.path) == ("sessions.yaml", 3, "calendars[0].url")
    assert "hunter2" not in str(p)


def test_a_calendar_file_in_the_config_directory_is_accepted(config_dir: ConfigFactory) -> None:
    config = load_config(config_dir(sessions="calendars:\n  - {id: c, url: sessions.ics}\n"))
    (calendar,) = config.calendars
    assert calendar.is_file and calendar.url.endswith("/sessions.ics")


# 38 ------------------------------------------------------------------------ dates as typed


@pytest.mark.parametrize(
    "start", ["''", "1A2B", "Feb 2011", "03/04/2026", "2026-03-10 10:00 EST", "tomorrow"]
)
def test_a_session_date_that_cannot_be_read_is_refused_not_guessed(
    config_dir: ConfigFactory, start: str
) -> None:
    p = only(config_dir(sessions=f"sessions:\n  - id: s\n    title: S\n    start: {start}\n"))
    assert (p.file, p.line, p.path) == ("sessions.yaml", 4, "sessions[0].start")


def test_a_misspelt_session_time_zone_is_refused(config_dir: ConfigFactory) -> None:
    p = only(
        config_dir(
            sessions="sessions:\n  - id: s\n    title: S\n    start: 2026-03-10T10:00\n"
            "    timezone: Europe/Berln\n"
        )
    )
    assert (p.file, p.line, p.path) == ("sessions.yaml", 5, "sessions[0].timezone")
    assert "Europe/Berln" in p.message


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "ISO 8601"),
        ("1A2B", "ISO 8601"),
        ("Feb 2011", "ISO 8601"),
        ("03/04/2026", "ISO 8601"),
        ("2026-03-01 09:00 EST", "ISO 8601"),
        ("2026-03-01T09:00", "no time zone"),  # never read as local time
    ],
)
def test_a_now_that_cannot_be_read_is_a_usage_error(
    value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["once", "--now", value])
    assert exit_.value.code == 2
    assert says in capsys.readouterr().err
