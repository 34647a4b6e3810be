"""The shipped clause tracker and session timeline stay true to their primary sources.

These tests read the configuration in ``config/`` as shipped. Each one pins a fact that was
checked against the adopted text (General Assembly resolution 79/243, annex) or against the
UN, UNODC and civil-society pages the entries link, so that an edit bringing back a misreading
or a second-hand link fails here rather than in a chat answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date
from urllib.parse import unquote, urlsplit

import pytest

from bot.configuration import load_config
from bot.configuration.models import Config
from bot.domain.model import Clause
from tests.conftest import REPO

# Where a clause may link: the UN's own sites (the adopted text, UN press, the UN Treaty
# Collection, UNODC, OHCHR) and the websites of the organisations whose analyses and
# statements are cited, so that every link is the source itself and not a report about it.
# r3d.mx publishes the joint civil-society statement on the draft rules of procedure.
CLAUSE_HOSTS = frozenset(
    {
        "documents.un.org",
        "docs.un.org",
        "undocs.org",
        "press.un.org",
        "treaties.un.org",
        "unodc.org",
        "www.unodc.org",
        "www.ohchr.org",
        "www.hrw.org",
        "eff.org",
        "www.eff.org",
        "www.accessnow.org",
        "article19.org",
        "www.article19.org",
        "r3d.mx",
    }
)

# Where a session's dates and venue may come from: UNODC's Ad Hoc Committee pages, the UN's
# event registration system, UN press and the UN Treaty Collection.
SESSION_HOSTS = frozenset(
    {"unodc.org", "www.unodc.org", "indico.un.org", "press.un.org", "treaties.un.org"}
)

# The Ad Hoc Committee approved the draft text on 8 August 2024; the General Assembly adopted
# it by resolution 79/243 on 24 December 2024. An entry that links the resolution cannot have
# been reviewed against it before it existed.
APPROVED_BY_COMMITTEE = date(2024, 8, 8)
ADOPTED_BY_ASSEMBLY = date(2024, 12, 24)
RESOLUTION = "A/RES/79/243"

# Sources whose date is not in their address.
ARTICLE_19_BLUEPRINT = "https://article19.org/resources/un-cybercrime-convention-a-blueprint-for-human-rights-violations"
SOURCE_DATES = {ARTICLE_19_BLUEPRINT: date(2024, 10, 18)}

# A date in an address, as news sites and blogs write it: /2024/08/07/ or /2024/07/.
DATED_PATH = re.compile(r"/(20\d\d)/(0[1-9]|1[0-2])/(?:(0[1-9]|[12]\d|3[01])/)?")


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(REPO / "config")


def clauses_by_id(config: Config) -> dict[str, Clause]:
    return {clause.id: clause for clause in config.clauses()}


def host(url: str) -> str:
    return (urlsplit(url).hostname or "").casefold()


def links_the_resolution(url: str) -> bool:
    return RESOLUTION in unquote(url)


def source_date(url: str) -> date | None:
    """The publication date of a linked source, where its address or the table gives it."""
    if links_the_resolution(url):
        return ADOPTED_BY_ASSEMBLY
    if url in SOURCE_DATES:
        return SOURCE_DATES[url]
    found = DATED_PATH.search(urlsplit(url).path)
    if found is None:
        return None
    year, month, day = found.groups()
    return date(int(year), int(month), int(day or 1))


def newest(dates: Iterable[date | None]) -> date | None:
    known = [d for d in dates if d is not None]
    return max(known) if known else None


def test_every_clause_link_is_a_primary_source(shipped: Config) -> None:
    second_hand = {
        clause.id: [url for url in clause.links if host(url) not in CLAUSE_HOSTS]
        for clause in shipped.clauses()
    }
    assert not {cid: urls for cid, urls in second_hand.items() if urls}


def test_every_clause_links_the_adopted_text(shipped: Config) -> None:
    without = [c.id for c in shipped.clauses() if not any(map(links_the_resolution, c.links))]
    assert not without


def test_no_clause_was_reviewed_before_the_sources_it_links(shipped: Config) -> None:
    early = {}
    for clause in shipped.clauses():
        floor = newest(source_date(url) for url in clause.links)
        if floor is not None and (clause.updated is None or clause.updated < floor):
            early[clause.id] = (clause.updated, floor)
    assert not early


def test_clauses_on_the_adopted_text_postdate_its_approval(shipped: Config) -> None:
    early = [
        c.id
        for c in shipped.clauses()
        if any(map(links_the_resolution, c.links))
        and (c.updated is None or c.updated < APPROVED_BY_COMMITTEE)
    ]
    assert not early


def test_article_62_is_titled_as_in_the_text(shipped: Config) -> None:
    assert clauses_by_id(shipped)["art-62"].title == "Adoption of supplementary protocols"


def test_live_surveillance_assistance_spans_articles_45_and_46(shipped: Config) -> None:
    clause = clauses_by_id(shipped)["art-46"]
    assert clause.article == "45-46"
    assert "real-time collection of traffic data" in clause.title
    assert "interception of content data" in clause.title


# Each summary must state what the adopted text says; the phrases forbidden are the misreadings
# the entries once carried.
SUMMARY_FACTS = [
    # 4(2): the article establishes no offence under this Convention
    ("art-4", ("paragraph 2", "none of them an offence under this Convention"), ()),
    # 7(1): intent is required; 7(2): security measures, dishonest intent or a connected
    # system are what a state may add
    (
        "art-7",
        ("Intentional access", "7(2)", "security measures", "connected"),
        ("intent or harm",),
    ),
    # 11(2): any purpose other than committing an offence, testing being one example;
    # 11(3): a reservation is possible
    (
        "art-11",
        ("Paragraph 2", "any purpose other than", "one example", "paragraph 3", "reserve"),
        ("authorised testing only",),
    ),
    # the objection in the draft rules refers an application to the Conference, it does not
    # block it; article 57 itself leaves the rules on observers to the Conference
    (
        "art-57",
        ("rules of procedure", "observers", "Rule 17(2)", "to decide"),
        ("block an NGO's accreditation",),
    ),
]


@pytest.mark.parametrize(
    ("clause_id", "required", "forbidden"),
    SUMMARY_FACTS,
    ids=[fact[0] for fact in SUMMARY_FACTS],
)
def test_summary_states_the_text(
    shipped: Config, clause_id: str, required: tuple[str, ...], forbidden: tuple[str, ...]
) -> None:
    summary = clauses_by_id(shipped)[clause_id].summary
    assert [p for p in required if p not in summary] == []
    assert [p for p in forbidden if p in summary] == []


def test_every_session_has_a_primary_source(shipped: Config) -> None:
    unsourced = {
        s.id: s.url
        for s in shipped.sessions_file.sessions
        if s.url is None or host(s.url) not in SESSION_HOSTS
    }
    assert not unsourced
