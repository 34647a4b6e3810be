"""/calendar.ics: the timeline as an iCalendar feed, served by the bot's real HTTP server and
read back as a calendar app would (icalendar, then recurring-ical-events)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import icalendar
import pytest
import recurring_ical_events
from multidict import CIMultiDict

from bot.app import CALENDAR_PATH, App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.domain.model import SessionEvent
from bot.domain.sessions import Revision
from bot.domain.text import render_plain
from bot.sources.calendar_export import event_uid, render_calendar
from bot.store.codec import snapshot_from_json
from bot.web import WebServer
from tests.conftest import ConfigFactory

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Vienna")

SESSIONS = """
sessions:
  - id: close
    title: Close of signature
    kind: deadline
    start: 2026-12-31
    location: UN Headquarters, New York
    url: https://treaties.un.org/close
  - id: ahc-8
    title: Ad Hoc Committee, eighth session
    start: 2027-01-11T10:00
    end: 2027-01-22T18:00
    timezone: America/New_York
    location: UN Headquarters, New York
    url: https://www.unodc.org/ahc-8
    notes: Plenary in Conference Room 4.
  - id: briefing
    title: Civil-society briefing
    kind: informal
    start: 2026-12-03T14:00
    end: 2026-12-03T15:00
    status: cancelled
"""

MEETINGS_ICS = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//example//meetings//EN
BEGIN:VEVENT
UID:weekly@example.org
SUMMARY:Coalition call
DTSTART:20261201T150000Z
DTEND:20261201T160000Z
RRULE:FREQ=WEEKLY;COUNT=3
END:VEVENT
BEGIN:VEVENT
UID:evil@example.org
SUMMARY:Side event\\nBEGIN:VALARM\\nTRIGGER:-PT5M\\nEND:VALARM
LOCATION:Vienna\\r\\nX-INJECTED:yes
DTSTART:20261205T090000Z
DTEND:20261205T100000Z
BEGIN:VALARM
ACTION:DISPLAY
TRIGGER:-PT15M
DESCRIPTION:an alarm of the source calendar
END:VALARM
END:VEVENT
END:VCALENDAR
"""


def write_config(config_dir: ConfigFactory, tmp_path: Path, *, public_url: str = "") -> Path:
    extra = f", public_url: {public_url}" if public_url else ""
    directory = config_dir(
        bot=f"""
        timezone: Europe/Vienna
        storage: {tmp_path / "state.json"}
        channels:
          alerts: {{}}
          ops: {{}}
        http: {{port: 0{extra}}}
        """,
        sessions=SESSIONS
        + "calendars:\n  - {id: meetings, url: meetings.ics, every: 1h, kind: informal}\n",
    )
    (directory / "meetings.ics").write_text(MEETINGS_ICS)
    return directory


