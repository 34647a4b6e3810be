"""Calendars: time zones, repetitions, changes, broken and hostile files (reliability 35-37).

Fixtures are in tests/data/calendars/; the large and hostile files are generated here. The
tests assert counts and caps, never wall time. Tests that must read everything of a big file
pass a generous ``deadline_seconds``, so that a slow machine cannot turn a count into a cut;
the deadline itself is tested with ``deadline_seconds=0``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.domain.matching import Matcher
from bot.domain.model import SessionEvent
from bot.domain.sessions import Snapshot, plan_changes
from bot.polling import CALENDAR_AHEAD, CALENDAR_MAX_EVENTS, CALENDAR_PAST
from bot.sources.calendars import CalendarFailed, ParsedCalendar, parse_calendar

DATA = Path(__file__).resolve().parent.parent / "data" / "calendars"
BERLIN = ZoneInfo("Europe/Berlin")
YEAR_START = datetime(2026, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2027, 1, 1, tzinfo=UTC)
GENEROUS = 600.0


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def calendar(*events: str, header: str = "") -> bytes:
    head = f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\n{header}"
    return (head + "".join(events) + "END:VCALENDAR\r\n").encode()


def vevent(uid: str, dtstart: str, *lines: str, summary: str | None = None) -> str:
    body = "".join(f"{line}\r\n" for line in lines)
    return (
        f"BEGIN:VEVENT\r\nUID:{uid}\r\nSUMMARY:{summary or uid}\r\nDTSTART:{dtstart}\r\n"
        f"{body}END:VEVENT\r\n"
    )


def attempt(body: bytes | str, **overrides: Any) -> ParsedCalendar | CalendarFailed:
    data = (DATA / body).read_bytes() if isinstance(body, str) else body
    arguments: dict[str, Any] = {
        "source": "un",
        "default_tz": BERLIN,
        "window_start": YEAR_START,
        "window_end": YEAR_END,
    }
    arguments.update(overrides)
    return parse_calendar(data, **arguments)


def parse(body: bytes | str, **overrides: Any) -> ParsedCalendar:
    result = attempt(body, **overrides)
    assert isinstance(result, ParsedCalendar), result
    return result


def by_key(parsed: ParsedCalendar) -> dict[str, SessionEvent]:
    events = {e.key: e for e in parsed.events}
    assert len(events) == len(parsed.events), "keys must be unique"
    return events


def spans(parsed: ParsedCalendar) -> list[tuple[str, datetime, datetime | None]]:
    return [(e.key, e.start, e.end) for e in parsed.events]


# ---------------------------------------------------------------------------- time zones


def test_a_custom_vtimezone_gives_the_instants_of_its_rules() -> None:
    parsed = parse("custom_vtimezone.ics", default_tz=ZoneInfo("Europe/Lisbon"))
    events = by_key(parsed)

    winter = events["un:winter@example.org"]
    summer = events["un:summer@example.org"]
    assert (winter.start, winter.end) == (at("2026-02-10T09:00:00Z"), at("2026-02-10T11:00:00Z"))
    assert (summer.start, summer.end) == (at("2026-07-07T08:00:00Z"), at("2026-07-07T10:00:00Z"))
    assert winter.timezone is None  # a private zone name is no IANA name
    bangkok = events["un:iana@example.org"]
    assert bangkok.start == at("2026-07-07T03:00:00Z")
    assert bangkok.timezone == "Asia/Bangkok"


def test_a_vtimezone_with_a_runaway_rule_is_refused_and_its_times_read_as_floating() -> None:
    parsed = parse("custom_vtimezone.ics", default_tz=ZoneInfo("Europe/Lisbon"))

    assert any("Treaty Test Zone/Hostile" in w and "ignored" in w for w in parsed.warnings)
    # 10:00 read in the default zone, Lisbon, summer time (+01:00)
    assert by_key(parsed)["un:hostile-zone@example.org"].start == at("2026-07-07T09:00:00Z")
    assert not parsed.truncated


def test_floating_times_are_read_in_x_wr_timezone_not_the_default() -> None:
    parsed = parse("x_wr_timezone.ics", default_tz=BERLIN)
    events = by_key(parsed)

    assert events["un:floating@example.org"].start == at("2026-02-10T14:00:00Z")  # 09:00 EST
    assert events["un:summer-floating@example.org"].start == at("2026-07-14T13:00:00Z")  # EDT
    assert events["un:utc@example.org"].start == at("2026-02-10T20:00:00Z")  # UTC stays UTC
    deadline = events["un:deadline@example.org"]
    assert deadline.all_day
    assert (deadline.start, deadline.end) == (
        at("2026-03-01T05:00:00Z"),
        at("2026-03-02T05:00:00Z"),
    )
    assert {e.timezone for e in parsed.events} == {"America/New_York"}
    assert parsed.warnings == ()


def test_floating_times_without_x_wr_timezone_are_read_in_the_default_zone() -> None:
    body = calendar(vevent("call", "20260210T090000", "DTEND:20260210T100000"))

    (event,) = parse(body, default_tz=ZoneInfo("Asia/Tokyo")).events

    assert (event.start, event.end) == (at("2026-02-10T00:00:00Z"), at("2026-02-10T01:00:00Z"))
    assert event.timezone is None


def test_an_unknown_x_wr_timezone_is_reported_and_the_default_zone_used() -> None:
    body = calendar(vevent("call", "20260210T090000"), header="X-WR-TIMEZONE:Europe/Berln\r\n")

    parsed = parse(body, default_tz=BERLIN)

    assert parsed.events[0].start == at("2026-02-10T08:00:00Z")
    assert parsed.events[0].timezone is None
    assert any("Europe/Berln" in w for w in parsed.warnings)


def test_all_day_events_are_midnights_in_the_calendar_zone_with_an_exclusive_end() -> None:
    events = by_key(parse("all_day.ics", default_tz=BERLIN))

    one_day = events["un:one-day@example.org"]
    assert one_day.all_day
    assert (one_day.start, one_day.end) == (at("2026-05-03T22:00:00Z"), at("2026-05-04T22:00:00Z"))
    session = events["un:session@example.org"]
    assert session.all_day
    assert (session.start, session.end) == (at("2026-07-19T22:00:00Z"), at("2026-07-31T22:00:00Z"))
    assert session.location == "Conference Room 4, UN Headquarters, New York"
    no_end = events["un:no-end@example.org"]  # a date without DTEND lasts one day
    assert (no_end.start, no_end.end) == (at("2026-09-14T22:00:00Z"), at("2026-09-15T22:00:00Z"))


def test_local_times_on_dst_change_days_resolve_as_fold_0() -> None:
    events = by_key(parse("dst_edges.ics"))

    # 02:30 does not exist on 2026-03-29 in Berlin: read with the winter offset, i.e. 03:30 CEST
    spring = events["un:spring-forward@example.org"]
    assert spring.start == at("2026-03-29T01:30:00Z")
    assert spring.start.astimezone(BERLIN).time() == time(3, 30)
    assert spring.end == at("2026-03-29T02:00:00Z")
    # 02:30 happens twice on 2026-10-25: the first one, still summer time (+02:00)
    fall = events["un:fall-back@example.org"]
    assert fall.start == at("2026-10-25T00:30:00Z")
    assert fall.end == at("2026-10-25T03:00:00Z")
    # a daily 02:30 with DURATION:PT30M across the change keeps its length
    daily = [e for e in events.values() if e.key.startswith("un:daily-0230@")]
    assert [(e.start, e.end) for e in daily] == [
        (at("2026-03-28T01:30:00Z"), at("2026-03-28T02:00:00Z")),
        (at("2026-03-29T01:30:00Z"), at("2026-03-29T02:00:00Z")),
        (at("2026-03-30T00:30:00Z"), at("2026-03-30T01:00:00Z")),
    ]


# ---------------------------------------------------------------------------- repetitions


WEEKLY = "un:weekly-consultations@example.org"


def test_a_weekly_rule_with_an_exdate_skips_the_excluded_occurrence() -> None:
    parsed = parse("weekly_exdate.ics")

    assert [e.key for e in parsed.events] == [
        f"{WEEKLY}@2026-03-03T09:00:00Z",
        f"{WEEKLY}@2026-03-10T09:00:00Z",
        f"{WEEKLY}@2026-03-24T09:00:00Z",
        f"{WEEKLY}@2026-03-31T08:00:00Z",
        f"{WEEKLY}@2026-04-07T08:00:00Z",
    ]
    assert all(e.location == "Room XXIV" and e.timezone == "Europe/Berlin" for e in parsed.events)
    assert not parsed.truncated


def test_a_weekly_event_keeps_its_local_time_across_the_dst_change() -> None:
    parsed = parse("weekly_exdate.ics")

    assert {e.start.astimezone(BERLIN).time() for e in parsed.events} == {time(10, 0)}
    assert [e.start.hour for e in parsed.events] == [9, 9, 9, 8, 8]  # UTC moves by an hour
    assert all(
        e.end is not None and e.end - e.start == timedelta(minutes=90) for e in parsed.events
    )


PLENARY = "un:ahc-plenary@example.org"


def test_a_moved_occurrence_appears_once_at_its_new_time_with_the_key_of_its_slot() -> None:
    parsed = parse("moved_occurrence.ics")
    events = by_key(parsed)

    # the override names its slot in New York time (08:00 EDT = 14:00 CEST = 12:00 UTC)
    moved = events[f"{PLENARY}@2026-05-11T12:00:00Z"]
    assert (moved.start, moved.end) == (at("2026-05-12T14:30:00Z"), at("2026-05-12T16:30:00Z"))
    assert moved.title == "Ad Hoc Committee plenary (moved to Tuesday)"
    assert not [e for e in parsed.events if e.start == at("2026-05-11T12:00:00Z")]
    assert len(parsed.events) == 9  # 04.05 to 29.06, weekly


def test_a_cancelled_occurrence_is_kept_with_its_status() -> None:
    events = by_key(parse("moved_occurrence.ics"))

    cancelled = events[f"{PLENARY}@2026-05-25T12:00:00Z"]
    assert cancelled.status == "cancelled"
    assert events[f"{PLENARY}@2026-05-18T12:00:00Z"].status == "scheduled"


def test_a_thisandfuture_change_moves_the_rest_of_the_series_and_keeps_their_keys() -> None:
    events = by_key(parse("moved_occurrence.ics"))

    for slot, new_start in [
        ("2026-06-15T12:00:00Z", "2026-06-15T13:00:00Z"),
        ("2026-06-22T12:00:00Z", "2026-06-22T13:00:00Z"),
        ("2026-06-29T12:00:00Z", "2026-06-29T13:00:00Z"),
    ]:
        event = events[f"{PLENARY}@{slot}"]
        assert event.start == at(new_start)
        assert event.title == "Ad Hoc Committee plenary (new hour)"
    assert events[f"{PLENARY}@2026-06-08T12:00:00Z"].start == at("2026-06-08T12:00:00Z")


def test_a_floating_recurrence_id_names_a_slot_in_the_series_zone() -> None:
    body = calendar(
        vevent("weekly", "20260504T140000", "RRULE:FREQ=WEEKLY;COUNT=3").replace(
            "DTSTART:", "DTSTART;TZID=Europe/Berlin:"
        ),
        vevent(
            "weekly",
            "20260512T150000Z",
            "RECURRENCE-ID:20260511T140000",
            summary="moved",
        ),
    )

    events = by_key(parse(body, default_tz=ZoneInfo("Asia/Tokyo")))

    assert sorted(events) == [
        "un:weekly@2026-05-04T12:00:00Z",
        "un:weekly@2026-05-11T12:00:00Z",
        "un:weekly@2026-05-18T12:00:00Z",
    ]
    assert events["un:weekly@2026-05-11T12:00:00Z"].start == at("2026-05-12T15:00:00Z")


def test_status_cancelled_and_tentative_are_kept_and_the_rest_is_scheduled() -> None:
    events = by_key(parse("statuses.ics"))

    assert {key: e.status for key, e in events.items()} == {
        "un:confirmed@example.org": "scheduled",
        "un:cancelled@example.org": "cancelled",
        "un:tentative@example.org": "tentative",
        "un:no-status@example.org": "scheduled",
    }
    assert events["un:no-status@example.org"].end is None  # no DTEND, no DURATION
    assert {e.kind for e in events.values()} == {"session"}


def test_the_kind_comes_from_the_argument() -> None:
    parsed = parse("statuses.ics", kind="informal")

    assert {e.kind for e in parsed.events} == {"informal"}


def test_what_is_over_is_left_out_and_repetitions_stop_at_the_window_end() -> None:
    parsed = parse(
        "window_edges.ics",
        window_start=at("2026-03-01T00:00:00Z"),
        window_end=at("2026-04-01T00:00:00Z"),
    )

    # "before" and "ends-at-start" are over; single events after the window are kept
    assert spans(parsed) == [
        ("un:ongoing@example.org", at("2026-02-24T23:00:00Z"), at("2026-03-03T23:00:00Z")),
        ("un:at-start@example.org", at("2026-03-01T00:00:00Z"), None),
        (
            "un:fortnightly@example.org@2026-03-02T15:00:00Z",
            at("2026-03-02T15:00:00Z"),
            at("2026-03-02T16:00:00Z"),
        ),
        ("un:inside@example.org", at("2026-03-15T09:00:00Z"), at("2026-03-15T10:00:00Z")),
        (
            "un:fortnightly@example.org@2026-03-16T15:00:00Z",
            at("2026-03-16T15:00:00Z"),
            at("2026-03-16T16:00:00Z"),
        ),
        (
            "un:fortnightly@example.org@2026-03-30T15:00:00Z",
            at("2026-03-30T15:00:00Z"),
            at("2026-03-30T16:00:00Z"),
        ),
        ("un:at-end@example.org", at("2026-04-01T00:00:00Z"), at("2026-04-01T01:00:00Z")),
        ("un:after@example.org", at("2026-04-05T09:00:00Z"), at("2026-04-05T10:00:00Z")),
    ]
    assert not parsed.truncated


# ---------------------------------------------------------------------------- far ahead


POLLED = at("2026-03-01T09:00:00Z")
BRIEFING = "un:briefing@example.org"


def as_polled(now: datetime) -> dict[str, Any]:
    """The window and cap with which the bot reads a calendar at ``now``."""
    return {
        "window_start": now - CALENDAR_PAST,
        "window_end": now + CALENDAR_AHEAD,
        "max_events": CALENDAR_MAX_EVENTS,
    }


def test_a_single_event_far_beyond_the_window_is_listed() -> None:
    parsed = parse("far_ahead.ics", **as_polled(POLLED))
    events = by_key(parsed)

    review = events["un:review-conference@example.org"]
    assert review.start - POLLED > timedelta(days=500)
    assert (review.start, review.end) == (at("2027-09-20T08:00:00Z"), at("2027-09-20T16:00:00Z"))
    assert review.location == "Vienna International Centre"
    signature = events["un:signature@example.org"]  # all day, 685 days ahead
    assert signature.all_day
    assert (signature.start, signature.end) == (
        at("2028-01-14T23:00:00Z"),
        at("2028-01-15T23:00:00Z"),
    )
    assert "un:held-long-ago@example.org" not in events  # what is over stays out
    assert not parsed.truncated


def test_a_repeating_event_is_still_expanded_only_up_to_the_window_end() -> None:
    window_end = POLLED + CALENDAR_AHEAD  # 2027-04-05T09:00Z
    parsed = parse("far_ahead.ics", **as_polled(POLLED))

    generated = [e for e in parsed.events if e.title == "Monthly briefing"]
    # monthly without end from 2 March 2026; the one of 2 May 2026 was postponed
    months = ["2026-03", "2026-04", *(f"2026-{m:02d}" for m in range(6, 13))]
    months += [f"2027-{m:02d}" for m in range(1, 5)]
    assert [e.key for e in generated] == [f"{BRIEFING}@{m}-02T13:00:00Z" for m in months]
    assert all(e.start < window_end for e in generated)
    # the postponed one is a one-off: listed where it went, under the key of its slot
    postponed = by_key(parsed)[f"{BRIEFING}@2026-05-02T13:00:00Z"]
    assert postponed.title == "Monthly briefing (postponed)"
    assert postponed.start == at("2027-11-02T13:00:00Z")
    assert not parsed.truncated


def test_an_event_far_ahead_is_known_at_once_and_never_reported_as_added() -> None:
    body = calendar(
        vevent("review", "20270920T080000Z", "DTEND:20270920T160000Z"),
        vevent("call", "20260305T150000Z", "RRULE:FREQ=WEEKLY;COUNT=3"),
        vevent("call", "20271005T150000Z", "RECURRENCE-ID:20260312T150000Z", summary="later"),
    )

    def poll(body: bytes, now: datetime, snapshot: Snapshot) -> tuple[Snapshot, list[str]]:
        parsed = parse(body, **as_polled(now))
        plan = plan_changes(
            "un", snapshot, parsed.events, now, BERLIN, complete=not parsed.truncated
        )
        return plan.snapshot, [alert.title for alert in plan.alerts]

    first, _ = poll(body, POLLED, Snapshot())
    assert {"un:review", "un:call@2026-03-12T15:00:00Z"} <= set(first.events)
    # polled every 30 days, 568 days ahead at first, then inside 400 days, then over
    snapshot, titles = first, []
    for month in range(1, 21):
        snapshot, alerts = poll(body, POLLED + timedelta(days=30 * month), snapshot)
        titles += alerts
    assert titles == []
    # while still far ahead, a change to it is reported
    moved = body.replace(b"20270920T", b"20270921T")
    _, alerts = poll(moved, POLLED + timedelta(days=1), first)
    assert alerts == ["Session rescheduled: review"]


def test_a_series_coming_into_the_window_is_not_added_but_a_new_one_is() -> None:
    monthly = vevent("monthly", "20260402T090000Z", "RRULE:FREQ=MONTHLY")
    body = calendar(monthly)

    def poll(body: bytes, now: datetime, snapshot: Snapshot) -> tuple[Snapshot, list[str]]:
        parsed = parse(body, **as_polled(now))
        plan = plan_changes(
            "un", snapshot, parsed.events, now, BERLIN, complete=not parsed.truncated
        )
        return plan.snapshot, [alert.title for alert in plan.alerts]

    snapshot, _ = poll(body, POLLED, Snapshot())
    titles: list[str] = []
    for month in range(1, 5):  # each month one more occurrence comes within 400 days
        before = set(snapshot.events)
        snapshot, alerts = poll(body, POLLED + timedelta(days=30 * month), snapshot)
        assert set(snapshot.events) - before, "the window moved on: a later occurrence"
        titles += alerts
    assert titles == []
    # a series added to the calendar is announced, once, by its first occurrence
    later = POLLED + timedelta(days=150)
    weekly = vevent("weekly", "20261110T140000Z", "RRULE:FREQ=WEEKLY;COUNT=3")
    _, alerts = poll(calendar(monthly, weekly), later, snapshot)
    assert alerts == ["Session added: weekly"] * 3
    # an occurrence put back between known ones (an EXDATE lifted) is announced
    gap = calendar(
        vevent("monthly", "20260402T090000Z", "RRULE:FREQ=MONTHLY", "EXDATE:20270402T090000Z")
    )
    without, _ = poll(gap, later, snapshot)
    _, alerts = poll(body, later + timedelta(hours=1), without)
    assert alerts == ["Session added: monthly"]


def test_the_match_filter_reads_summary_and_description() -> None:
    parsed = parse("match_filter.ics", match=Matcher.build(["cybercrime"], ["informal"]))

    assert [e.key for e in parsed.events] == [
        "un:in-description@example.org",
        "un:session@example.org",
    ]
    assert parsed.events[1].title == "Ad Hoc Committee on Cybercrime, sixth session"


# ---------------------------------------------------------------------------- text


def test_text_fields_come_out_plain() -> None:
    events = by_key(parse("text_fields.ics"))

    html = events["un:html@example.org"]
    assert html.title == "Informal consultations on Article 23"
    assert html.description == "Chair's revised text Scope Safeguards & conditions"
    assert html.location == "Room, XXIV"
    assert html.url == "https://www.unodc.org/unodc/en/cybercrime/ad_hoc_committee/home"
    hostile = events["un:hostile-text@example.org"]
    assert hostile.title == "Bell and escape[31m sequences"  # control characters dropped
    assert hostile.description == "Plain text with < and > but no tags, two lines"
    assert hostile.url is None  # javascript: is no link


def test_an_event_without_uid_gets_a_stable_key_from_summary_and_start() -> None:
    def keys(body: bytes) -> list[str]:
        return [e.key for e in parse(body).events if e.key.startswith("un:sha256:")]

    (first,) = keys((DATA / "text_fields.ics").read_bytes())
    (again,) = keys((DATA / "text_fields.ics").read_bytes())
    (moved,) = keys((DATA / "text_fields.ics").read_bytes().replace(b"20260603T08", b"20260603T09"))
    assert first == again
    assert moved != first
    assert by_key(parse("text_fields.ics"))[first].title == "(untitled)"


def test_a_long_description_is_cut() -> None:
    body = calendar(vevent("long", "20260601T080000Z", "DESCRIPTION:" + "word " * 2000))

    (event,) = parse(body).events

    assert len(event.description) <= 2000
    assert event.description.endswith("…")


# ---------------------------------------------------------------------------- hostile


def test_line_endings_folding_and_concatenated_calendars_are_read() -> None:
    lone_cr = calendar(vevent("cr", "20260512T120000Z")).replace(b"\r\n", b"\r")
    lf_folded = (
        calendar(vevent("lf", "20260512T120000Z"))
        .replace(b"\r\n", b"\n")
        .replace(
            b"SUMMARY:lf",
            b"SUMMARY:caf\xc3\n \xa9 au lait",  # folded inside a UTF-8 character
        )
    )
    two = calendar(vevent("first", "20260512T120000Z")) + calendar(
        vevent("second", "20260513T120000Z")
    )

    assert [e.key for e in parse(lone_cr).events] == ["un:cr"]
    assert [e.title for e in parse(lf_folded).events] == ["café au lait"]
    assert [e.key for e in parse(two).events] == ["un:first", "un:second"]


def test_occurrences_at_the_same_instant_are_cut_together_then_by_key() -> None:
    body = calendar(*(vevent(f"e{n}", "20260512T120000Z") for n in (3, 1, 2)))

    parsed = parse(body, max_events=2)

    assert [e.key for e in parsed.events] == ["un:e1", "un:e2"]
    assert parsed.truncated


def test_secondly_without_end_is_capped_at_max_events() -> None:
    body = calendar(
        vevent("every-second", "20260301T000000Z", "RRULE:FREQ=SECONDLY"),
        vevent("plenary", "20260401T100000Z"),
    )

    parsed = parse(body)

    assert len(parsed.events) == 2000
    assert parsed.truncated
    assert any("more than 2000 occurrences" in w for w in parsed.warnings)
    assert parsed.events[0].key == "un:every-second@2026-03-01T00:00:00Z"
    assert parsed.events[-1].start == at("2026-03-01T00:33:19Z")
    assert len(by_key(parsed)) == 2000


def test_a_dense_series_that_began_long_before_the_window_is_skipped_the_rest_kept() -> None:
    body = calendar(
        vevent("every-second-since-2020", "20200101T000000Z", "RRULE:FREQ=SECONDLY"),
        vevent("plenary", "20260401T100000Z"),
    )

    parsed = parse(body)

    assert [e.key for e in parsed.events] == ["un:plenary"]
    assert parsed.truncated  # the listing lacks a series: nothing in it may count as removed
    assert any("'every-second-since-2020' skipped" in w for w in parsed.warnings)


def test_count_of_a_million_is_bounded() -> None:
    minutely = calendar(vevent("minutely", "20260301T000000Z", "RRULE:FREQ=MINUTELY;COUNT=1000000"))
    daily = calendar(vevent("daily", "20200301T090000Z", "RRULE:FREQ=DAILY;COUNT=1000000"))

    capped = parse(minutely)
    windowed = parse(daily)

    assert len(capped.events) == 2000
    assert capped.truncated
    assert len(windowed.events) == 365  # one a day in 2026, from a series begun in 2020
    assert not windowed.truncated


def test_ten_thousand_events_are_all_read_or_capped() -> None:
    start = datetime(2026, 1, 2, tzinfo=UTC)
    body = calendar(
        *(
            vevent(f"e{n:05d}", (start + timedelta(minutes=47 * n)).strftime("%Y%m%dT%H%M%SZ"))
            for n in range(10_000)
        )
    )

    everything = parse(body, max_events=10_000, deadline_seconds=GENEROUS)
    capped = parse(body, deadline_seconds=GENEROUS)

    assert len(everything.events) == 10_000
    assert not everything.truncated
    assert [e.key for e in capped.events] == [f"un:e{n:05d}" for n in range(2000)]
    assert capped.truncated


def test_ten_thousand_single_events_after_the_window_are_capped() -> None:
    start = YEAR_END + timedelta(days=400)
    body = calendar(
        *(
            vevent(
                f"e{n:05d}",
                (start + timedelta(minutes=47 * n)).strftime("%Y%m%dT%H%M%SZ"),
                summary=f"Session {n}",
            )
            for n in range(10_000)
        )
    )

    capped = parse(body, deadline_seconds=GENEROUS)
    filtered = parse(
        body, max_events=100, match=Matcher.build(["session"], []), deadline_seconds=GENEROUS
    )

    assert [e.key for e in capped.events] == [f"un:e{n:05d}" for n in range(2000)]
    assert capped.truncated
    assert [e.key for e in filtered.events] == [f"un:e{n:05d}" for n in range(100)]
    assert filtered.truncated
    assert any("only the first 1000 were read" in w for w in filtered.warnings)


def test_a_twenty_megabyte_file_is_read_within_its_bounds() -> None:
    start = datetime(2026, 1, 2, tzinfo=UTC)
    padding = "DESCRIPTION:" + "x" * 1000
    events = [
        vevent(f"e{n:05d}", (start + timedelta(minutes=3 * n)).strftime("%Y%m%dT%H%M%SZ"), padding)
        for n in range(19_000)
    ]
    body = calendar(*events)
    assert len(body) > 20_000_000

    parsed = parse(body, max_events=100, deadline_seconds=GENEROUS)

    assert [e.key for e in parsed.events] == [f"un:e{n:05d}" for n in range(100)]
    assert parsed.truncated


def test_the_deadline_stops_the_work_and_says_so() -> None:
    parsed = parse("weekly_exdate.ics", deadline_seconds=0)

    assert parsed.truncated
    assert any("time limit" in w for w in parsed.warnings)


# ---------------------------------------------------------------------------- broken


def test_broken_events_are_skipped_with_a_warning_naming_their_uid() -> None:
    parsed = parse("broken_events.ics")

    assert [e.key for e in parsed.events] == [
        "un:good-before@example.org",
        "un:junk-line@example.org",  # a junk line is dropped, the event kept
        "un:good-after@example.org",
    ]
    for uid in [
        "no-dtstart@example.org",
        "bad-dtstart@example.org",
        "misspelt-rrule@example.org",
        "bad-until@example.org",
        "never@example.org",
        "never-ends@example.org",
    ]:
        assert [w for w in parsed.warnings if f"'{uid}' skipped" in w], uid
    assert any("BYDAYS" in w for w in parsed.warnings)
    assert len(parsed.warnings) == 6
    assert not parsed.truncated


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "not an iCalendar file: the response was empty"),
        (b" \r\n\r\n", "not an iCalendar file: the response was empty"),
        (
            (DATA / "html_page.ics").read_bytes(),
            "not an iCalendar file: the server sent an HTML page",
        ),
        (b'{"events": []}', "not an iCalendar file: it looks like JSON"),
        (b"\x00\xffjunk\x89PNG", "not an iCalendar file: it does not begin with BEGIN:VCALENDAR"),
        (
            b"BEGIN:VEVENT\r\nUID:x\r\nDTSTART:20260101T100000Z\r\nEND:VEVENT\r\n",
            "not an iCalendar file: it does not begin with BEGIN:VCALENDAR",
        ),
        (
            (DATA / "weekly_exdate.ics").read_bytes().replace(b"END:VCALENDAR\r\n", b""),
            "not a complete iCalendar file: END:VCALENDAR is missing",
        ),
        (b"BEGIN:VCALENDAR\r\n", "not a complete iCalendar file"),
    ],
)
def test_what_is_not_icalendar_is_a_failure(body: bytes, reason: str) -> None:
    result = attempt(body)

    assert isinstance(result, CalendarFailed)
    assert result.reason.startswith(reason)


def test_a_non_gregorian_calendar_is_a_failure() -> None:
    result = attempt(calendar(vevent("x", "20260601T080000Z"), header="CALSCALE:CHINESE\r\n"))

    assert isinstance(result, CalendarFailed)
    assert result.reason.startswith("unsupported calendar:")


def test_an_empty_calendar_is_an_empty_listing() -> None:
    parsed = parse(calendar())

    assert parsed == ParsedCalendar((), (), False)
