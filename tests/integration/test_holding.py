"""Digests, quiet hours and per-channel lead times, end to end: ``treaty-bot once`` rounds of
``App`` against a feed served on loopback, at chosen instants, printing to the console."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from bot.app import App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.errors import ConfigError
from tests.conftest import ConfigFactory
from tests.integration.feedserver import FeedServer


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def rss(*items: tuple[str, datetime]) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://example.org/{guid}</link>"
        f'<guid isPermaLink="false">{guid}</guid>'
        f"<pubDate>{format_datetime(when, usegmt=True)}</pubDate></item>"
        for guid, (title, when) in ((t.split()[-1], (t, w)) for t, w in items)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title>'
        f"<link>https://example.org/</link><description>d</description>{body}</channel></rss>"
    ).encode()


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


class Rounds:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clock = FixedClock(at("2026-12-01T00:00:00Z"))

    async def once(self, when: datetime) -> list[dict[str, str]]:
        self.clock.set(when)
        out = io.StringIO()
        async with App(load_config(self.directory), clock=self.clock, fmt="jsonl", stream=out) as a:
            await a.once()
        return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def bot_yaml(tmp: Path, alerts: str) -> str:
    return (
        f"""
    timezone: Europe/Vienna
    storage: {tmp / "state.json"}
    channels:
      alerts: {alerts}
      ops: {{}}
    http: {{port: 0}}
    """.rstrip()
        + "\n"
    )


async def test_news_waits_for_the_weekday_digest_and_is_posted_once(
    config_dir: ConfigFactory, server: FeedServer, tmp_path: Path
) -> None:
    directory = config_dir(
        bot=bot_yaml(tmp_path, '{digest: {at: "09:00", days: [mon, tue, wed, thu, fri]}}'),
        feeds=f"feeds:\n  - {{id: news, url: {server.url('/feed.xml')}, every: 15m}}\n",
    )
    rounds = Rounds(directory)
    friday = at("2026-12-04T18:00:00+01:00")
    server.serve("/feed.xml", rss(("Old item o1", friday - timedelta(days=1))))
    assert await rounds.once(friday) == []  # the first poll only remembers
    saturday = at("2026-12-05T10:00:00+01:00")
    server.serve(
        "/feed.xml",
        rss(
            ("Saturday item s1", saturday - timedelta(hours=1)),
            ("Saturday item s2", saturday - timedelta(minutes=30)),
            ("Old item o1", friday - timedelta(days=1)),
        ),
    )
    assert await rounds.once(saturday) == []  # held for Monday
    assert await rounds.once(at("2026-12-07T08:59:00+01:00")) == []
    # the bot was not running at 09:00: the digest goes out at the next round, once
    posted = await rounds.once(at("2026-12-07T09:20:00+01:00"))
    assert [p["title"] for p in posted] == ["Digest: 2 alerts"]
    assert "Saturday item s1" in posted[0]["text"] and "Saturday item s2" in posted[0]["text"]
    assert await rounds.once(at("2026-12-08T09:20:00+01:00")) == []  # empty: nothing


async def test_quiet_hours_hold_what_can_wait_and_let_the_urgent_through(
    config_dir: ConfigFactory, server: FeedServer, tmp_path: Path
) -> None:
    directory = config_dir(
        bot=bot_yaml(tmp_path, '{quiet: {from: "22:00", to: "07:00"}}')
        + "    reminders: {lead_times: [1h], channels: [alerts]}\n",
        feeds=f"feeds:\n  - {{id: news, url: {server.url('/feed.xml')}, every: 15m}}\n",
        sessions="""
        sessions:
          - {id: dawn, title: Dawn briefing, start: "2026-12-06T06:30", end: "2026-12-06T07:30"}
          - {id: noon, title: Noon session, start: "2026-12-06T12:00", end: "2026-12-06T13:00"}
        """,
    )
    rounds = Rounds(directory)
    evening = at("2026-12-05T20:00:00+01:00")
    server.serve("/feed.xml", rss(("First f1", evening - timedelta(hours=1))))
    assert await rounds.once(evening) == []
    night = at("2026-12-06T05:31:00+01:00")
    server.serve(
        "/feed.xml",
        rss(("Night n1", night - timedelta(hours=2)), ("First f1", evening - timedelta(hours=1))),
    )
    posted = await rounds.once(night)
    # the reminder for a briefing that starts before 07:00 goes through; the news waits
    assert [p["kind"] for p in posted] == ["session-reminder"]
    assert "Dawn briefing" in posted[0]["title"]
    morning = await rounds.once(at("2026-12-06T07:00:00+01:00"))
    assert [p["title"] for p in morning] == ["While the channel was quiet: 1 alert"]
    assert "Night n1" in morning[0]["text"]
    assert await rounds.once(at("2026-12-06T07:05:00+01:00")) == []


async def test_a_channel_s_own_lead_times_replace_the_global_list_there(
    config_dir: ConfigFactory, tmp_path: Path
) -> None:
    directory = config_dir(
        bot=f"""
        timezone: Europe/Vienna
        storage: {tmp_path / "state.json"}
        channels:
          alerts: {{}}
          ops: {{lead_times: [2d]}}
        reminders: {{lead_times: [1d], channels: [alerts, ops]}}
        http: {{port: 0}}
        """,
        sessions="""
        sessions:
          - {id: s, title: Session eight, start: "2026-12-20T10:00", end: "2026-12-20T18:00"}
        """,
    )
    rounds = Rounds(directory)
    assert await rounds.once(at("2026-12-01T09:00:00+01:00")) == []
    two_days = await rounds.once(at("2026-12-18T10:00:00+01:00"))
    assert [(p["channel"], p["kind"]) for p in two_days] == [("ops", "session-reminder")]
    one_day = await rounds.once(at("2026-12-19T10:00:00+01:00"))
    assert [(p["channel"], p["kind"]) for p in one_day] == [("alerts", "session-reminder")]
    assert await rounds.once(at("2026-12-19T10:05:00+01:00")) == []


def test_bad_times_days_and_kinds_are_reported_with_their_line(
    config_dir: ConfigFactory, tmp_path: Path
) -> None:
    directory = config_dir(
        bot=f"""
        storage: {tmp_path / "state.json"}
        channels:
          alerts:
            digest: {{at: "25:00", days: [mon, funday], kinds: [gossip]}}
            quiet: {{from: "22:00", to: "22:00"}}
          ops:
            quiet: {{from: "22:00", to: "07:00", timezon: UTC}}
        """
    )
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    problems = sorted(str(p) for p in raised.value.problems)
    assert (
        problems[:3]
        == [
            "bot.yaml:4: channels.alerts.digest.at: '25:00' is not a time of day; write e.g. "
            '"09:00" or "22:30"',
            "bot.yaml:4: channels.alerts.digest.days[1]: "
            "expected one of 'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun'",
            "bot.yaml:4: channels.alerts.digest.kinds[0]: expected one of 'news', "
            "'session-reminder', 'session-change', 'clause-change', 'source-health' or "
            "'treaty-action'",
        ]
        or problems
    )
    assert any("bot.yaml:5: channels.alerts.quiet" in p and "different" in p for p in problems)
    assert (
        "bot.yaml:7: channels.ops.quiet.timezon: unknown key 'timezon'; did you mean 'timezone'?"
        in problems
    ), problems
