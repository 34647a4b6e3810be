"""The command engine: parsing, every command's answer, errors, admin refusal, untrusted text."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.domain import replies
from bot.domain.commands import (
    COMMANDS,
    Command,
    CommandView,
    ReplicaInfo,
    Reply,
    StatusInfo,
    UsageError,
    answer,
    find_clauses,
    handle,
    parse_command,
    reload_result,
)
from bot.domain.model import Clause, NewsRecord, SessionEvent, SourceHealth, SourceId, SourceView
from bot.domain.text import Bullets, Paragraph, Span, render_plain

VIENNA = ZoneInfo("Europe/Vienna")
NOW = datetime(2026, 2, 27, 10, 0, tzinfo=UTC)  # Fri 27 Feb 2026, 11:00 CET


def event(key: str, start: datetime, end: datetime | None = None, **kw: object) -> SessionEvent:
    base: dict[str, object] = {
        "key": f"sessions:{key}",
        "source": "sessions",
        "title": key,
        "start": start,
        "end": end,
    }
    base.update(kw)
    return SessionEvent(**base)  # type: ignore[arg-type]


AHC8 = event(
    "ahc-8",
    datetime(2026, 3, 2, 15, 0, tzinfo=UTC),
    datetime(2026, 3, 6, 23, 0, tzinfo=UTC),
    title="Ad Hoc Committee, eighth session",
    timezone="America/New_York",
    location="UN Headquarters, New York",
    url="https://www.unodc.org/ahc8",
)
DEADLINE = event(
    "comments",
    datetime(2026, 3, 20, 23, 0, tzinfo=UTC),
    kind="deadline",
    title="Written comments on the protocol draft",
)
INFORMAL = event(
    "informal",
    datetime(2026, 4, 14, 8, 0, tzinfo=UTC),
    datetime(2026, 4, 14, 16, 0, tzinfo=UTC),
    kind="informal",
    title="Intersessional consultation",
    timezone="Europe/Vienna",
    location="Vienna International Centre",
)
CANCELLED = event(
    "cancelled",
    datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
    datetime(2026, 3, 1, 17, 0, tzinfo=UTC),
    status="cancelled",
    title="Cancelled briefing",
)
PAST = event(
    "ahc-7",
    datetime(2024, 1, 29, 15, 0, tzinfo=UTC),
    datetime(2024, 2, 9, 23, 0, tzinfo=UTC),
    title="Ad Hoc Committee, concluding session",
    status="concluded",
)

ART4 = Clause(
    id="art-4",
    article="4",
    title="Offences established in accordance with other conventions",
    status="contested",
    summary="Lets states criminalise any offence of other treaties when committed online.",
    concerns=("scope", "human-rights"),
    links=("https://example.org/analysis",),
    updated=date(2024, 8, 8),
)
ART7 = Clause(id="art-7-10", article="7-10", title="Core cyber offences", status="agreed")
ART24 = Clause(
    id="art-24",
    article="24",
    title="Conditions and safeguards",
    status="open",
    summary="Safeguards for procedural powers, such as human rights law.",
    concerns=("safeguards",),
)
ART28 = Clause(id="art-28-4", article="28(4)", title="Compelled assistance", status="reserved")
ART41 = Clause(id="art-41-43", article="41–43", title="24/7 network", status="adopted")
CLAUSES = (ART4, ART7, ART24, ART28, ART41)

NEWS = (
    NewsRecord(
        SourceId("hrw"),
        "k3",
        "UN cybercrime treaty threatens privacy",
        "https://www.hrw.org/news/3",
        NOW - timedelta(hours=2),
        NOW - timedelta(hours=1),
        ("cybercrime",),
    ),
    NewsRecord(
        SourceId("eff"),
        "k2",
        "Ad Hoc Committee closes with a vote",
        "https://www.eff.org/2",
        None,
        NOW - timedelta(days=1),
        ("Ad Hoc Committee",),
    ),
    NewsRecord(
        SourceId("hrw"),
        "k1",
        "States sign the convention in Hanoi",
        None,
        NOW - timedelta(days=3),
        NOW - timedelta(days=3),
        ("cybercrime",),
    ),
)

HRW = SourceView(
    id="hrw",
    name="Human Rights Watch",
    kind="feed",
    url="https://www.hrw.org/rss/news",
    every=timedelta(minutes=30),
    health=SourceHealth(last_success=NOW - timedelta(minutes=10)),
)
EFF = SourceView(
    id="eff",
    name="EFF Deeplinks",
    kind="feed",
    url="https://www.eff.org/rss",
    every=timedelta(minutes=15),
    health=SourceHealth(
        failures=3,
        last_success=NOW - timedelta(days=1),
        last_error="HTTP 503 Service Unavailable",
        last_error_at=NOW - timedelta(minutes=5),
        failing_since=NOW - timedelta(hours=1),
    ),
)
CAL = SourceView(
    id="unodc-events",
    name="UNODC events",
    kind="calendar",
    url="https://example.org/events.ics",
    every=timedelta(hours=6),
    health=SourceHealth(),
)


def view(**kw: object) -> CommandView:
    base: dict[str, object] = {
        "sessions": (PAST, CANCELLED, INFORMAL, DEADLINE, AHC8),
        "clauses": CLAUSES,
        "news": NEWS,
        "sources": (HRW, EFF, CAL),
        "tz": VIENNA,
        "source_names": {"hrw": "Human Rights Watch"},
    }
    base.update(kw)
    return CommandView(**base)  # type: ignore[arg-type]


def text(reply: Reply) -> str:
    return render_plain(reply.body)


def bullets(reply: Reply) -> Bullets:
    found = [b for b in reply.body if isinstance(b, Bullets)]
    assert len(found) == 1
    return found[0]


def spans(reply: Reply) -> list[Span]:
    out: list[Span] = []
    for block in reply.body:
        if isinstance(block, Paragraph):
            out.extend(block.spans)
        else:
            for item in block.items:
                out.extend(item)
    return out


# ------------------------------------------------------------------------------- parsing


def test_parse_strips_prefix_case_and_whitespace() -> None:
    assert parse_command("  /treaty   NEXT-Session ") == Command("next-session")
    assert parse_command("!treaty sessions   3") == Command("sessions", ("3",), count=3)
    assert parse_command("next_session") == Command("next-session")


def test_share_anywhere_sets_the_flag_and_is_not_an_argument() -> None:
    assert parse_command("sessions 3 share") == Command("sessions", ("3",), True, count=3)
    assert parse_command("share sessions 3") == Command("sessions", ("3",), True, count=3)
    assert parse_command("!treaty news SHARE 2 privacy") == Command(
        "news", ("2", "privacy"), True, count=2, query="privacy"
    )
    assert parse_command("next-session") == Command("next-session", (), False)


def test_share_reaches_the_reply_but_never_for_errors() -> None:
    assert handle("next-session share", view(), NOW).share is True
    assert handle("next-session", view(), NOW).share is False
    assert handle("sessions 0 share", view(), NOW).share is False
    assert handle("nxt-session share", view(), NOW).share is False


def test_empty_input_is_help() -> None:
    for line in ("", "   ", "/treaty", "!treaty share"):
        reply = handle(line, view(), NOW)
        assert reply.title == replies.HELP_TITLE
        assert reply.ok
    assert handle("!treaty share", view(), NOW).share is True


def test_unknown_command_suggests_the_closest() -> None:
    parsed = parse_command("nxt-session")
    assert isinstance(parsed, UsageError)
    assert parsed.suggestion == "next-session"
    assert (
        parsed.message == "Unknown command `nxt-session`. Did you mean `next-session`? Try `help`."
    )
    reply = answer(parsed, view(), NOW)
    assert not reply.ok
    assert reply.title == "Unknown command"
    assert text(reply) == "Unknown command nxt-session. Did you mean next-session? Try help."
    # the command words are code spans; the rest is plain
    assert [s.text for s in spans(reply) if s.style == "code"] == [
        "nxt-session",
        "next-session",
        "help",
    ]


def test_unknown_command_without_a_close_one_points_to_help() -> None:
    parsed = parse_command("banana")
    assert isinstance(parsed, UsageError)
    assert parsed.suggestion is None
    assert "Try help" in text(answer(parsed, view(), NOW))
    sessionz = parse_command("sesions")
    assert isinstance(sessionz, UsageError)
    assert sessionz.suggestion == "sessions"


def test_unknown_command_echo_cannot_break_the_code_spans() -> None:
    reply = handle("`<!channel>`", view(), NOW)
    assert not reply.ok
    code = [s.text for s in spans(reply) if s.style == "code"]
    assert code[0] == "'<!channel>'"
    assert all(s.href is None for s in spans(reply))


def test_every_command_has_help_and_example_that_parses() -> None:
    assert {h.name for h in replies.HELP} == set(COMMANDS)
    for entry in replies.HELP:
        parsed = parse_command(entry.example)
        assert isinstance(parsed, Command), entry.example
        assert parsed.name == entry.name


# ------------------------------------------------------------------------------- next-session


def test_next_session_with_both_zones_venue_status_and_countdown() -> None:
    reply = handle("next-session", view(), NOW)
    assert reply.ok and reply.title == "Next session: Ad Hoc Committee, eighth session"
    assert text(reply) == (
        "Session: Ad Hoc Committee, eighth session <https://www.unodc.org/ahc8>\n"
        "When: Mon 02 Mar 2026, 16:00 – Sat 07 Mar 2026, 00:00 CET\n"
        "Venue time (New York): Mon 02 Mar 2026, 10:00 – Fri 06 Mar 2026, 18:00 EST\n"
        "Where: UN Headquarters, New York\n"
        "Starts in 3 days 5 hours."
    )


def test_next_session_skips_the_cancelled_one_and_the_past() -> None:
    reply = handle("next-session", view(), NOW)
    assert "Cancelled briefing" not in text(reply)
    assert "concluding" not in text(reply)


def test_next_session_ongoing() -> None:
    during = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    reply = handle("next-session", view(), during)
    assert reply.title == "Ongoing session: Ad Hoc Committee, eighth session"
    assert text(reply).endswith("Ongoing, ends in 2 days 11 hours.")


def test_next_session_tentative_and_postponed_say_so() -> None:
    tentative = replace(AHC8, status="tentative")
    reply = handle("next-session", view(sessions=(tentative,)), NOW)
    assert "Status: tentative — the dates are not confirmed yet" in text(reply)
    postponed = replace(AHC8, status="postponed")
    reply = handle("next-session", view(sessions=(postponed,)), NOW)
    assert "Status: postponed" in text(reply)


def test_next_session_can_be_a_deadline() -> None:
    reply = handle("next-session", view(sessions=(DEADLINE,)), NOW)
    assert reply.title == "Next deadline: Written comments on the protocol draft"
    assert text(reply) == (
        "Deadline: Written comments on the protocol draft (deadline)\n"
        "When: Sat 21 Mar 2026, 00:00 CET\n"
        "Due in 21 days 13 hours."
    )


def test_next_session_same_zone_shows_one_time() -> None:
    reply = handle("next-session", view(sessions=(INFORMAL,)), NOW)
    assert "Venue time" not in text(reply)
    assert "When: Tue 14 Apr 2026, 10:00–18:00 CEST" in text(reply)
    assert reply.title.startswith("Next informal meeting: ")


def test_next_session_with_nothing_ahead_mentions_the_last_one() -> None:
    reply = handle(
        "next-session", view(sessions=(PAST, CANCELLED)), datetime(2026, 6, 1, tzinfo=UTC)
    )
    assert reply.ok and reply.title == replies.NOTHING_AHEAD_TITLE
    assert text(reply) == (
        "No session, meeting or deadline is scheduled ahead.\n"
        "The last one was session Ad Hoc Committee, concluding session "
        "(Mon 29 Jan 2024, 16:00 – Sat 10 Feb 2024, 00:00 CET)."
    )


def test_next_session_with_no_sessions_at_all() -> None:
    reply = handle("next-session", view(sessions=()), NOW)
    assert text(reply) == "No session, meeting or deadline is scheduled ahead."


def test_next_session_takes_no_arguments() -> None:
    reply = handle("next-session please", view(), NOW)
    assert not reply.ok
    assert text(reply) == "next-session takes no arguments. Usage: next-session."


# ------------------------------------------------------------------------------- sessions


def test_sessions_default_lists_upcoming_in_order() -> None:
    reply = handle("sessions", view(), NOW)
    assert reply.title == "Next 3 sessions"
    assert text(reply) == (
        "• Mon 02 Mar 2026, 16:00 – Sat 07 Mar 2026, 00:00 CET · Session: "
        "Ad Hoc Committee, eighth session <https://www.unodc.org/ahc8>\n"
        "• Sat 21 Mar 2026, 00:00 CET · Deadline: Written comments on the protocol draft\n"
        "• Tue 14 Apr 2026, 10:00–18:00 CEST · Informal meeting: Intersessional consultation"
    )


def test_sessions_n_limits_and_says_how_many_more() -> None:
    reply = handle("sessions 1", view(), NOW)
    assert reply.title == "Next session"
    assert len(bullets(reply).items) == 1
    assert text(reply).endswith("… and 2 more; e.g. sessions 3.")


def test_sessions_marks_ongoing_and_tentative() -> None:
    during = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    reply = handle("sessions 2", view(sessions=(replace(AHC8, status="tentative"),)), during)
    assert text(reply).endswith("(tentative) — ongoing")


@pytest.mark.parametrize("arg", ["0", "-2", "abc", "26", "3.5"])
def test_sessions_bad_count(arg: str) -> None:
    parsed = parse_command(f"sessions {arg}")
    assert isinstance(parsed, UsageError)
    assert parsed.command == "sessions"
    assert parsed.suggestion == "sessions 10"
    reply = answer(parsed, view(), NOW)
    assert not reply.ok and reply.title == "How to use sessions"
    assert text(reply) == (
        f"sessions takes a number from 1 to 25, not “{arg}”. Usage: sessions [N], e.g. sessions 10."
    )


def test_sessions_too_many_arguments() -> None:
    reply = handle("sessions 3 4", view(), NOW)
    assert not reply.ok and "takes at most one number" in text(reply)


def test_sessions_max_is_allowed() -> None:
    assert parse_command("sessions 25") == Command("sessions", ("25",), count=25)


# ------------------------------------------------------------------------------- clauses


def test_clauses_default_lists_the_unsettled() -> None:
    reply = handle("clauses", view(), NOW)
    assert reply.title == "Clauses not yet settled"
    assert text(reply) == (
        "• Art. 4 — Offences established in accordance with other conventions — contested\n"
        "• Art. 24 — Conditions and safeguards — open\n"
        "• Art. 28(4) — Compelled assistance — reserved\n"
        "One in full: clause 4"
    )
    first = bullets(reply).items[0]
    assert first[0] == Span("Art. 4", "bold")


def test_clauses_by_status() -> None:
    reply = handle("clauses AGREED", view(), NOW)
    assert reply.title == "Agreed clauses"
    assert text(reply).splitlines()[0] == "• Art. 7-10 — Core cyber offences — agreed"
    assert len(bullets(reply).items) == 1


def test_clauses_all() -> None:
    assert len(bullets(handle("clauses all", view(), NOW)).items) == len(CLAUSES)


def test_clauses_by_word_in_title_summary_or_concerns() -> None:
    reply = handle("clauses human-rights", view(), NOW)
    assert [item[0].text for item in bullets(reply).items] == ["Art. 4"]
    reply = handle("clauses SAFEGUARDS", view(), NOW)
    assert [item[0].text for item in bullets(reply).items] == ["Art. 24"]
    reply = handle("clauses human rights", view(), NOW)  # a phrase
    assert [item[0].text for item in bullets(reply).items] == ["Art. 24"]


def test_clauses_none_found_names_the_filter() -> None:
    reply = handle("clauses ransomware", view(), NOW)
    assert reply.ok
    assert text(reply) == (
        "No clause mentions “ransomware”.\nTry clauses for those not yet settled."
    )
    reply = handle("clauses deferred", view(), NOW)
    assert text(reply).startswith("No clause is deferred at the moment.")
    settled = (ART7, ART41)
    reply = handle("clauses", view(clauses=settled), NOW)
    assert text(reply).startswith("Every tracked clause is settled")
    assert text(handle("clauses", view(clauses=()), NOW)) == "No clauses are tracked yet."


# ------------------------------------------------------------------------------- clause


@pytest.mark.parametrize(
    "query", ["4", "art-4", "Art. 4", "ART.4", "article 4", "Art 4", "  art-4 "]
)
def test_clause_finds_by_id_or_article(query: str) -> None:
    reply = handle(f"clause {query}", view(), NOW)
    assert reply.ok
    assert reply.title == "Art. 4 — Offences established in accordance with other conventions"


def test_clause_in_full() -> None:
    reply = handle("clause 4", view(), NOW)
    assert text(reply) == (
        "Art. 4 — Offences established in accordance with other conventions\n"
        "Status: contested (updated 08 Aug 2024)\n"
        "Lets states criminalise any offence of other treaties when committed online.\n"
        "Concerns: scope, human-rights\n"
        "Links:\n"
        "• https://example.org/analysis"
    )


def test_clause_ranges_and_sub_articles() -> None:
    assert find_clauses(CLAUSES, "8") == [ART7]
    assert find_clauses(CLAUSES, "7-10") == [ART7]
    assert find_clauses(CLAUSES, "42") == [ART41]
    assert find_clauses(CLAUSES, "41-43") == [ART41]
    assert find_clauses(CLAUSES, "28(4)") == [ART28]
    assert find_clauses(CLAUSES, "28") == [ART28]
    assert find_clauses(CLAUSES, "art-28-4") == [ART28]
    assert find_clauses(CLAUSES, "2") == []
    assert find_clauses(CLAUSES, "artificial") == []


def test_clause_several_matches_are_listed() -> None:
    twin = Clause(id="art-28-1", article="28(1)", title="Search powers", status="open")
    reply = handle("clause 28", view(clauses=(*CLAUSES, twin)), NOW)
    assert reply.title == replies.SEVERAL_CLAUSES_TITLE
    assert len(bullets(reply).items) == 2
    assert "clause art-28-1" in text(reply)


def test_clause_unknown_lists_close_ids() -> None:
    reply = handle("clause art-25", view(), NOW)
    assert not reply.ok and reply.title == "Unknown clause"
    assert text(reply) == (
        "No tracked clause matches “art-25”.\n"
        "Did you mean clause 24?\n"
        "Try clauses all for the list."
    )


def test_clause_missing_argument_gives_usage() -> None:
    parsed = parse_command("clause")
    assert isinstance(parsed, UsageError) and parsed.suggestion == "clause 4"
    assert text(answer(parsed, view(), NOW)) == (
        "clause needs a clause id or article number. Usage: clause ID, e.g. clause 4."
    )


# ------------------------------------------------------------------------------- news


def test_news_latest_with_source_link_and_time() -> None:
    reply = handle("news", view(), NOW)
    assert reply.title == "Latest news"
    assert text(reply) == (
        "• Human Rights Watch · UN cybercrime treaty threatens privacy "
        "<https://www.hrw.org/news/3> · Fri 27 Feb 2026, 09:00 CET\n"
        "• EFF Deeplinks · Ad Hoc Committee closes with a vote <https://www.eff.org/2> "
        "· Thu 26 Feb 2026, 11:00 CET\n"
        "• Human Rights Watch · States sign the convention in Hanoi · Tue 24 Feb 2026, 11:00 CET"
    )
    first = bullets(reply).items[0]
    assert first[2] == Span("UN cybercrime treaty threatens privacy", "plain", NEWS[0].link)


def test_news_count_and_word() -> None:
    assert len(bullets(handle("news 2", view(), NOW)).items) == 2
    reply = handle("news PRIVACY", view(), NOW)
    assert reply.title == "Latest news about “PRIVACY”"
    assert len(bullets(reply).items) == 1
    reply = handle("news 1 ad hoc", view(), NOW)
    assert "Ad Hoc Committee closes" in text(reply)


def test_news_none() -> None:
    assert text(handle("news", view(news=()), NOW)) == "No matching news item has been seen yet."
    reply = handle("news ransomware", view(), NOW)
    assert reply.ok and text(reply).startswith("No recent news item mentions “ransomware”.")


@pytest.mark.parametrize("arg", ["0", "21", "-1"])
def test_news_bad_count(arg: str) -> None:
    reply = handle(f"news {arg} privacy", view(), NOW)
    assert not reply.ok and reply.title == "How to use news"
    assert text(reply) == (
        f"news takes a number from 1 to 20, not “{arg}”. "
        "Usage: news [N] [WORD], e.g. news 3 privacy."
    )


# ------------------------------------------------------------------------------- feeds


def test_feeds_health() -> None:
    reply = handle("feeds", view(), NOW)
    assert reply.title == "Watched sources"
    assert text(reply) == (
        "3 sources: 2 ok, 1 failing.\n"
        "• Human Rights Watch <https://www.hrw.org/rss/news> (feed) — ok "
        "· last success Fri 27 Feb 2026, 10:50 CET · every 30 minutes\n"
        "• EFF Deeplinks <https://www.eff.org/rss> (feed) — failing (3 failures in a row, "
        "last error: HTTP 503 Service Unavailable) · last success Thu 26 Feb 2026, 11:00 CET "
        "· every 15 minutes\n"
        "• UNODC events <https://example.org/events.ics> (calendar) — not polled yet "
        "· every 6 hours"
    )


def test_feeds_local_calendar_path_is_not_a_link_and_empty_list() -> None:
    local = replace(CAL, url="calendars/local.ics")
    reply = handle("feeds", view(sources=(local,)), NOW)
    assert all(s.href is None for s in spans(reply))
    assert "No feeds or calendars are watched yet" in text(handle("feeds", view(sources=()), NOW))


def test_feeds_tell_where_a_source_moved_without_linking_it() -> None:
    moved = replace(HRW, moved_to="https://www.hrw.org/feeds/news <@U1> <!channel>")
    reply = handle("feeds", view(sources=(moved,)), NOW)
    assert (
        "· moved permanently to https://www.hrw.org/feeds/news <@U1> <!channel>: update its url "
        "in the configuration" in text(reply)
    )
    [shown] = [s for s in spans(reply) if "hrw.org/feeds" in s.text]
    assert shown.style == "code" and shown.href is None


def test_feeds_takes_no_arguments() -> None:
    parsed = parse_command("feeds all")
    assert isinstance(parsed, UsageError) and parsed.suggestion == "feeds"


# ------------------------------------------------------------------------------- help


def test_help_lists_every_command_with_an_example() -> None:
    reply = handle("help", view(), NOW)
    items = bullets(reply).items
    assert [item[0].text for item in items] == [h.example for h in replies.HELP]
    assert all(item[0].style == "code" for item in items)
    admin_lines = [
        render_plain((Bullets((item,)),)) for item in items if "(admins)" in item[1].text
    ]
    assert len(admin_lines) == 2
    assert "status" in admin_lines[0] and "reload" in admin_lines[1]
    assert "add share to post one in the channel" in text(reply)


def test_help_for_one_command_and_a_bad_one() -> None:
    reply = handle("help CLAUSE", view(), NOW)
    assert reply.title == "How to use clause"
    assert text(reply) == "clause ID — one clause in full, by id or article.\nExample: clause 4"
    bad = parse_command("help nxt-session")
    assert isinstance(bad, UsageError) and bad.suggestion == "next-session"


# ------------------------------------------------------------------------------- admin


def admin_view() -> CommandView:
    info = StatusInfo(
        version="0.1.0",
        started_at=NOW - timedelta(days=2, hours=3),
        queued_alerts=4,
        transports=("console", "slack (socket mode)"),
    )
    return view(is_admin=True, status=info)


@pytest.mark.parametrize("name", ["status", "reload"])
def test_admin_commands_refuse_non_admins_politely(name: str) -> None:
    reply = handle(f"{name} share", view(), NOW)
    assert not reply.ok and reply.action is None and reply.share is False
    assert reply.title == "Admins only"
    assert text(reply) == (
        f"{name} needs the admin permission. Admins are listed under admins: in "
        "config/bot.yaml; ask one of them."
    )


def test_status_lists_the_replicas_sharing_the_database() -> None:
    replicas = (
        ReplicaInfo("db-1:41", True, 2.4, (0, 2, 4), ("job:planner",)),
        ReplicaInfo("db-2:77", False, 61.0, (1, 3, 5), ()),
        ReplicaInfo("db-2:12", False, 1800.0, (), (), silent=True),
        ReplicaInfo("db-3:9", False, 3600.0, (), (), stopped=True),
        ReplicaInfo("db-4:1", False, 120.0, (), ("job:planner", "job:other")),
        ReplicaInfo("db-4:2", False, 120.4, (6,), ()),
    )
    info = replace(admin_view().status, replicas=replicas, shards=8)  # type: ignore[type-var]
    reply = handle("status", view(is_admin=True, status=info, sources=()), NOW)
    lines = text(reply).splitlines()
    start = lines.index("Replicas: 4 running, 7 of 8 shards held")
    assert lines[start + 1 : start + 7] == [
        "• db-1:41 (this one) · shards 0, 2, 4 · planner · heartbeat 2 s ago",
        "• db-2:77 · shards 1, 3, 5 · heartbeat 61 s ago",
        "• db-2:12 · silent for 30 minutes (dead, or cut off from the database)",
        "• db-3:9 · stopped",
        # from two minutes on, in minutes (a heartbeat that late is about to go silent)
        "• db-4:1 · shards none · planner, other · heartbeat 2 minutes ago",
        "• db-4:2 · shards 6 · heartbeat 2 minutes ago",
    ]
    # on one process (a state file) there is no such section
    assert not any(
        line.startswith("Replicas")
        for line in text(handle("status", admin_view(), NOW)).splitlines()
    )


def test_status_for_admins() -> None:
    reply = handle("status", admin_view(), NOW)
    assert reply.ok and reply.title == "Bot status"
    assert text(reply) == (
        "Version 0.1.0 · up 2 days 3 hours (since Wed 25 Feb 2026, 08:00 CET)\n"
        "Queued alerts: 4\n"
        "Transports: console, slack (socket mode)\n"
        "Sources (3, 1 failing):\n"
        "• Human Rights Watch <https://www.hrw.org/rss/news>: last success "
        "Fri 27 Feb 2026, 10:50 CET · no errors\n"
        "• EFF Deeplinks <https://www.eff.org/rss>: last success Thu 26 Feb 2026, 11:00 CET "
        "· last error at Fri 27 Feb 2026, 10:55 CET: HTTP 503 Service Unavailable "
        "(3 failures in a row)\n"
        "• UNODC events <https://example.org/events.ics>: no successful poll yet · no errors"
    )


def test_status_without_runtime_info() -> None:
    reply = handle("status", view(is_admin=True), NOW)
    assert text(reply).startswith(replies.STATUS_UNAVAILABLE)


def test_status_takes_no_arguments() -> None:
    assert not handle("status now", admin_view(), NOW).ok


def test_reload_asks_the_app_to_act() -> None:
    reply = handle("reload share", admin_view(), NOW)
    assert reply.ok and reply.action == "reload" and reply.share is True
    assert text(reply) == "Re-reading config/ now…"
    # no other command asks for an action
    for line in ("status", "help", "next-session", "feeds"):
        assert handle(line, admin_view(), NOW).action is None


def test_reload_result() -> None:
    done = reload_result([], share=True)
    assert done.ok and done.share and done.title == "Configuration reloaded"
    assert "no problems found" in text(done)
    problems = [f"feeds.yaml:{n}: feeds.{n}.every: too short" for n in range(1, 18)]
    failed = reload_result(problems)
    assert not failed.ok and failed.title == "Configuration not reloaded: 17 problems"
    lines = text(failed).splitlines()
    assert lines[0] == (
        "Found 17 problems in config/; the bot keeps running with its last good configuration."
    )
    assert lines[1] == "• feeds.yaml:1: feeds.1.every: too short"
    assert lines[-1] == "… and 2 more; treaty-bot check lists them all."


# ------------------------------------------------------------------------------- untrusted text


def test_untrusted_text_stays_plain_span_text() -> None:
    evil = "<!channel> *bold* `code` @room <@U123> [x](https://evil.example)"
    v = view(
        sessions=(replace(AHC8, title=evil, location="@room"),),
        clauses=(replace(ART4, title=evil, summary=evil, concerns=("@room",)),),
        news=(replace(NEWS[0], title=evil),),
        sources=(replace(EFF, name=evil),),
        source_names={"hrw": "<!here>"},
    )
    for line in ("next-session", "sessions", "clauses", "clause 4", "news", "feeds"):
        reply = handle(line, v, NOW)
        assert evil in text(reply), line
        carrying = [s for s in spans(reply) if evil in s.text]
        assert carrying, line
        # the untrusted text is one span's whole text: never split, styled or re-linked
        for span in carrying:
            assert span.text == evil
            assert span.style in ("plain", "bold")
            assert span.href in (None, AHC8.url, NEWS[0].link, EFF.url)
    news = handle("news", v, NOW)
    assert Span("<!here>", "bold") in spans(news)
    assert Span("@room") in spans(handle("next-session", v, NOW))


def test_untrusted_clause_query_is_echoed_as_plain_text() -> None:
    reply = handle("clause <!channel>", view(), NOW)
    assert not reply.ok
    assert Span("<!channel>") in spans(reply)


def test_a_thousand_feeds_list_the_failing_first_and_stay_short() -> None:
    from datetime import timedelta as _td

    from bot.domain.model import SourceHealth, SourceView
    from bot.domain.replies import FEEDS_SHOWN, feeds_body
    from bot.domain.text import Bullets, render_plain

    sources = [
        SourceView(
            f"f{n}",
            f"Feed {n}",
            "feed",
            f"https://e.org/{n}",
            _td(minutes=15),
            SourceHealth(failures=2, last_error="HTTP 500") if n in (500, 999) else SourceHealth(),
        )
        for n in range(1000)
    ]
    body = feeds_body(sources, ZoneInfo("Europe/Vienna"))
    bullets = next(b for b in body if isinstance(b, Bullets))
    assert len(bullets.items) == FEEDS_SHOWN
    text = render_plain(body)
    assert "1000 sources: 998 ok, 2 failing." in text
    assert text.index("Feed 500") < text.index("Feed 0") and "Feed 999" in text
    assert f"and {1000 - FEEDS_SHOWN} more sources" in text


def test_a_message_lists_the_failing_sources_first_and_at_most_its_limit() -> None:
    from bot.domain.replies import listed

    def failing(n: int) -> bool:
        return n % 10 == 3

    assert listed(range(5), failing, limit=5) == [0, 1, 2, 3, 4]  # all fit: configured order
    assert listed(range(6), failing, limit=5) == [3, 0, 1, 2, 4]
    assert listed(range(100), failing, limit=5) == [3, 13, 23, 33, 43]  # failing fill it
    assert listed(range(12), failing, limit=3) == [3, 0, 1]
