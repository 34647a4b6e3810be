"""The files of the TinyDB store: the seen keys beside the state file (``bot/store/seen.py``),
the state file itself as written and as refused, and what the store decodes once and keeps
(``bot/store/tinydb_store.py``)."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.model import FeedState, NewsRecord, SourceHealth, SourceId, SourceRecord
from bot.errors import StoreCorrupt, StoreError
from bot.store import codec, tinydb_store
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
    from bot.domain.follows import Follow, Person
    from bot.domain.sessions import Snapshot

    ann = Person("slack", "U0ANN")
    store = TinyDBStore(tmp_path / "state.json")
    store.commit(
        Changes(
            sources=[SourceRecord("hrw", health=SourceHealth(failures=2))],
            news=[news(1), news(3), news(2)],
            snapshots={"sessions": Snapshot(True)},
            follows={ann: (Follow("words", "privacy"),)},
        )
    )
    decoded: list[str] = []
    names = ("health_from_json", "news_from_json", "snapshot_from_json", "follows_from_json")
    for name in names:
        real = getattr(codec, name)
        monkeypatch.setattr(
            codec, name, lambda d, _real=real, _name=name: decoded.append(_name) or _real(d)
        )

    def read() -> None:
        assert store.healths() == {"hrw": SourceHealth(failures=2)}
        assert [n.key for n in store.recent_news(2)] == ["k3", "k2"]  # newest first
        assert store.snapshots() == {"sessions": Snapshot(True)}
        assert store.follows() == {ann: (Follow("words", "privacy"),)}

    read()
    assert sorted(decoded) == sorted([*names, "news_from_json", "news_from_json"])
    decoded.clear()
    read()
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


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"  \n", "the file is empty."),
        (b'{"meta": "\xff"}', "not UTF-8 at byte 10."),
        (b"{not json", "not valid JSON at line 1 column 2 (byte 1): "),
        (b'{"sources": []}', "not a treaty-bot state file (unexpected structure)."),
        (b'{"meta": {"1": {}}}', "not a treaty-bot state file (no schema mark in meta)."),
        (
            b'{"meta": {"1": {"schema": 1}}, "outbox": {"1": {"state": "sent"}}}',
            "outbox record 1 has no key.",
        ),
        (
            b'{"meta": {"1": {"schema": 1}}, "snapshots": {"4": {"data": {}}}}',
            "snapshots record 4 has no name.",
        ),
        (b'{"meta": {"1": {"schema": 99}}}', "written by a newer treaty-bot (schema 99;"),
        (b'{"meta": {"1": {"schema": "one"}}}', "written by another version (schema one)."),
    ],
)
def test_a_damaged_state_file_is_named_with_what_is_wrong(
    tmp_path: Path, raw: bytes, detail: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    with pytest.raises(StoreCorrupt) as raised:
        TinyDBStore(path)
    assert raised.value.resource == str(path)
    assert raised.value.detail.startswith(detail), raised.value.detail
    assert path.read_bytes() == raw  # left as it was


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "the disk is full"),
        (OSError(errno.EROFS, "Read-only file system"), "Read-only file system"),
        (OSError("the volume went away"), "the volume went away"),
    ],
)
def test_a_state_that_cannot_be_written_says_why_and_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError, reason: str
) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)

    def refuse(target: Path, parts: Iterable[bytes | str]) -> None:
        raise error

    monkeypatch.setattr(tinydb_store, "write_parts_atomically", refuse)
    with pytest.raises(StoreError) as raised:
        store.commit(Changes(sources=[SourceRecord("hrw")]))
    assert raised.value.detail == f"cannot write: {reason}; the previous state is kept"
    assert raised.value.resource == str(path)
    store.close()


def test_the_state_file_is_compact_json_that_keeps_its_characters(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    assert store.writes == 0
    seen = {"clé-ü": NOW}
    store.commit(Changes(sources=[SourceRecord("hrw", feed=FeedState(True, seen, {}))]))
    store.commit(Changes(sources=[SourceRecord("eff")]))
    assert store.writes == 2  # each commit that changed something wrote once
    text = path.read_text(encoding="utf-8")
    assert ", " not in text and '": ' not in text
    docs = {d["id"]: d for d in json.loads(text)["sources"].values()}
    assert {k: docs["eff"][k] for k in ("seen_file", "seen_hash", "seen_count")} == {
        "seen_file": None,
        "seen_hash": None,
        "seen_count": 0,
    }
    name = docs["hrw"]["seen_file"]
    assert (docs["hrw"]["seen_count"], len(docs["hrw"]["seen_hash"])) == (1, 24)
    raw = (tmp_path / "state.json.seen" / name).read_text(encoding="utf-8")
    assert raw == '{"clé-ü":"2026-11-28T09:00:00+00:00"}'
    store.close()


def test_fingerprints_given_to_stored_keys_are_written(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[SourceRecord("hrw", feed=FeedState(True, {"a": NOW}, {}))]))
    store.close()
    store = TinyDBStore(path)
    record = store.source("hrw")
    assert isinstance(record.feed.seen, StoredSeen)
    printed = replace(record, feed=FeedState(True, record.feed.seen, {"a": "fp-a"}))
    store.commit(Changes(sources=[printed]))
    store.close()
    again = TinyDBStore(path, read_only=True)
    assert dict(again.source("hrw").feed.fingerprints) == {"a": "fp-a"}
    again.close()


def test_an_update_of_an_unknown_row_does_not_stop_the_others(tmp_path: Path) -> None:
    from bot.domain.model import Alert, AlertId, ChannelName, Delivery
    from bot.store.base import DeliveryUpdate

    store = TinyDBStore(tmp_path / "state.json")
    alert = Alert("news", AlertId("a"), (ChannelName("alerts"),), "x", "T", None, "", NOW)
    row = Delivery("a|alerts|console", store.next_seq(), alert, ChannelName("alerts"), "console")
    store.commit(Changes(enqueue=[row]))
    store.commit(
        Changes(
            deliveries=[
                DeliveryUpdate("pruned-long-ago", "sent", NOW),
                DeliveryUpdate(row.key, "sent", NOW),
            ]
        )
    )
    assert [r.key for r in store.deliveries(("sent",))] == [row.key]
    store.close()


def test_sent_rows_are_kept_thirty_days_whatever_the_machine_s_zone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bot.domain.model import Alert, AlertId, ChannelName, Delivery
    from bot.store.base import DeliveryUpdate

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        store = TinyDBStore(tmp_path / "state.json")

        def sent(n: int, at: datetime) -> str:
            alert = Alert("news", AlertId(f"a{n}"), (ChannelName("x"),), "x", "T", None, "", at)
            row = Delivery(f"a{n}|x|console", store.next_seq(), alert, ChannelName("x"), "console")
            store.commit(Changes(enqueue=[row]))
            store.commit(Changes(deliveries=[DeliveryUpdate(row.key, "sent", at)]))
            return row.key

        recent = sent(1, NOW - timedelta(days=30) + timedelta(hours=4))
        old = sent(2, NOW - timedelta(days=30, hours=1))
        sent(3, NOW)  # marking one sent now prunes what is older than 30 days
        kept = {r.key for r in store.deliveries(("sent",))}
        assert recent in kept and old not in kept
        store.close()
    finally:
        monkeypatch.undo()
        time.tzset()
