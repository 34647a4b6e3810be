"""Database URLs as the bot shows them: with any password masked.

A ``postgresql://`` URL may hold a password, in its user part or as a ``password=`` query
parameter. Wherever the bot names the state's location (log lines, error messages, answers,
``treaty-bot migrate``), it shows ``masked(url)``; text that comes from elsewhere (a driver's
error message) goes through ``scrub`` before it is shown.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

#: The URL schemes that name a PostgreSQL database (libpq accepts both).
SCHEMES = ("postgresql", "postgres")

MASK = "***"

_SECRET_PARAM = re.compile(r"(?i)([?&](?:password|sslpassword)=)([^&#]*)")


def is_database_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def masked(url: str) -> str:
    """``url`` with its password (user part and query) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc_end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            netloc_end = min(netloc_end, at)
    netloc, tail = rest[:netloc_end], rest[netloc_end:]
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, password = userinfo.partition(":")
        if colon and password:
            netloc = f"{user}:{MASK}@{host}"
    tail = _SECRET_PARAM.sub(lambda m: m.group(1) + (MASK if m.group(2) else ""), tail)
    return f"{scheme}{sep}{netloc}{tail}"


def secrets_in(url: str) -> list[str]:
    """The passwords ``url`` holds, as written and decoded (longest first)."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
    if password:
        found.update({password, unquote(password)})
    for match in _SECRET_PARAM.finditer(url):
        if match.group(2):
            found.update({match.group(2), unquote(match.group(2))})
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` with the URL shown masked and every password of ``url`` replaced."""
    text = text.replace(url, masked(url))
    for secret in secrets_in(url):
        text = text.replace(secret, MASK)
    return text
