"""Neutral rich text: what the domain says, before any platform renders it.

Text held here is *plain*: never markup. Each transport escapes it for its own platform, so a
feed title such as ``<!channel>`` or ``@room`` stays inert wherever it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Style = Literal["plain", "bold", "italic", "code"]


@dataclass(frozen=True, slots=True)
class Span:
    """A run of plain text with one style, optionally linked."""

    text: str
    style: Style = "plain"
    href: str | None = None


@dataclass(frozen=True, slots=True)
class Paragraph:
    spans: tuple[Span, ...]


@dataclass(frozen=True, slots=True)
class Bullets:
    items: tuple[tuple[Span, ...], ...]


Block = Paragraph | Bullets
Rich = tuple[Block, ...]


def plain(text: str) -> Span:
    return Span(text)


def bold(text: str) -> Span:
    return Span(text, "bold")


def italic(text: str) -> Span:
    return Span(text, "italic")


def link(text: str, href: str | None) -> Span:
    return Span(text, "plain", href)


def para(*spans: Span | str) -> Paragraph:
    return Paragraph(tuple(Span(s) if isinstance(s, str) else s for s in spans))


def render_spans_plain(spans: tuple[Span, ...]) -> str:
    out: list[str] = []
    for span in spans:
        if span.href and span.href != span.text:
            out.append(f"{span.text} <{span.href}>")
        else:
            out.append(span.text)
    return "".join(out)


def render_plain(blocks: Rich) -> str:
    """Render as plain text, one paragraph per line; links follow their text in ``<…>``."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            lines.append(render_spans_plain(block.spans))
        else:
            lines.extend(f"• {render_spans_plain(item)}" for item in block.items)
    return "\n".join(lines)


def shorten(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters on a word boundary, marking the cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: max(limit - 1, 0)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:") + "…"
