"""The files of seen keys beside the state file (``bot/store/seen.py``), and what the TinyDB
store decodes once and keeps (``bot/store/tinydb_store.py``)."""

from __future__ import annotations

import errno
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.model import NewsRecord, SourceHealth, SourceId, SourceRecord
from bot.errors import StoreCorrupt, StoreError
from bot.store import codec
from bot.store.base import Changes
from bot.store.seen import SeenFiles, StoredFingerprints, StoredSeen
from bot.store.tinydb_store import NEWS_KEPT, TinyDBStore

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def test_a_file_is_named_after_its_source_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    files = SeenFiles(tmp_path / "data" / "deeper" / "state.json.seen", read_only=False)
    first = files.write_new("hrw/news: ü" + "x" * 100, b'{"a": 1}')
    second = files.write_new("eff", b"{}")
    assert re.fullmatch(r"hrw_news___" + "x" * 49 + r"-[0-9a-f]{12}\.json", first), first
    assert re.fullmatch(r"eff-[0-9a-f]{12}\.json", second), second
    assert stat.S_IMODE((files.directory / first).stat().st_mode) == 0o600
    assert (files.directory / first).read_bytes() == b'{"a": 1}'
    assert files.written == [first, second]
    assert files.bytes_written == len(b'{"a": 1}') + len(b"{}")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EFBIG, "File too large"), "the disk is full"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
        (OSError("the device went away"), "the device went away"),
    ],
)
def test_a_file_that_cannot_be_written_says_why_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str
) -> None:
    files = SeenFiles(tmp_path / "s.seen", read_only=False)

    def refuse(fd: int, data: object) -> int:
        raise error

    monkeypatch.setattr(os, "write", refuse)
    with pytest.raises(StoreError) as raised:
        files.write_new("hrw", b"{}")
    assert raised.value.detail == f"cannot write: {reason}; the previous state is kept"
    [name] = files.written
    assert raised.value.resource == str(tmp_path / "s.seen" / name)
    assert files.bytes_written == 0


def test_a_file_that_cannot_be_read_says_why_and_names_the_file(tmp_path: Path) -> None:
    files = SeenFiles(tmp_path, read_only=False)
    with pytest.raises(StoreError) as missing:
        files.read("gone.json")
    assert (
        missing.value.detail == f"cannot read {tmp_path / 'gone.json'}: No such file or directory"
    )
    assert missing.value.resource == str(tmp_path / "gone.json")

    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(StoreCorrupt) as broken:
        files.read("broken.json")
    assert broken.value.detail.startswith("not valid JSON (")
    assert broken.value.detail.endswith(
        "); move the file away and restart: the source's next poll then only remembers what "
        "its feed lists"
    )
    assert broken.value.resource == str(tmp_path / "broken.json")

    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(StoreCorrupt) as wrong:
        files.read("list.json")
    assert (wrong.value.detail, wrong.value.resource) == (
        "not a file of seen items",
        str(tmp_path / "list.json"),
    )


def test_stored_keys_count_and_show_themselves_before_and_after_reading() -> None:
    seen = StoredSeen("hrw-1.json", 3, lambda: {"a": NOW, "b": NOW})
    prints = StoredFingerprints("hrw-1.json", lambda: {"a": "fp"})
    assert len(seen) == 3  # as the state counted them, without reading the file
    assert repr(seen) == "StoredSeen('hrw-1.json', 3 keys, unread)"
    assert repr(prints) == "StoredFingerprints('hrw-1.json', unread)"
    assert dict(seen) == {"a": NOW, "b": NOW} and dict(prints) == {"a": "fp"}
    assert len(seen) == 2  # what the file holds, once read
    assert repr(seen) == "StoredSeen('hrw-1.json', 2 keys)"
    assert repr(prints) == "StoredFingerprints('hrw-1.json')"


def news(n: int) -> NewsRecord:
    return NewsRecord(SourceId("hrw"), f"k{n}", f"T{n}", None, None, NOW + timedelta(hours=n), ())


def test_reads_are_decoded_once_until_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = TinyDBStore(tmp_path / "state.json")
    store.commit(
        Changes(
            sources=[SourceRecord("hrw", health=SourceHealth(failures=2))],
            news=[news(1), news(3), news(2)],
        )
    )
    decoded: list[str] = []
    for name in ("health_from_json", "news_from_json"):
        real = getattr(codec, name)
        monkeypatch.setattr(
            codec, name, lambda d, _real=real, _name=name: decoded.append(_name) or _real(d)
        )
    assert store.healths() == {"hrw": SourceHealth(failures=2)}
    assert [n.key for n in store.recent_news(2)] == ["k3", "k2"]  # newest first
    assert sorted(decoded) == [
        "health_from_json",
        "news_from_json",
        "news_from_json",
        "news_from_json",
    ]
    decoded.clear()
    assert store.healths() == {"hrw": SourceHealth(failures=2)}
    assert [n.key for n in store.recent_news(10)] == ["k3", "k2", "k1"]
    assert decoded == []  # kept, not decoded again
    store.commit(Changes(news=[news(0)]))
    assert [n.key for n in store.recent_news(10)] == ["k3", "k2", "k1", "k0"]
    assert decoded == ["news_from_json"] * 4
    store.close()


def test_the_oldest_news_records_go_first_past_the_limit(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "state.json")
    # seen in an order unlike their age: the oldest are pruned, not the first inserted
    order = [*range(NEWS_KEPT - 1, -1, -1)]
    store.commit(Changes(news=[news(n) for n in order]))
    assert len(store.recent_news(NEWS_KEPT + 10)) == NEWS_KEPT  # exactly at the limit: all kept
    store.commit(Changes(news=[news(NEWS_KEPT + 1), news(-2), news(NEWS_KEPT)]))
    kept = store.recent_news(NEWS_KEPT + 10)
    assert len(kept) == NEWS_KEPT
    assert [n.key for n in kept[:2]] == [f"k{NEWS_KEPT + 1}", f"k{NEWS_KEPT}"]
    assert kept[-1].key == "k2"  # k-2, k0 and k1 went
    store.close()
