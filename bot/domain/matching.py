"""Keyword filters: case-insensitive whole words or phrases, and ``/regex/``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass


def is_regex(term: str) -> bool:
    return len(term) >= 2 and term.startswith("/") and term.endswith("/")


def compile_term(term: str) -> re.Pattern[str]:
    """Compile one term; raise ``re.error`` for an invalid ``/regex/``."""
    if is_regex(term):
        return re.compile(term[1:-1], re.IGNORECASE)
    words = [re.escape(w) for w in term.split()]
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Matcher:
    """``match``: any of (none means everything matches); ``exclude``: none of."""

    match: tuple[tuple[str, re.Pattern[str]], ...]
    exclude: tuple[tuple[str, re.Pattern[str]], ...]

    @classmethod
    def build(cls, match: Sequence[str], exclude: Sequence[str]) -> Matcher:
        return cls(
            tuple((t, compile_term(t)) for t in match),
            tuple((t, compile_term(t)) for t in exclude),
        )

    def matches(self, *texts: str) -> tuple[str, ...] | None:
        """Return the terms that matched (empty when there is no ``match``), or ``None``."""
        haystack = "\n".join(texts)
        if any(p.search(haystack) for _, p in self.exclude):
            return None
        if not self.match:
            return ()
        found = tuple(term for term, p in self.match if p.search(haystack))
        return found or None
