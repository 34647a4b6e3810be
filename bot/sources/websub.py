"""WebSub at the edge: hub discovery, subscription requests, signature checks.

- ``discover``: the hub and self URLs a feed advertises, in its ``Link`` headers first, else in
  its ``<link>`` / ``<atom:link>`` elements;
- ``request_hub``: one subscribe or unsubscribe request through the shared client session; the
  form (which holds the secret) never reaches a log or an error;
- ``signature_valid``: ``X-Hub-Signature: method=hex`` for any method the specification lists,
  compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import aiohttp

from bot.domain.websub import Hub
from bot.sources.http import HttpFetcher

#: The methods of ``X-Hub-Signature`` the specification lists.
SIGNATURE_METHODS = frozenset({"sha1", "sha256", "sha384", "sha512"})
#: How much of a document is searched for its hub (feed-level links come first).
DISCOVERY_BYTES = 256 * 1024

_HEADER_LINK = re.compile(r"<([^>]*)>\s*((?:;[^,<]*)*)")
_REL = re.compile(r"""(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))""", re.IGNORECASE)
_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?link\b([^>]*)>", re.IGNORECASE)
_ATTR = re.compile(rb"""([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")


def _header_links(values: Iterable[str]) -> list[tuple[set[str], str]]:
    found = []
    for value in values:
        for match in _HEADER_LINK.finditer(value):
            rel = _REL.search(match[2])
            if rel is not None:
                found.append(((rel[1] or rel[2] or "").lower().split(), match[1].strip()))
    return [(set(rels), href) for rels, href in found]


def _document_links(body: bytes) -> list[tuple[set[str], str]]:
    found = []
    for match in _ELEMENT.finditer(body[:DISCOVERY_BYTES]):
        attrs = {
            m[1].decode("ascii", "replace").lower(): (m[2] if m[2] is not None else m[3])
            for m in _ATTR.finditer(match[1])
        }
        rel, href = attrs.get("rel"), attrs.get("href")
        if rel is None or href is None:
            continue
        text = html.unescape(href.decode("utf-8", "replace")).strip()
        found.append((set(rel.decode("utf-8", "replace").lower().split()), text))
    return found


def _first(links: Sequence[tuple[set[str], str]], rel: str, base: str) -> str | None:
    for rels, href in links:
        if rel in rels and href:
            url = urljoin(base, href)
            if urlsplit(url).scheme in ("http", "https"):
                return url
    return None


def discover(body: bytes, link_headers: Sequence[str], url: str) -> Hub | None:
    """The hub a feed at ``url`` advertises and its topic (its self URL, else ``url``)."""
    header = _header_links(link_headers)
    hub = _first(header, "hub", url)
    links = header
    if hub is None:
        links = _document_links(body)
        hub = _first(links, "hub", url)
    if hub is None:
        return None
    return Hub(hub, _first(links, "self", url) or url)


def new_secret() -> str:
    """A fresh secret for one subscription request (64 characters, under the 200 bytes the
    specification allows)."""
    return secrets.token_hex(32)


def signature_valid(header: str | None, secrets_: Iterable[str], body: bytes) -> bool:
    """Whether ``X-Hub-Signature`` is ``method=hex`` of ``body`` keyed with one of the
    secrets, for a method the specification lists."""
    if not header or "=" not in header:
        return False
    method, _, given = header.strip().partition("=")
    digest = method.strip().lower()
    if digest not in SIGNATURE_METHODS:
        return False
    given = given.strip().lower()
    ok = False
    for secret in secrets_:
        expected = hmac.new(secret.encode(), body, digest).hexdigest()
        ok |= hmac.compare_digest(expected, given)
    return ok


@dataclass(frozen=True, slots=True)
class HubAccepted:
    status: int


@dataclass(frozen=True, slots=True)
class HubFailed:
    reason: str


HubAnswer = HubAccepted | HubFailed


async def request_hub(fetcher: HttpFetcher, hub: str, form: Mapping[str, str]) -> HubAnswer:
    """POST a subscription request; the hub accepts with a 2xx (202 Accepted, then verifies
    the intent at the callback). Failures are values; their reasons never hold the form."""
    try:
        async with asyncio.timeout(fetcher.timeout.total_seconds()):
            async with fetcher.session.post(hub, data=dict(form), allow_redirects=False) as resp:
                await resp.content.read(64 * 1024)
                if 200 <= resp.status < 300:
                    return HubAccepted(resp.status)
                return HubFailed(f"HTTP {resp.status} {resp.reason or ''}".strip())
    except TimeoutError:
        return HubFailed(f"no answer within {fetcher.timeout.total_seconds():g}s")
    except (aiohttp.ClientError, OSError, ValueError) as err:
        return HubFailed(f"request failed: {type(err).__name__}")
