"""Bodies decoded off the event loop: each content coding a server may send, and the bound on
the decoded size."""

from __future__ import annotations

import gzip
import hashlib
import zlib

import pytest

from bot.sources.http import _decoded, _TooLarge

BODY = b"<rss>" + b"cybercrime " * 500 + b"</rss>"


def raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("coding", "raw"),
    [
        ("", BODY),
        ("identity", BODY),
        ("gzip", gzip.compress(BODY)),
        ("x-gzip", gzip.compress(BODY)),
        (" GZIP ", gzip.compress(BODY)),
        ("gzip", gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])),  # two members
        ("gzip", gzip.compress(BODY) + b"\0\0\0"),  # padding after the member
        ("deflate", zlib.compress(BODY)),
        ("deflate", raw_deflate(BODY)),
    ],
)
def test_every_coding_decodes_to_the_body_and_its_digest(coding: str, raw: bytes) -> None:
    assert _decoded(raw, coding, len(BODY)) == (BODY, hashlib.sha256(BODY).hexdigest())


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_body_one_byte_over_the_cap_is_too_large(coding: str) -> None:
    raw = gzip.compress(BODY) if coding == "gzip" else zlib.compress(BODY)
    with pytest.raises(_TooLarge):
        _decoded(raw, coding, len(BODY) - 1)


def test_a_gzip_bomb_is_stopped_at_the_cap() -> None:
    bomb = gzip.compress(b"\0" * (64 << 20))
    with pytest.raises(_TooLarge):
        _decoded(bomb, "gzip", 1 << 20)


@pytest.mark.parametrize(
    ("coding", "raw", "reason"),
    [
        ("gzip", gzip.compress(BODY)[:-20], "ends early"),
        ("gzip", b"not gzip at all", "header"),
        ("br", BODY, "unsupported Content-Encoding 'br'"),
    ],
)
def test_a_broken_or_unknown_coding_is_an_error(coding: str, raw: bytes, reason: str) -> None:
    with pytest.raises((ValueError, zlib.error)) as err:
        _decoded(raw, coding, 1 << 20)
    assert reason in str(err.value)
