"""Feed bytes -> ``FeedItem`` values, with feedparser (RSS, Atom) or a small JSON Feed reader.

Only bytes we fetched ever reach feedparser, wrapped in a stream, so it never opens a URL or a
local path itself. Text comes out plain: HTML is reduced to its text, so nothing of it is ever
rendered as markup.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import xml.parsers.expat
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import feedparser
import feedparser.encodings as feedparser_encodings
import feedparser.sanitizer as feedparser_sanitizer

from bot.domain.model import FeedItem
from bot.sources.parsed import ParsedFeed, ParseFailed

__all__ = ["ParseFailed", "ParsedFeed", "html_to_text", "item_key", "parse_feed"]

MAX_ITEMS = 500
_HTML_TYPES = ("text/html", "application/xhtml+xml")


class _TextExtractor(HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template"})
    _BREAKS = frozenset({"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BREAKS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed. Never markup."""
    if "<" not in markup and "&" not in markup:
        return " ".join(markup.split())
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.parts).split())


def _clean(value: str) -> str:
    # control characters other than whitespace have no business in a message
    return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]", "", value)


def _detail_text(entry: Any, field: str) -> str:
    value = entry.get(field) or ""
    if not isinstance(value, str):
        return ""
    detail = entry.get(f"{field}_detail") or {}
    kind = detail.get("type", "text/html") if isinstance(detail, dict) else "text/html"
    text = html_to_text(value) if kind in _HTML_TYPES else " ".join(value.split())
    return _clean(text)


def _when(entry: Any) -> datetime | None:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            try:
                year, month, day, hour, minute, second = (int(v) for v in parsed[:6])
                if not 1 < year < 9999:  # no arithmetic or time zone would work on it
                    continue
                return datetime(year, month, day, hour, minute, second, tzinfo=UTC)
            except (TypeError, ValueError):
                continue
    return None


def item_key(guid: str | None, link: str | None, title: str, date_text: str) -> str:
    """Identity of an item: its guid, else its link, else a digest of title and date."""
    if guid and guid.strip():
        return guid.strip()
    if link and link.strip():
        return link.strip()
    return "sha256:" + hashlib.sha256(f"{title}\x1f{date_text}".encode()).hexdigest()[:32]


