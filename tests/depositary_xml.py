"""Documents in the depositary's format (MTDSG XML), for tests.

``document`` writes one: the participants table (with the header row the depositary repeats
inside the body), dates as the depositary writes them, and a declarations section. The names
are real states; the dates are invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from xml.sax.saxutils import escape

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


@dataclass(frozen=True)
class Row:
    name: str  # as the cell holds it: may carry <superscript>…</superscript> markup
    signed: date | None = None
    consent: date | None = None
    suffix: str = ""  # "", "A", "AA", "a", "d"
    raw: bool = False  # ``name`` is written as is (markup kept), not escaped


def day(value: date, *, tab: bool = True) -> str:
    """``25 Oct\\t2025``: the depositary puts tabs and stray spaces inside its dates."""
    sep = "\t " if tab else " "
    return f"{value.day} {MONTHS[value.month - 1]}{sep}{value.year}"


def document(
    rows: Sequence[Row],
    statements: Sequence[tuple[str, str]] = (),
    *,
    section: str = "Declarations",
    encoding: str = "ISO-8859-1",
) -> bytes:
    cells = []
    for row in rows:
        name = row.name if row.raw else escape(row.name)
        signed = day(row.signed) if row.signed else ""
        consent = (
            (day(row.consent) + (f" {row.suffix}" if row.suffix else "")) if row.consent else ""
        )
        cells.append(
            f"<Row><Entry>{name}</Entry><Entry>{signed}</Entry><Entry>{consent}</Entry></Row>"
        )
    declared = "".join(
        f"<Declaration><Participant>{escape(who)}</Participant>"
        f"<Text><Paragraph>{escape(text)}</Paragraph></Text></Declaration>"
        for who, text in statements
    )
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n'
        "<Treaty>\n"
        "<Header><Title>United Nations Convention against Cybercrime</Title>"
        "<Chapter>XVIII</Chapter><Number>16</Number></Header>\n"
        '<Participants><Table><TGroup cols="3">'
        "<Thead><Row><Entry>Participant</Entry><Entry>Signature</Entry>"
        "<Entry>Ratification, Acceptance(A), Approval(AA), Accession(a), Succession(d)</Entry>"
        "</Row></Thead>\n<Tbody><Rows>\n"
        "<Row><Entry>Participant</Entry><Entry>Signature</Entry><Entry>Ratification, "
        "Acceptance(A), Approval(AA), Accession(a), Succession(d)</Entry></Row>\n"
        + "\n".join(cells)
        + "\n</Rows></Tbody></TGroup></Table></Participants>\n"
        f"<{section}><Title>Declarations and Reservations</Title>"
        "<Text>(Unless otherwise indicated, the declarations and reservations were made upon "
        "ratification, acceptance, approval or accession.)</Text>"
        f"{declared}</{section}>\n"
        "</Treaty>\n"
    )
    return text.encode(encoding)


#: States in the order their instruments are deposited in these documents.
STATES = (
    "Viet Nam",
    "Qatar",
    "Azerbaijan",
    "Germany",
    "France",
    "Austria",
    "Belgium",
    "Brazil",
    "Chile",
    "China",
    "Colombia",
    "Costa Rica",
    "Denmark",
    "Ecuador",
    "Egypt",
    "Finland",
    "Ghana",
    "Greece",
    "India",
    "Indonesia",
    "Ireland",
    "Italy",
    "Japan",
    "Kenya",
    "Malaysia",
    "Mexico",
    "Morocco",
    "Nigeria",
    "Norway",
    "Pakistan",
    "Peru",
    "Philippines",
    "Portugal",
    "Senegal",
    "Singapore",
    "South Africa",
    "Spain",
    "Sweden",
    "Thailand",
    "Uruguay",
    "Zambia",
    "Zimbabwe",
)
SUFFIXES = ("", "A", "AA", "a", "")


def parties(count: int, *, first: date = date(2026, 1, 10)) -> list[Row]:
    """``count`` states with a signature and an instrument each (kinds cycling through the
    suffixes, a succession for the fourth), deposited a week apart."""
    rows = []
    for i, name in enumerate(STATES[:count]):
        suffix = "d" if i == 3 else SUFFIXES[i % len(SUFFIXES)]
        signed = None if suffix in ("a", "d") else date(2025, 10, 25)
        rows.append(Row(name, signed, first + timedelta(days=7 * i), suffix))
    return rows
