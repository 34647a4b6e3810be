"""Database URLs as the bot shows them: with any password masked.

A ``postgresql://`` URL may hold a password, in its user part or as a ``password=`` query
parameter. Wherever the bot names the state's location (log lines, error messages, answers,
``treaty-bot migrate``), it shows ``masked(url)``; text that comes from elsewhere (a driver's
error message) goes through ``scrub`` before it is shown.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

#: The URL schemes that name a PostgreSQL database (libpq accepts both).
SCHEMES = ("postgresql", "postgres")

MASK = "***"

_SECRET_PARAM = re.compile(r"(?i)([?&](?:password|sslpassword)=)([^&#]*)")


def is_database_url(location: str) -> bool:
    """Whether ``location`` names a PostgreSQL database rather than a file."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


def _userinfo(rest: str) -> tuple[str, str]:
    """The user part of a URL's text after ``scheme://`` (``""`` if none) and what follows.

    libpq reads the user part up to the first ``@`` before any ``/``, so a password may hold
    ``#``, ``?`` or ``:`` as written; here it ends at the last ``@`` before the first ``/``, so
    that a password written with a raw ``@`` is masked whole too (more is hidden, never less).
    """
    slash = rest.find("/")
    head = rest if slash == -1 else rest[:slash]
    at = head.rfind("@")
    if at == -1:
        return "", rest
    return rest[:at], rest[at + 1 :]


def masked(url: str) -> str:
    """``url`` with its password (user part and query) replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, after = _userinfo(rest)
    user, colon, password = userinfo.partition(":")
    shown = f"{user}:{MASK}@" if colon and password else (f"{userinfo}@" if userinfo else "")
    after = _SECRET_PARAM.sub(lambda m: m.group(1) + (MASK if m.group(2) else ""), after)
    return f"{scheme}{sep}{shown}{after}"


def secrets_in(url: str) -> list[str]:
    """The passwords ``url`` holds, as written and decoded (longest first): however the user
    part is read (to the first ``@``, as libpq does, or to the last), and the query's."""
    found: set[str] = set()
    _, sep, rest = url.partition("://")
    if sep:
        userinfo, _ = _userinfo(rest)
        for candidate in (userinfo, userinfo.split("@", 1)[0]):
            password = candidate.partition(":")[2]
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