def _safe_link(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if re.match(r"^https?://", value, re.IGNORECASE) else None


def _looks_like_html(body: bytes, content_type: str | None) -> bool:
    head = body[:2048].lower()
    return (
        b"<html" in head
        or b"<!doctype html" in head
        or (content_type is not None and "text/html" in content_type.lower())
    )


def parse_feed(body: bytes, content_type: str | None = None) -> ParsedFeed | ParseFailed:
    """Parse a feed document; a document that is not a feed is a ``ParseFailed``."""
    stripped = body.lstrip()
    if stripped[:1] == b"{" or (content_type and "json" in content_type.lower()):
        return _parse_json_feed(body)
    read = _read_xml(body, content_type)
    if isinstance(read, ParseFailed):
        return read
    result, text = read
    if not result.get("version") and not result.entries and _misdeclared_utf8(body, result):
        # UTF-8 that declares another encoding (.NET writers declare utf-16): feedparser
        # believed the declaration, read nonsense, or not, depending on the length's parity
        again = _read_xml(body, _as_utf8(content_type))
        if isinstance(again, ParseFailed):
            return again
        if again[0].get("version") or again[0].entries:
            result, text = again
    bozo = result.get("bozo_exception")
    if not result.get("version") and not result.entries:
        if not stripped:
            return ParseFailed("not a feed: the response was empty")
        if _looks_like_html(body, content_type):
            return ParseFailed("not a feed: the server sent an HTML page")
        if bozo is not None:
            return ParseFailed(f"not a feed: {_describe(bozo)}")
        return ParseFailed("not a feed: no RSS, Atom or JSON Feed document found")
    entries = list(result.entries)
    cut_off = 0
    if bozo is not None:
        # a document cut short ends in an item that feedparser still reports, with whatever
        # fields came before the cut (a key from its link or title instead of its guid): only
        # items whose end tag arrived are complete
        cut_off = max(0, len(entries) - len(_ITEM_END.findall(text)))
        entries = entries[: len(entries) - cut_off]
    items = []
    for entry in entries[:MAX_ITEMS]:
        title = _detail_text(entry, "title")
        summary = _detail_text(entry, "summary")
        link = _safe_link(entry.get("link"))
        date_text = str(entry.get("published") or entry.get("updated") or "")
        guid = entry.get("id") if isinstance(entry.get("id"), str) else None
        items.append(
            FeedItem(item_key(guid, link, title, date_text), title, link, summary, _when(entry))
        )
    feed_title = _detail_text(result.feed, "title") or None
    warning = f"feed is not well-formed: {_describe(bozo)}" if bozo is not None else None
    if warning and cut_off:
        warning += f"; {cut_off} incomplete item(s) at the end left out"
    return ParsedFeed(feed_title, tuple(items), warning)


_ITEM_END = re.compile(rb"</(?:[\w.-]+:)?(?:item|entry)\s*>", re.IGNORECASE)
_CHARACTER_REFERENCE = re.compile(r"&#\w+;")
_ENTITIES_REFUSED = (
    "not a feed: the document declares XML entities, which are refused "
    "(they can exhaust memory or read local files)"
)


class _Stop(Exception):
    pass


def _read_xml(body: bytes, content_type: str | None) -> tuple[Any, bytes] | ParseFailed:
    """feedparser's result and the UTF-8 text it read, unless the text declares entities."""
    headers = {"content-type": content_type} if content_type else {}
    # the same conversion feedparser makes first, so that no encoding hides a declaration
    text: bytes = feedparser_encodings.convert_to_utf8(dict(headers), body, {})
    if _declares_entities(text):
        return ParseFailed(_ENTITIES_REFUSED)
    result = feedparser.parse(
        io.BytesIO(body),
        response_headers=headers,
        sanitize_html=False,
        resolve_relative_uris=False,
    )
    return result, text


def _declares_entities(text: bytes) -> bool:
    """Whether the document declares an entity other than one character.

    Only ``<!ENTITY nbsp "&#160;">`` and the like are let through. feedparser drops external
    and nested declarations but keeps those whose value is plain text, and its fallback parser
    expands them without limit: a 100 KB entity used 10 000 times is a gigabyte. Declarations
    are looked for the way each parser will find them: in the entities ``replace_doctype``
    hands to the fallback parser, and by expat, up to the root element, in the document as
    sent and as ``replace_doctype`` rewrites it for the strict parser.
    """
    _version, rewritten, loose_entities = feedparser_sanitizer.replace_doctype(text)
    if any(not _CHARACTER_REFERENCE.fullmatch(value) for value in loose_entities.values()):
        return True
    return _expat_declares_entities(text) or _expat_declares_entities(rewritten)


def _expat_declares_entities(text: bytes) -> bool:
    def on_entity(
        name: str,
        is_parameter_entity: bool,
        value: str | None,
        base: str | None,
        system_id: str,
        public_id: str | None,
        notation_name: str | None,
    ) -> None:
        if is_parameter_entity or value is None or len(value) > 1:
            raise _Stop(name)

    def on_root(name: str, attributes: Any) -> None:
        raise _Stop()

    parser = xml.parsers.expat.ParserCreate()
    parser.EntityDeclHandler = on_entity
    parser.StartElementHandler = on_root
    try:
        parser.Parse(text, True)
    except _Stop as stop:
        return bool(stop.args)
    except xml.parsers.expat.ExpatError:
        pass  # expat stops here too, before it could expand a reference
    return False


def _misdeclared_utf8(body: bytes, result: Any) -> bool:
    if str(result.get("encoding") or "").lower().replace("_", "-") in ("utf-8", "utf8"):
        return False
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _as_utf8(content_type: str | None) -> str:
    media_type = (content_type or "").split(";", 1)[0].strip() or "application/xml"
    return f"{media_type}; charset=utf-8"


def _describe(err: Any) -> str:
    line = getattr(err, "getLineNumber", None)
    text = getattr(err, "getMessage", None)
    message = text() if callable(text) else str(err)
    if callable(line):
        return f"{message} (line {line()})"
    return message or type(err).__name__


def _parse_json_feed(body: bytes) -> ParsedFeed | ParseFailed:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        return ParseFailed(f"not a feed: invalid JSON: {err}")
    if not isinstance(doc, dict) or not str(doc.get("version", "")).startswith(
        "https://jsonfeed.org/version/"
    ):
        return ParseFailed("not a feed: JSON without a JSON Feed version")
    raw_items = doc.get("items")
    if not isinstance(raw_items, list):
        return ParseFailed("not a feed: JSON Feed without an items list")
    items = []
    for raw in raw_items[:MAX_ITEMS]:
        if not isinstance(raw, dict):
            continue
        title = _clean(" ".join(str(raw.get("title") or "").split()))
        if raw.get("content_text") or raw.get("summary"):
            summary = " ".join(str(raw.get("summary") or raw.get("content_text")).split())
        else:
            summary = html_to_text(str(raw.get("content_html") or ""))
        link = _safe_link(raw.get("url"))
        date_text = str(raw.get("date_published") or raw.get("date_modified") or "")
        published = None
        if date_text:
            try:
                published = datetime.fromisoformat(date_text.replace("Z", "+00:00"))
                published = published.astimezone(UTC) if published.tzinfo else None
            except ValueError:
                published = None
        guid = raw.get("id")
        guid_text = str(guid) if guid is not None else None
        items.append(
            FeedItem(
                item_key(guid_text, link, title, date_text), title, link, _clean(summary), published
            )
        )
    feed_title = doc.get("title")
    return ParsedFeed(str(feed_title) if feed_title else None, tuple(items))
