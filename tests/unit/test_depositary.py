"""The depositary's record: reading MTDSG XML, and the decisions taken on it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.countries import find_state, name_key
from bot.domain.model import ChannelName
from bot.domain.text import render_plain
from bot.domain.treaty import (
    EntryIntoForceRule,
    Participant,
    Statement,
    TreatySnapshot,
    TreatySource,
    TreatyStatus,
    counted_instruments,
    entry_into_force,
    plan_treaty,
    projection,
)
from bot.sources.depositary import parse_depositary
from bot.sources.parsed import DepositaryFailed, ParsedDepositary
from tests.depositary_xml import Row, document, parties

DATA = Path(__file__).resolve().parent.parent / "data" / "depositary"
NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
RULE = EntryIntoForceRule()
SOURCE = TreatySource(
    "depositary", "UN depositary", "https://treaties.example/status", (ChannelName("alerts"),)
)


def parsed(body: bytes) -> TreatyStatus:
    result = parse_depositary(body)
    assert isinstance(result, ParsedDepositary), result
    return result.status


def failure(body: bytes) -> str:
    result = parse_depositary(body)
    assert isinstance(result, DepositaryFailed), result
    return result.reason


# ------------------------------------------------------------------------------- reading


def test_the_record_is_read_as_the_depositary_writes_it() -> None:
    status = parsed((DATA / "XVIII-16.en.xml").read_bytes())
    by_name = {p.name: p for p in status.participants}
    # the header row repeated inside the body is not a participant
    assert "Participant" not in by_name
    assert list(by_name) == [
        "Viet Nam",
        "Qatar",  # <superscript>1</superscript> as an element: dropped
        "Austria",  # the same markup escaped into the text: dropped
        "Azerbaijan",
        "European Union",
        "Türkiye",  # ISO-8859-1 declared and honoured
        "Côte d'Ivoire",
        "Montenegro",
        "United States of America",  # "3,4": two footnotes
        "Germany",
        "Canada",  # "[14  Jul\t 2026 ]": brackets and stray spaces
    ]
    assert by_name["Viet Nam"] == Participant(
        "Viet Nam", date(2025, 10, 25), date(2026, 3, 2), "ratification"
    )
    kinds = {name: p.consent_kind for name, p in by_name.items() if p.consent_kind}
    assert kinds == {
        "Viet Nam": "ratification",
        "Qatar": "ratification",
        "Azerbaijan": "acceptance",
        "European Union": "approval",
        "Côte d'Ivoire": "accession",
        "Montenegro": "succession",
    }
    assert by_name["Canada"].signed == date(2026, 7, 14)
    assert by_name["Côte d'Ivoire"].signed is None
    assert [(s.participant, s.kind) for s in status.statements] == [
        ("Germany", "declaration"),
        ("Azerbaijan", "reservation"),
    ]
    assert status.statements[0].text.endswith("safeguards <!channel> @room.")


def test_a_utf8_document_reads_the_same() -> None:
    rows = [Row("Türkiye", date(2025, 10, 26))]
    assert parsed(document(rows, encoding="UTF-8")) == parsed(document(rows))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ((DATA / "maintenance.html").read_bytes(), "the server sent an HTML page"),
        (b"<html><body>down</body></html>", "the server sent an HTML page"),
        (b'<?xml version="1.0"?><rss version="2.0"/>', "the root element is <rss>"),
        (b"<Treaty><Header/></Treaty>", "no participants table"),
        (b"<Treaty><Participants>", "not well-formed XML at line 1"),
        (b"", "not well-formed XML"),
        (
            b'<?xml version="1.0"?><!DOCTYPE Treaty [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<Treaty>&x;</Treaty>",
            "declares a DTD or entities",
        ),
        (
            b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<Treaty>&lol2;</Treaty>",
            "declares a DTD or entities",
        ),
    ],
)
def test_what_is_not_the_record_is_refused_with_its_reason(body: bytes, reason: str) -> None:
    assert reason in failure(body)


def test_a_date_that_is_not_a_date_names_its_row() -> None:
    body = document([Row("Germany", date(2025, 10, 25))]).replace(b"25 Oct", b"3x Oct")
    assert failure(body) == "row 2 (Germany): signature date '3x Oct 2025' is not a date"
    odd = document([Row("Chile", date(2025, 10, 25), date(2026, 5, 1), "Q")])
    assert "unknown kind of consent 'Q'" in failure(odd)


# ------------------------------------------------------------------------------- counting


def test_entry_into_force_is_the_90th_day_after_the_40th_counted_instrument() -> None:
    rows = parties(41)  # Germany (the 4th) succeeded: not counted, so 40 counted
    status = parsed(document(rows))
    counted = counted_instruments(status, RULE)
    assert len(counted) == 40
    fortieth = rows[40].consent
    assert fortieth is not None
    assert entry_into_force(status, RULE) == fortieth + timedelta(days=90)
    assert entry_into_force(parsed(document(parties(40))), RULE) is None


def test_a_regional_organisation_does_not_count_on_top_of_its_members() -> None:
    rows = [*parties(40), Row("European Union", date(2025, 10, 25), date(2026, 12, 1), "AA")]
    status = parsed(document(rows))
    assert len(counted_instruments(status, RULE)) == 39
    assert entry_into_force(status, RULE) is None
    anyone = EntryIntoForceRule(not_counted=())
    assert entry_into_force(status, anyone) == date(2026, 12, 1) + timedelta(days=90)


# ------------------------------------------------------------------------------- planning


def snapshot(status: TreatyStatus) -> TreatySnapshot:
    return TreatySnapshot(True, status)


def test_the_first_record_only_remembers() -> None:
    status = parsed((DATA / "XVIII-16.en.xml").read_bytes())
    plan = plan_treaty(TreatySnapshot(), status, NOW, RULE, SOURCE)
    assert plan.alerts == ()
    assert plan.snapshot == TreatySnapshot(True, status)
    assert plan.changed


def test_each_action_is_one_alert_with_where_the_count_stands() -> None:
    before = parsed(document(parties(22)))  # 21 instruments counted (one succession)
    rows = [
        *parties(22),
        Row("Japan", None, date(2026, 11, 30), "a"),  # the 22nd counted instrument
        Row("Canada", date(2026, 12, 2)),  # a new signature
    ]
    after = parsed(document(rows, [("Japan", "Declaration under article 6.")]))
    plan = plan_treaty(snapshot(before), after, NOW, RULE, SOURCE)
    titles = [a.title for a in plan.alerts]
    assert titles == [
        "Japan acceded to the Convention",
        "Canada signed the Convention",
        "Japan made a declaration",
    ]
    japan = plan.alerts[0]
    assert japan.kind == "treaty-action"
    assert japan.channels == (ChannelName("alerts"),)
    assert japan.url == SOURCE.page
    assert "Japan deposited its instrument of accession on 30 Nov 2026." in japan.text
    assert "22 of the 40 instruments needed for entry into force" in japan.text
    assert "19 signatories" in plan.alerts[1].text
    assert "signed the Convention on 2 Dec 2026" in plan.alerts[1].text
    # planned again, the same alerts have the same ids (delivery is idempotent)
    again = plan_treaty(snapshot(before), after, NOW + timedelta(hours=6), RULE, SOURCE)
    assert [a.id for a in again.alerts] == [a.id for a in plan.alerts]
    # nothing new: nothing said
    assert plan_treaty(plan.snapshot, after, NOW, RULE, SOURCE).alerts == ()


def test_every_kind_of_consent_is_named() -> None:
    signed = date(2025, 10, 25)
    rows = [
        Row("Viet Nam", signed, date(2026, 1, 1)),
        Row("Qatar", signed, date(2026, 1, 2), "A"),
        Row("Azerbaijan", signed, date(2026, 1, 3), "AA"),
        Row("Côte d'Ivoire", None, date(2026, 1, 4), "a"),
        Row("Montenegro", None, date(2026, 1, 5), "d"),
    ]
    before = parsed(document([Row(r.name, r.signed) for r in rows if r.signed]))
    plan = plan_treaty(snapshot(before), parsed(document(rows)), NOW, RULE, SOURCE)
    assert [a.title for a in plan.alerts] == [
        "Viet Nam ratified the Convention",
        "Qatar accepted the Convention",
        "Azerbaijan approved the Convention",
        "Côte d'Ivoire acceded to the Convention",
        "Montenegro succeeded to the Convention",
    ]
    # a succession is not one of the instruments article 65(1) counts
    assert "4 of the 40 instruments" in plan.alerts[-1].text


def test_a_withdrawn_reservation_is_an_alert() -> None:
    rows = parties(3)
    text = "Reservation: does not consider itself bound by article 63, paragraph 2."
    before = parsed(document(rows, [("Azerbaijan", text)]))
    after = parsed(document(rows))
    plan = plan_treaty(snapshot(before), after, NOW, RULE, SOURCE)
    assert [a.title for a in plan.alerts] == ["Azerbaijan withdrew a reservation"]
    assert "does not consider itself bound" in plan.alerts[0].text


def test_a_table_that_lost_half_its_rows_changes_nothing() -> None:
    full = parsed(document(parties(30)))
    half = parsed(document(parties(15)))
    plan = plan_treaty(snapshot(full), half, NOW, RULE, SOURCE)
    assert plan.problem is not None
    assert "lost 15 of its 30 rows" in plan.problem
    assert plan.snapshot == snapshot(full)
    assert plan.alerts == ()
    assert not plan.changed
    # a few rows may go (a state renamed, a row merged): that is the record
    assert (
        plan_treaty(snapshot(full), parsed(document(parties(27))), NOW, RULE, SOURCE).problem
        is None
    )


def test_a_state_stays_one_state_when_its_footnote_or_name_changes() -> None:
    before = parsed(document([Row("Turkey", date(2025, 10, 26)), Row("Qatar", date(2025, 10, 25))]))
    after = parsed(
        document(
            [
                Row("Türkiye<superscript>7</superscript>", date(2025, 10, 26), raw=True),
                Row("Qatar<superscript>2</superscript>", date(2025, 10, 25), raw=True),
            ]
        )
    )
    plan = plan_treaty(snapshot(before), after, NOW, RULE, SOURCE)
    assert plan.alerts == ()
    assert plan.problem is None


def test_untrusted_text_stays_plain() -> None:
    before = parsed(document(parties(2)))
    after = parsed(document(parties(2), [("Qatar", "<!channel> @room <b>bold</b>")]))
    (alert,) = plan_treaty(snapshot(before), after, NOW, RULE, SOURCE).alerts
    spans = [span for block in alert.body for span in getattr(block, "spans", ())]
    quoted = [s for s in spans if "<!channel>" in s.text]
    assert quoted and all(s.href is None for s in quoted)
    assert "<!channel> @room <b>bold</b>" in render_plain(alert.body)


# ------------------------------------------------------------------------------- timeline


def test_the_projection_appears_with_the_40th_instrument() -> None:
    assert projection(parsed(document(parties(40))), RULE, SOURCE) == ()
    rows = parties(41)
    status = parsed(document(rows))
    force, conference = projection(status, RULE, SOURCE)
    fortieth = rows[40].consent
    assert fortieth is not None
    assert force.title == "The Convention enters into force"
    assert force.kind == "deadline" and force.all_day
    assert force.start.astimezone(force.start.tzinfo).date() == fortieth + timedelta(days=90)
    assert "Zimbabwe" not in force.description and rows[40].name in force.description
    assert conference.title == "Latest date for the first Conference of the States Parties"
    in_force = fortieth + timedelta(days=90)
    assert "article 57(2)" in conference.description
    assert conference.timezone == "America/New_York"
    local = conference.start.astimezone(__import__("zoneinfo").ZoneInfo("America/New_York"))
    assert local.date() == in_force.replace(year=in_force.year + 1)
    assert force.key == "depositary:entry-into-force"


# ------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("typed", "found"),
    [
        ("US", "United States of America"),
        ("USA", "United States of America"),
        ("united states", "United States of America"),
        ("Turkey", "Türkiye"),
        ("türkiye", "Türkiye"),
        ("TURKIYE", "Türkiye"),
        ("Vietnam", "Viet Nam"),
        ("viet nam", "Viet Nam"),
        ("cote d'ivoire", "Côte d'Ivoire"),
        ("germ", "Germany"),
        ("EU", "European Union"),
    ],
)
def test_names_are_found_tolerantly(typed: str, found: str) -> None:
    names = [p.name for p in parsed((DATA / "XVIII-16.en.xml").read_bytes()).participants]
    assert find_state(typed, names).found == found


def test_an_unknown_name_gets_the_closest_suggestions() -> None:
    names = ["Germany", "Ghana", "Greece", "Guatemala"]
    match = find_state("Germnay", names)
    assert match.found is None
    assert match.suggestions[0] == "Germany"
    assert find_state("Atlantis", names).suggestions == ()


def test_name_keys_ignore_case_accents_and_footnotes() -> None:
    assert name_key("Türkiye<superscript>3</superscript>") == name_key("turkey")
    assert name_key("Netherlands (Kingdom of the)") == name_key(["the", "netherlands"][1])
    assert name_key("Viet Nam 2,3") == name_key("Vietnam")
    assert (
        Statement("Türkiye", "declaration", "x").key == Statement("Turkey", "declaration", "x").key
    )


def test_a_hostile_statement_is_inert_on_slack_and_matrix() -> None:
    from bot.transports.matrix import alert_content
    from bot.transports.slack import alert_message

    hostile = "<!channel> @room @here <@U123> <a href='x'>link</a> *bold*"
    before = parsed(document(parties(2)))
    after = parsed(document(parties(2), [("Qatar", hostile)]))
    (alert,) = plan_treaty(snapshot(before), after, NOW, RULE, SOURCE).alerts
    slack = str(alert_message(alert, "k", "C1"))
    assert "<!channel>" not in slack and "<@U123>" not in slack
    assert "&lt;!channel&gt;" in slack
    matrix = alert_content(alert, "k")
    assert matrix["m.mentions"] == {}
    assert "<a href='x'>" not in matrix["formatted_body"]
    assert "@room" not in matrix["body"] and "@room" not in matrix["formatted_body"]
