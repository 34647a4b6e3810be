"""States by name: the depositary's names, the names people type, and one key for both.

The depositary writes "United States of America", "Türkiye", "Viet Nam", "Netherlands (Kingdom
of the)"; people type "US", "Turkey", "Vietnam", "netherlands". ``name_key`` reduces a name to
a comparison key (case, accents, punctuation, footnote marks and a trailing "the" dropped) and
maps the common other names of a state to the key of the depositary's own, so that a state
stays one state when the depositary renames it or changes its footnote, and ``find_state``
finds it whichever way it is typed.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Other names of states, as people write them -> the name the depositary uses.
#: Only names that differ after ``normalise`` need an entry.
OTHER_NAMES: Mapping[str, tuple[str, ...]] = {
    "United States of America": ("US", "USA", "U.S.", "U.S.A.", "United States", "America"),
    "United Kingdom of Great Britain and Northern Ireland": (
        "UK",
        "U.K.",
        "United Kingdom",
        "Great Britain",
        "Britain",
    ),
    "Türkiye": ("Turkey", "Turkiye"),
    "Viet Nam": ("Vietnam",),
    "Russian Federation": ("Russia",),
    "Republic of Korea": ("South Korea", "Korea", "ROK"),
    "Democratic People's Republic of Korea": ("North Korea", "DPRK"),
    "Iran (Islamic Republic of)": ("Iran",),
    "Syrian Arab Republic": ("Syria",),
    "Lao People's Democratic Republic": ("Laos", "Lao PDR"),
    "Bolivia (Plurinational State of)": ("Bolivia",),
    "Venezuela (Bolivarian Republic of)": ("Venezuela",),
    "Micronesia (Federated States of)": ("Micronesia",),
    "Netherlands (Kingdom of the)": ("Netherlands", "Holland", "Kingdom of the Netherlands"),
    "United Republic of Tanzania": ("Tanzania",),
    "Republic of Moldova": ("Moldova",),
    "Czechia": ("Czech Republic",),
    "Côte d'Ivoire": ("Ivory Coast", "Cote dIvoire"),
    "Eswatini": ("Swaziland",),
    "North Macedonia": ("Macedonia",),
    "State of Palestine": ("Palestine",),
    "Cabo Verde": ("Cape Verde",),
    "Brunei Darussalam": ("Brunei",),
    "Democratic Republic of the Congo": ("DRC", "DR Congo", "Congo-Kinshasa"),
    "Congo": ("Republic of the Congo", "Congo-Brazzaville"),
    "Timor-Leste": ("East Timor",),
    "Myanmar": ("Burma",),
    "China": ("PRC", "People's Republic of China"),
    "European Union": ("EU",),
    "United Arab Emirates": ("UAE",),
    "Holy See": ("Vatican",),
}

_FOOTNOTE = re.compile(r"(?:<\s*superscript\s*>[^<]*<\s*/\s*superscript\s*>)|(?:[\d,\s*]+$)")
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def clean_name(name: str) -> str:
    """A participant's name as shown: footnote marks (``<superscript>3</superscript>`` written
    as text, trailing ``3`` or ``2,3``) and stray whitespace removed."""
    return " ".join(_FOOTNOTE.sub("", name).split())


def normalise(name: str) -> str:
    """Case, accents, punctuation and footnote marks dropped: ``Türkiye`` -> ``turkiye``."""
    text = unicodedata.normalize("NFKD", clean_name(name))
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("'", "").replace("’", "")
    return " ".join(_NOT_WORD.sub(" ", text).split())


def _build_aliases() -> dict[str, str]:
    aliases: dict[str, str] = {}
    for official, others in OTHER_NAMES.items():
        key = normalise(official)
        aliases[key] = key
        for other in others:
            aliases[normalise(other)] = key
    return aliases


_ALIASES = _build_aliases()


def name_key(name: str) -> str:
    """The key that identifies a state whichever of its names is written."""
    key = normalise(name)
    return _ALIASES.get(key, key)


@dataclass(frozen=True, slots=True)
class StateMatch:
    """What a typed name found: the one state (``found``), or the closest names."""

    found: str | None
    suggestions: tuple[str, ...] = ()


def find_state(query: str, names: Iterable[str]) -> StateMatch:
    """The state among ``names`` (the depositary's) that ``query`` names, tolerantly.

    An exact key or other name wins; then a single name that starts with, or contains as a
    word, what was typed ("korea" is ambiguous, "germ" is Germany); else the closest names.
    """
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(name_key(name), name)
    key = name_key(query)
    if not key:
        return StateMatch(None)
    if key in by_key:
        return StateMatch(by_key[key])
    starts = [n for k, n in by_key.items() if k.startswith(key)]
    if len(starts) == 1:
        return StateMatch(starts[0])
    words = [n for k, n in by_key.items() if f" {key} " in f" {k} "]
    if len(words) == 1:
        return StateMatch(words[0])
    candidates = sorted(set(starts) | set(words))
    if candidates:
        return StateMatch(None, tuple(candidates[:5]))
    close = difflib.get_close_matches(key, list(by_key), n=3, cutoff=0.6)
    return StateMatch(None, tuple(by_key[k] for k in close))
