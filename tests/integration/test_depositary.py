"""The depositary source end to end: ``App`` polls a record served by a real HTTP server on
loopback (or read from config/), posts treaty actions on the console, computes entry into
force onto the timeline, and answers ``ratifications`` and ``country``."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import icalendar
import pytest

from bot.app import App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.domain.text import render_plain
from tests.conftest import ConfigFactory
from tests.depositary_xml import Row, document, parties
from tests.integration.feedserver import FeedServer

DATA = Path(__file__).resolve().parent.parent / "data" / "depositary"
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
XML = "application/xml"
PAGE = "https://treaties.un.org/Pages/ViewDetails.aspx?src=TREATY&mtdsg_no=XVIII-16&chapter=18"


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


def treaty_yaml(url: str) -> str:
    return f"""
    depositary:
      url: {url}
      page: {PAGE}
      every: 6h
      channels: [alerts]
    entry_into_force: {{instruments: 40, days_after: 90}}
    """


class Bot:
    """One configuration, run ``once`` at chosen instants; what the console printed."""

    def __init__(self, directory: Path, clock: FixedClock) -> None:
        self.directory = directory
        self.clock = clock
        self.out = io.StringIO()

    async def once(self, at: datetime | None = None) -> list[dict[str, object]]:
        if at is not None:
            self.clock.set(at)
        self.out.seek(0)
        self.out.truncate()
        async with App(
            load_config(self.directory), clock=self.clock, fmt="jsonl", stream=self.out
        ) as app:
            report = await app.once()
        self.report = report
        return [json.loads(line) for line in self.out.getvalue().splitlines() if line.strip()]

    async def ask(self, text: str, at: datetime | None = None) -> str:
        if at is not None:
            self.clock.set(at)
        async with App(load_config(self.directory), clock=self.clock, stream=io.StringIO()) as app:
            answer = await app.ask(text)
        return answer.title + "\n" + render_plain(answer.body)

    async def calendar(self) -> bytes:
        async with App(load_config(self.directory), clock=self.clock, stream=io.StringIO()) as app:
            return await app.calendar_ics()


def make_bot(config_dir: ConfigFactory, url: str) -> Bot:
    return Bot(config_dir(treaty=treaty_yaml(url)), FixedClock(NOW))


def kinds(alerts: list[dict[str, object]], kind: str) -> list[str]:
    return [str(a["title"]) for a in alerts if a["kind"] == kind]


async def test_the_first_poll_remembers_then_each_action_is_posted_once(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    server.serve("/status.xml", document(parties(22)), content_type=XML)
    bot = make_bot(config_dir, server.url("/status.xml"))
    assert await bot.once() == []  # the first poll only remembers

    rows = [*parties(22), Row("Japan", None, date(2026, 12, 2), "a")]
    server.serve("/status.xml", document(rows, [("Japan", "Declaration on article 6.")]))
    alerts = await bot.once(NOW + timedelta(hours=6))
    actions = [a for a in alerts if a["kind"] == "treaty-action"]
    assert [a["title"] for a in actions] == [
        "Japan acceded to the Convention",
        "Japan made a declaration",
    ]
    first = actions[0]
    assert set(first) == {"kind", "id", "channel", "source", "title", "url", "text", "at"}
    assert first["channel"] == "alerts"
    assert first["source"] == "depositary"
    assert first["url"] == PAGE
    assert "22 of the 40 instruments needed for entry into force" in str(first["text"])
    assert first["at"] == "2026-12-03T15:00:00Z"

    assert await bot.once(NOW + timedelta(hours=12)) == []  # nothing twice


async def test_a_maintenance_page_or_a_truncated_table_changes_nothing_and_fails_the_poll(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    server.serve("/status.xml", document(parties(30)), content_type=XML)
    bot = make_bot(config_dir, server.url("/status.xml"))
    await bot.once()

    server.serve("/status.xml", (DATA / "maintenance.html").read_bytes(), content_type=XML)
    assert await bot.once(NOW + timedelta(hours=6)) == []
    (outcome,) = bot.report.outcomes
    assert outcome.outcome == "parse_error"
    assert outcome.error is not None and "HTML page" in outcome.error
    assert outcome.record.health.failures == 1

    server.serve("/status.xml", document(parties(15)), content_type=XML)  # lost half its rows
    assert await bot.once(NOW + timedelta(hours=12)) == []
    (outcome,) = bot.report.outcomes
    assert outcome.error is not None and "lost 15 of its 30 rows" in outcome.error
    assert outcome.record.health.failures == 2
    answer = await bot.ask("ratifications")
    assert "30 parties (29 instruments" in answer  # still the last good record
    assert "The latest poll failed" in answer

    # the complete record again: only what is new since the last good one is posted
    server.serve("/status.xml", document(parties(31)), content_type=XML)
    alerts = await bot.once(NOW + timedelta(hours=18))
    assert kinds(alerts, "treaty-action") == [
        "Peru signed the Convention",
        "Peru ratified the Convention",
    ]
    (outcome,) = bot.report.outcomes
    assert outcome.error is None and outcome.record.health.failures == 0


async def test_the_40th_instrument_puts_entry_into_force_on_the_timeline(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    rows = parties(41)  # one succession among them: the 41st row is the 40th counted
    server.serve("/status.xml", document(rows[:40]), content_type=XML)
    bot = make_bot(config_dir, server.url("/status.xml"))
    await bot.once()
    assert "1 more instrument needed" in await bot.ask("ratifications")

    server.serve("/status.xml", document(rows), content_type=XML)
    alerts = await bot.once(NOW + timedelta(hours=6))
    deposit = rows[40].consent
    assert deposit is not None
    in_force = deposit + timedelta(days=90)
    fortieth = rows[40].name
    assert kinds(alerts, "treaty-action") == [
        f"{fortieth} signed the Convention",
        f"{fortieth} ratified the Convention",
    ]
    action = alerts[[a["title"] for a in alerts].index(f"{fortieth} ratified the Convention")]
    assert f"the Convention enters into force on {in_force.day} {in_force:%b %Y}" in str(
        action["text"]
    )
    assert sorted(kinds(alerts, "session-change")) == [
        "Deadline added: Latest date for the first Conference of the States Parties",
        "Deadline added: The Convention enters into force",
    ]

    answer = await bot.ask("next-session")
    assert "The Convention enters into force" in answer
    sessions = await bot.ask("sessions")
    assert "first Conference of the States Parties" in sessions
    ratifications = await bot.ask("ratifications")
    assert f"enters into force on {in_force.day} {in_force:%b %Y}" in ratifications
    ics = icalendar.Calendar.from_ical(await bot.calendar())
    days = {str(e["SUMMARY"]): e.decoded("DTSTART") for e in ics.walk("VEVENT")}
    assert days == {
        "The Convention enters into force": in_force,
        "Latest date for the first Conference of the States Parties": in_force.replace(
            year=in_force.year + 1
        ),
    }

    # the reminder ladder applies: 14 days before, in the depositary's time zone
    midnight = datetime.combine(in_force, datetime.min.time(), ZoneInfo("America/New_York"))
    reminders = await bot.once(midnight - timedelta(days=14) + timedelta(minutes=1))
    assert [t for t in kinds(reminders, "session-reminder") if "enters into force" in t], reminders

    # a record corrected back below the threshold takes the projection away, saying so
    server.serve("/status.xml", document(rows[:40]), content_type=XML)
    corrected = await bot.once(midnight - timedelta(days=13))
    removed = kinds(corrected, "session-change")
    assert len(removed) == 2 and all("removed" in t.casefold() for t in removed), removed
    assert "The Convention enters into force" not in await bot.ask("sessions")


async def test_the_record_may_be_a_file_in_config(config_dir: ConfigFactory) -> None:
    directory = config_dir(treaty=treaty_yaml("status.xml"))
    (directory / "status.xml").write_bytes((DATA / "XVIII-16.en.xml").read_bytes())
    bot = Bot(directory, FixedClock(NOW))
    assert await bot.once() == []
    answer = await bot.ask("ratifications")
    assert "9 signatories, 6 parties (4 instruments counting" in answer
    country = await bot.ask("country turkey")
    assert country.startswith("Türkiye and the Convention")
    assert "Signature: 26 Oct 2025" in country
    usa = await bot.ask("country US")
    assert usa.startswith("United States of America and the Convention")
    germany = await bot.ask("country germany")
    assert "Declaration: Declaration: The Federal Republic" in germany
    assert PAGE in germany
    unknown = await bot.ask("country Germny")
    assert "No participant of the treaty matches" in unknown and "country Germany" in unknown


async def test_without_the_source_the_commands_say_how_to_add_it(
    config_dir: ConfigFactory,
) -> None:
    bot = Bot(config_dir(), FixedClock(NOW))
    assert "config/treaty.yaml" in await bot.ask("ratifications")
    assert "config/treaty.yaml" in await bot.ask("country germany")


async def test_treaty_yaml_is_checked_and_reloaded_like_the_other_files(
    config_dir: ConfigFactory, server: FeedServer
) -> None:
    from bot.errors import ConfigError

    directory = config_dir()
    server.serve("/status.xml", document(parties(3)), content_type=XML)
    async with App(load_config(directory), clock=FixedClock(NOW), stream=io.StringIO()) as app:
        assert [s.id for s in app.sources] == []
        (directory / "treaty.yaml").write_text(
            "depositary:\n  url: " + server.url("/status.xml") + "\n  evry: 6h\n"
        )
        problems = await app.reload()
        assert [str(p) for p in problems] == [
            "treaty.yaml:3: depositary.evry: unknown key 'evry'; did you mean 'every'?"
        ]
        assert app.config.depositary is None  # the last good configuration is kept
        (directory / "treaty.yaml").write_text(treaty_yaml(server.url("/status.xml")))
        assert await app.reload() == []
        assert [s.id for s in app.sources] == ["depositary"]
        report = await app.poll_round()
        assert [o.outcome for o in report.outcomes] == ["ok"]
        assert "3 parties" in render_plain((await app.ask("ratifications")).body)

    (directory / "treaty.yaml").write_text("depositary: {url: status.xml, channels: [nowhere]}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(directory)
    assert [str(p) for p in raised.value.problems] == [
        "treaty.yaml:1: depositary.channels[0]: channel 'nowhere' is not defined in bot.yaml "
        "channels (defined: alerts, ops)"
    ]
