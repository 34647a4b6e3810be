"""Calendars end to end: versions of an .ics file become change alerts and reminders."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from tests.test_cli import cli

V1 = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//EN
X-WR-TIMEZONE:Europe/Vienna
BEGIN:VEVENT
UID:s1@test
SUMMARY:Cybercrime committee, first meeting
DTSTART;TZID=Europe/Vienna:20270111T100000
DTEND;TZID=Europe/Vienna:20270111T180000
LOCATION:Vienna International Centre
END:VEVENT
BEGIN:VEVENT
UID:s2@test
SUMMARY:Cybercrime committee, second meeting
DTSTART;TZID=Europe/Vienna:20270118T100000
DTEND;TZID=Europe/Vienna:20270118T180000
LOCATION:Vienna International Centre
END:VEVENT
BEGIN:VEVENT
UID:weekly@test
SUMMARY:Cybercrime coalition call
DTSTART;TZID=Europe/Vienna:20270105T150000
DTEND;TZID=Europe/Vienna:20270105T160000
RRULE:FREQ=WEEKLY;COUNT=4
EXDATE;TZID=Europe/Vienna:20270112T150000
END:VEVENT
END:VCALENDAR
"""

V2 = (
    V1.replace("20270111T100000", "20270113T100000")
    .replace("20270111T180000", "20270113T180000")
    .replace(
        "UID:s2@test\nSUMMARY:Cybercrime committee, second meeting\n",
        "UID:s2@test\nSUMMARY:Cybercrime committee, second meeting\nSTATUS:CANCELLED\n",
    )
    .replace(
        "END:VCALENDAR",
        "BEGIN:VEVENT\nUID:s3@test\nSUMMARY:Cybercrime committee, extra meeting\n"
        "DTSTART;TZID=Europe/Vienna:20270125T100000\nDTEND;TZID=Europe/Vienna:20270125T180000\n"
        "LOCATION:UN Headquarters\nEND:VEVENT\nEND:VCALENDAR",
    )
)


def test_calendar_versions(tmp_path: Path) -> None:
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        f"timezone: Europe/Vienna\nstorage: {tmp_path / 's.json'}\n"
        "channels: {alerts: {}, ops: {}}\nhttp: {port: 0}\n"
    )
    (config / "sessions.yaml").write_text(
        textwrap.dedent(
            """
            calendars:
              - {id: cal, url: committee.ics, every: 1h, match: [cybercrime]}
            """
        )
    )
    ics = config / "committee.ics"

    def once(now: str) -> list[dict[str, object]]:
        out = cli("once", "--config", str(config), "--format", "jsonl", "--now", now)
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    ics.write_text(V1)
    assert once("2026-12-01T09:00Z") == []  # the first listing is only remembered
    ask = cli("ask", "sessions", "10", "--config", str(config), "--now", "2026-12-01T09:00Z")
    assert ask.stdout.count("coalition call") == 3  # four weekly calls, one excluded

    ics.write_text("not a calendar at all")  # a broken version cancels nothing
    assert once("2026-12-02T09:00Z") == []
    ics.write_text("")
    assert once("2026-12-02T10:00Z") == []

    ics.write_text(V2)
    alerts = once("2026-12-03T09:00Z")
    titles = sorted(str(a["title"]) for a in alerts)
    assert titles == [
        "Session added: Cybercrime committee, extra meeting",
        "Session cancelled: Cybercrime committee, second meeting",
        "Session rescheduled: Cybercrime committee, first meeting",
    ]
    moved = next(a for a in alerts if "rescheduled" in str(a["title"]))
    assert "Mon 11 Jan 2027" in str(moved["text"]) and "Wed 13 Jan 2027" in str(moved["text"])
    assert once("2026-12-03T10:00Z") == []
    # the 14-day reminder of the rescheduled meeting comes at its new time, once; the call of
    # 5 January, whose 7-day moment passed while no one ran the bot, is reminded late, once
    due = once("2026-12-30T09:00Z")
    assert sorted(str(a["title"]) for a in due) == [
        "Session starts in 14 days: Cybercrime committee, first meeting",
        "Session starts in 6 days 5 hours: Cybercrime coalition call",
    ]
    assert "Sent late" in str(next(a for a in due if "call" in str(a["title"]))["text"])
    assert once("2026-12-30T09:05Z") == []
