"""The depositary's record of the treaty: the UN's MTDSG XML, read into a ``TreatyStatus``.

"Multilateral Treaties Deposited with the Secretary-General" publishes each treaty's status as
an XML document (for the Convention against Cybercrime, chapter XVIII, 16). What this reader
relies on:

- the root element is ``Treaty``; the participants are the rows at
  ``Treaty/Participants/Table/TGroup/Tbody/Rows/Row``, each with three ``Entry`` cells: the
  participant, the date of signature, the date of consent followed by a suffix naming its kind
  (none: ratification, ``A`` acceptance, ``AA`` approval, ``a`` accession, ``d`` succession);
- a participant may carry a footnote mark, as a ``<superscript>`` element or as the same
  markup escaped into the text; a header row may read "Participant"; dates look like
  ``25 Oct 2025`` with tabs or stray spaces inside, sometimes in square brackets;
- declarations and reservations follow in sections of their own (any element under the root
  whose name says declarations, reservations, objections or notifications), each entry naming
  its participant in a ``Participant`` (or ``Name``, ``Title``) child and giving its text;
- documents declare ISO-8859-1 (the XML parser honours the declaration).

Bounded like a feed: the body is capped by the fetcher, a document with a DTD or entity
declarations is refused before parsing (no entity is ever expanded or fetched), and the
parse runs off the event loop. An HTML page (the site's maintenance page comes with status
200) or any other document is a parse failure, never an empty record.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date, datetime

from bot.domain.countries import clean_name
from bot.domain.treaty import (
    CONSENT_SUFFIXES,
    ConsentKind,
    Participant,
    Statement,
    StatementKind,
    TreatyStatus,
)
from bot.sources.parsed import DepositaryFailed, ParsedDepositary

ROWS_PATH = "Participants/Table/TGroup/Tbody/Rows/Row"
_HTML = re.compile(
    rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html)\b", re.I | re.S
)
_DTD = re.compile(rb"<!(?:DOCTYPE|ENTITY)", re.I)
_DATE = re.compile(r"^(\d{1,2})\s+([A-Za-z]{3,9})\.?\s+(\d{4})(?:\s+([A-Za-z]{1,2}))?$")
_ESCAPED_MARK = re.compile(r"<\s*superscript\s*>.*?<\s*/\s*superscript\s*>", re.I | re.S)
_SECTION = re.compile(r"declaration|reservation|objection|notification", re.I)
_NAME_TAGS = ("participant", "name", "title", "country", "state")
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}


def parse_depositary(body: bytes) -> ParsedDepositary | DepositaryFailed:
    """The record in ``body``, or why it is not the depositary's XML."""
    head = body[:4096]
    if _HTML.match(head):
        return DepositaryFailed(
            "not the depositary's XML: the server sent an HTML page (often its maintenance page)"
        )
    if _DTD.search(body):
        return DepositaryFailed(
            "not the depositary's XML: the document declares a DTD or entities, which are refused"
        )
    try:
        root = ET.fromstring(body)
    except ET.ParseError as err:
        line, column = getattr(err, "position", (None, None))
        where = f" at line {line}, column {column}" if line is not None else ""
        return DepositaryFailed(f"not well-formed XML{where}: {_reason(err)}")
    if _local(root.tag) != "Treaty":
        return DepositaryFailed(
            f"not the depositary's XML: the root element is <{_local(root.tag)}>, not <Treaty>"
        )
    table = root.find("Participants/Table/TGroup/Tbody/Rows")
    if table is None:
        return DepositaryFailed(
            "not the depositary's XML: no participants table "
            "(Treaty/Participants/Table/TGroup/Tbody/Rows)"
        )
    participants: list[Participant] = []
    seen: set[str] = set()
    for number, row in enumerate(table.findall("Row"), start=1):
        cells = row.findall("Entry")
        if not cells:
            continue
        name = clean_name(_cell_text(cells[0]))
        if not name or name.casefold() == "participant":
            continue  # the header row, or an empty one
        if len(cells) < 3:
            return DepositaryFailed(f"row {number} ({name}): {len(cells)} cells, expected 3")
        signed = _date(_cell_text(cells[1]), number, name, "signature")
        consent = _date(_cell_text(cells[2]), number, name, "consent")
        for value in (signed, consent):
            if isinstance(value, DepositaryFailed):
                return value
        assert not isinstance(signed, DepositaryFailed)
        assert not isinstance(consent, DepositaryFailed)
        signed_on = signed[0] if signed else None
        consent_on, kind = consent if consent else (None, None)
        if name.casefold() in seen:
            continue
        seen.add(name.casefold())
        participants.append(Participant(name, signed_on, consent_on, kind))
    return ParsedDepositary(TreatyStatus(tuple(participants), tuple(_statements(root))))


def _reason(err: ET.ParseError) -> str:
    return str(err).split(":")[0]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _cell_text(cell: ET.Element) -> str:
    """The text of a cell without its footnote marks (elements or escaped markup)."""
    parts = [cell.text or ""]
    for child in cell:
        if _local(child.tag).casefold() != "superscript":
            parts.append("".join(child.itertext()))
        parts.append(child.tail or "")
    return _ESCAPED_MARK.sub("", "".join(parts))


def _date(
    text: str, number: int, name: str, which: str
) -> tuple[date, ConsentKind | None] | DepositaryFailed | None:
    """``25 Oct 2025`` (tabs, stray spaces, brackets tolerated) and its kind suffix."""
    cleaned = " ".join(text.replace("[", " ").replace("]", " ").split())
    if not cleaned:
        return None
    match = _DATE.match(cleaned)
    month = _MONTHS.get(match[2][:3].casefold()) if match else None
    suffix = (match[4] or "") if match else ""
    if match is None or month is None or (which == "signature" and suffix):
        return DepositaryFailed(f"row {number} ({name}): {which} date {cleaned!r} is not a date")
    if which == "consent" and suffix not in CONSENT_SUFFIXES:
        return DepositaryFailed(
            f"row {number} ({name}): unknown kind of consent {suffix!r} after the date "
            "(expected none, A, AA, a or d)"
        )
    try:
        day = datetime(int(match[3]), month, int(match[1])).date()
    except ValueError:
        return DepositaryFailed(f"row {number} ({name}): {which} date {cleaned!r} is not a date")
    return day, CONSENT_SUFFIXES[suffix] if which == "consent" else None


def _text_of(element: ET.Element) -> str:
    return " ".join(_ESCAPED_MARK.sub("", "".join(element.itertext())).split())


def _statement_kind(section: str, text: str) -> StatementKind:
    """What a section holds; a section of "declarations and reservations" is read per entry."""
    section = section.casefold()
    for kind in ("objection", "notification"):
        if kind in section:
            return kind
    if "declaration" not in section:
        return "reservation"
    if "reservation" in section and "reserv" in text.casefold():
        return "reservation"
    return "declaration"


def _statements(root: ET.Element) -> list[Statement]:
    """Declarations, reservations, objections and notifications, per participant."""
    found: list[Statement] = []
    for section in root:
        tag = _local(section.tag)
        if tag == "Participants" or not _SECTION.search(tag):
            continue
        title = section.find("Title")
        label = f"{tag} {_text_of(title)}" if title is not None else tag
        for entry in section:
            name_element = next((c for c in entry if _local(c.tag).casefold() in _NAME_TAGS), None)
            if name_element is None:
                continue  # the section's own title or introduction
            name = clean_name(_text_of(name_element))
            text = " ".join(_text_of(c) for c in entry if c is not name_element and _text_of(c))
            if not name or not text:
                continue
            found.append(Statement(name, _statement_kind(label, text), text))
    return found