class Served:
    """The bot's real HTTP server on a free port of 127.0.0.1, serving ``app``'s calendar."""

    def __init__(self, app: App) -> None:
        self.web = WebServer("127.0.0.1", 0, app.metrics, app.health_problems)
        self.web.serve_calendar(CALENDAR_PATH, app.calendar_ics)
        self.session: aiohttp.ClientSession | None = None

    async def get(self, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        assert self.session is not None
        url = f"http://127.0.0.1:{self.web.bound_port}{CALENDAR_PATH}"
        async with self.session.get(url, headers=headers) as resp:
            return resp.status, CIMultiDict(resp.headers), await resp.read()


@pytest.fixture
async def served() -> AsyncIterator[list[Served]]:
    started: list[Served] = []
    yield started
    for s in started:
        if s.session is not None:
            await s.session.close()
        await s.web.stop()


async def serve(app: App, registry: list[Served]) -> Served:
    s = Served(app)
    await s.web.start()
    s.session = aiohttp.ClientSession()
    registry.append(s)
    return s


HOSTILE = ("BEGIN:VALARM", "TRIGGER", "X-INJECTED", "END:VALARM")


def content_lines(body: bytes) -> list[str]:
    """The calendar's content lines, unfolded (RFC 5545 3.1)."""
    return body.decode().replace("\r\n ", "").replace("\r\n\t", "").split("\r\n")


def occurrences(body: bytes) -> dict[str, Any]:
    """UID -> VEVENT, as a calendar app expands the feed."""
    calendar = icalendar.Calendar.from_ical(body)
    expanded = recurring_ical_events.of(calendar).between(
        datetime(2026, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC)
    )
    return {str(e["UID"]): e for e in expanded}


def expected_start(event: SessionEvent) -> date | datetime:
    if event.all_day:
        zone = ZoneInfo(event.timezone) if event.timezone else TZ
        return event.start.astimezone(zone).date()
    return event.start


async def test_the_timeline_round_trips_through_calendar_ics(
    config_dir: ConfigFactory, tmp_path: Path, served: list[Served]
) -> None:
    clock = FixedClock(NOW)
    async with App(load_config(write_config(config_dir, tmp_path)), clock=clock) as app:
        report = await app.poll_round()
        assert report.failed == 0
        await app.evaluate()
        timeline = await app.timeline()
        assert len(timeline) == 7  # 3 written sessions, 3 weekly calls, 1 side event
        s = await serve(app, served)
        status, headers, body = await s.get()

    assert status == 200
    assert headers["Content-Type"] == "text/calendar; charset=utf-8"
    calendar = icalendar.Calendar.from_ical(body)
    assert str(calendar["VERSION"]) == "2.0"
    assert "Treaty Watch" in str(calendar["PRODID"])
    assert str(calendar["X-WR-CALNAME"]) == "Treaty Watch"
    assert calendar.walk("VALARM") == []
    assert not [line for line in content_lines(body) if line.startswith(HOSTILE)]

    found = occurrences(body)
    assert set(found) == {event_uid(e.key) for e in timeline}
    for event in timeline:
        vevent = found[event_uid(event.key)]
        assert str(vevent["SUMMARY"]) == event.title
        assert vevent["DTSTART"].dt == expected_start(event)
        assert int(vevent["SEQUENCE"]) == 0
        assert vevent["DTSTAMP"].dt == NOW  # the time it was first seen, not the request's
    by_title = {str(v["SUMMARY"]): v for v in found.values()}
    assert str(by_title["Civil-society briefing"]["STATUS"]) == "CANCELLED"
    assert str(by_title["Close of signature"]["STATUS"]) == "CONFIRMED"
    assert by_title["Close of signature"]["DTSTART"].dt == date(2026, 12, 31)
    assert by_title["Close of signature"]["DTEND"].dt == date(2027, 1, 1)
    eighth = by_title["Ad Hoc Committee, eighth session"]
    assert eighth["DTSTART"].dt == datetime(2027, 1, 11, 15, 0, tzinfo=UTC)  # 10:00 New York
    assert str(eighth["LOCATION"]) == "UN Headquarters, New York"
    assert str(eighth["URL"]) == "https://www.unodc.org/ahc-8"
    assert str(eighth["DESCRIPTION"]) == "Plenary in Conference Room 4."
    side = next(v for t, v in by_title.items() if t.startswith("Side event"))
    # the hostile text is a value, whole: no alarm, no property came out of it
    assert "BEGIN:VALARM" in str(side["SUMMARY"])
    assert "X-INJECTED" in str(side["LOCATION"])
    assert "X-INJECTED" not in side and side.subcomponents == []
    calls = [v for v in found.values() if str(v["SUMMARY"]) == "Coalition call"]
    first_call = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    assert sorted(v["DTSTART"].dt for v in calls) == [
        first_call + timedelta(weeks=n) for n in range(3)
    ]


async def test_unchanged_timeline_gives_the_same_bytes_and_304(
    config_dir: ConfigFactory, tmp_path: Path, served: list[Served]
) -> None:
    clock = FixedClock(NOW)
    async with App(load_config(write_config(config_dir, tmp_path)), clock=clock) as app:
        await app.poll_round()
        await app.evaluate()
        s = await serve(app, served)
        status, headers, first = await s.get()
        assert status == 200 and headers["ETag"].startswith('"')
        clock.set(NOW + timedelta(hours=5))  # time passes, nothing changes
        await app.poll_round()
        await app.evaluate()
        status, again, second = await s.get()
        assert status == 200 and second == first and again["ETag"] == headers["ETag"]
        status, not_modified, empty = await s.get(**{"If-None-Match": headers["ETag"]})
        assert status == 304 and empty == b"" and not_modified["ETag"] == headers["ETag"]
        status, _, _ = await s.get(**{"If-None-Match": '"something-else"'})
        assert status == 200


async def test_a_rescheduled_event_keeps_its_uid_and_raises_its_sequence(
    config_dir: ConfigFactory, tmp_path: Path, served: list[Served]
) -> None:
    clock = FixedClock(NOW)
    directory = write_config(config_dir, tmp_path)
    async with App(load_config(directory), clock=clock) as app:
        await app.evaluate()
        s = await serve(app, served)
        _, before_headers, before = await s.get()
        clock.set(NOW + timedelta(days=2))
        sessions = directory / "sessions.yaml"
        sessions.write_text(sessions.read_text().replace("2027-01-11T10:00", "2027-01-18T10:00", 1))
        assert await app.reload() == []  # applies the edit and evaluates it
        status, _, after = await s.get(**{"If-None-Match": before_headers["ETag"]})
        assert status == 200 and after != before
    uid = event_uid("sessions:ahc-8")
    old, new = occurrences(before)[uid], occurrences(after)[uid]
    assert new["DTSTART"].dt == datetime(2027, 1, 18, 15, 0, tzinfo=UTC)
    assert int(new["SEQUENCE"]) > int(old["SEQUENCE"]) == 0
    assert new["LAST-MODIFIED"].dt == NOW + timedelta(days=2)
    assert new["CREATED"].dt == old["CREATED"].dt == NOW
    unchanged = event_uid("sessions:close")
    assert occurrences(after)[unchanged].to_ical() == occurrences(before)[unchanged].to_ical()

    # the sequence is stored: a restarted bot serves the same calendar
    async with App(load_config(directory), clock=clock) as app:
        assert await app.calendar_ics() == after


def test_a_state_written_before_sequences_reads_as_never_changed() -> None:
    old = {
        "initialized": True,
        "events": {},
        "first_seen": {"sessions:close": "2026-11-28T09:00:00+00:00"},
    }
    snapshot = snapshot_from_json(old)
    assert snapshot.revision("sessions:close") == Revision(0, NOW, NOW)
    assert snapshot.revision("sessions:other") == Revision()


async def test_public_url_links_the_calendar_from_next_session_and_reminders(
    config_dir: ConfigFactory, tmp_path: Path
) -> None:
    link = "https://bot.example.org/calendar.ics"
    clock = FixedClock(NOW)
    async with App(load_config(write_config(config_dir, tmp_path)), clock=clock) as app:
        answer = await app.ask("next-session")
        assert link not in render_plain(answer.body)
    directory = write_config(config_dir, tmp_path, public_url="https://bot.example.org/")
    async with App(load_config(directory), clock=clock) as app:
        answer = await app.ask("next-session")
        assert "Subscribe to the timeline" in render_plain(answer.body)
        assert link in render_plain(answer.body)
        await app.evaluate()
        clock.set(datetime(2026, 12, 30, 23, 0, tzinfo=TZ))  # an hour before the close
        alerts = await app.evaluate()
    reminders = [a for a in alerts if a.kind == "session-reminder"]
    assert reminders and all(link in a.text for a in reminders)


def test_event_text_cannot_inject_properties_or_components() -> None:
    hostile = "Plenary\r\nBEGIN:VALARM\r\nTRIGGER:-PT5M\r\nACTION:AUDIO\r\nEND:VALARM"
    event = SessionEvent(
        key="cal:x",
        source="cal",
        title=hostile,
        start=NOW,
        end=NOW + timedelta(hours=1),
        location="Room 1\nSTATUS:CANCELLED",
        url="https://example.org/a\r\nATTACH:https://evil.example",
        description="one\rDTSTART:20000101T000000Z\x00\x1b[31m",
    )
    body = render_calendar([(event, Revision())], tz=TZ, prodid="-//test//EN")
    calendar = icalendar.Calendar.from_ical(body)
    (vevent,) = calendar.walk("VEVENT")
    assert calendar.walk("VALARM") == [] and vevent.subcomponents == []
    assert str(vevent["SUMMARY"]) == hostile.replace("\r\n", "\n")
    assert str(vevent["LOCATION"]) == "Room 1\nSTATUS:CANCELLED"
    assert str(vevent["STATUS"]) == "CONFIRMED"
    assert "URL" not in vevent and "ATTACH" not in vevent  # an address with a line break
    assert str(vevent["DESCRIPTION"]) == "one\nDTSTART:20000101T000000Z[31m"
    assert vevent["DTSTART"].dt == NOW
    starts = [line for line in content_lines(body) if line.startswith(("BEGIN:", "END:"))]
    assert starts == ["BEGIN:VCALENDAR", "BEGIN:VEVENT", "END:VEVENT", "END:VCALENDAR"]
    assert not [line for line in content_lines(body) if line.startswith(("ATTACH", "DTSTART:2000"))]


def test_all_day_events_are_dates_in_their_zone() -> None:
    start = datetime(2026, 12, 31, tzinfo=ZoneInfo("America/New_York")).astimezone(UTC)
    event = SessionEvent(
        key="sessions:close",
        source="sessions",
        title="Close of signature",
        start=start,
        end=start + timedelta(days=1),
        all_day=True,
        timezone="America/New_York",
        status="postponed",
    )
    body = render_calendar([(event, Revision(2, NOW, NOW))], tz=TZ, prodid="-//test//EN")
    (vevent,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
    assert vevent["DTSTART"].dt == date(2026, 12, 31)
    assert vevent["DTEND"].dt == date(2027, 1, 1)
    assert str(vevent["STATUS"]) == "TENTATIVE"
    assert str(vevent["SUMMARY"]) == "Close of signature (postponed)"
    assert int(vevent["SEQUENCE"]) == 2
