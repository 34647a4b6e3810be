"""The TinyDB store at its edges: the files it keeps and what they hold, states it did not
write itself, what it says when it cannot open one, and closing it from the event loop."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.follows import Follow, Person
from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    Delivery,
    FeedState,
    NewsRecord,
    SessionEvent,
    SourceHealth,
    SourceId,
    SourceRecord,
    Validators,
)
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.text import para
from bot.errors import StoreCorrupt, StoreError, StoreLocked
from bot.store import codec
from bot.store.base import Changes, DeliveryUpdate
from bot.store.runner import AsyncStore
from bot.store.tinydb_store import TinyDBStore
from bot.store.urls import is_database_url

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
DATA = Path(__file__).parent.parent / "data" / "store-edges"


def record(n: int, seen: int = 3) -> SourceRecord:
    return SourceRecord(f"feed-{n}", feed=FeedState(True, {f"k{i}": NOW for i in range(seen)}))


def alert(n: int) -> Alert:
    return Alert(
        "news", AlertId(f"news:x:{n}"), (ChannelName("alerts"),), "x", f"T{n}", None, "", NOW
    )


def delivery(n: int, seq: int, **fields: Any) -> Delivery:
    return Delivery(
        f"news:x:{n}|alerts|console", seq, alert(n), ChannelName("alerts"), "console", **fields
    )


def nothing_changes() -> Changes:
    """A commit with something in it that changes nothing: an update of a row long gone."""
    return Changes(deliveries=[DeliveryUpdate("gone|alerts|console", "pending", NOW)])


# -- states the store did not write itself ----------------------------------------------------


def test_a_state_file_as_this_version_writes_it_reads_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    shutil.copy(DATA / "state.json", path)
    store = TinyDBStore(path, read_only=True)
    assert store.source("hrw") == SourceRecord(
        "hrw",
        Validators('"e1"', None, "abc"),
        FeedState(True, {}),
        SourceHealth(failures=2, last_error="Zeitüberschreitung", last_error_at=NOW),
    )
    [row] = store.deliveries()
    assert (row.key, row.seq, row.state, row.alert.title, row.alert.body) == (
        "news:hrw:1|alerts|console",
        1,
        "pending",
        "Türkiye signs",
        (para("hello"),),
    )
    assert store.next_seq() > row.seq
    assert store.recent_news(10) == [
        NewsRecord(
            SourceId("hrw"), "k1", "Türkiye signs", "https://e.org/1", None, NOW, ("cybercrime",)
        )
    ]
    assert store.follows() == {Person("slack", "U0ANN"): (Follow("state", "Türkiye"),)}
    call = SessionEvent("cal:call@x", "cal", "Coalition call", NOW + timedelta(days=3))
    assert store.snapshots() == {"cal": Snapshot(True, {call.key: call}, {call.key: NOW})}
    assert store.reminders() == ReminderState({call.key: {3600: "x"}})
    store.close()


def test_a_state_saved_as_utf16_opens_and_is_written_back_as_utf8(tmp_path: Path) -> None:
    """As an editor or a shell redirection on Windows may save it."""
    path = tmp_path / "state.json"
    text = (DATA / "state.json").read_text(encoding="utf-8")
    path.write_bytes(text.encode("utf-16"))
    store = TinyDBStore(path)
    assert store.follows() == {Person("slack", "U0ANN"): (Follow("state", "Türkiye"),)}
    store.commit(Changes(sources=[SourceRecord("eff")]))
    store.close()
    written = json.loads(path.read_bytes().decode("utf-8"))
    assert sorted(d["id"] for d in written["sources"].values()) == ["eff", "hrw"]
    assert written["follows"] == json.loads(text)["follows"]


def test_a_state_laid_out_by_hand_is_left_as_it_is_until_something_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    laid_out = json.dumps(
        json.loads((DATA / "state.json").read_text(encoding="utf-8")), indent=2, ensure_ascii=False
    ).encode()
    path.write_bytes(laid_out)
    store = TinyDBStore(path)
    store.commit(nothing_changes())
    assert (path.read_bytes(), store.writes) == (laid_out, 0)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StoreError, match="disk is full"):
        store.commit(Changes(sources=[SourceRecord("eff")]))
    monkeypatch.undo()
    store.commit(nothing_changes())  # what the failed commit did is gone, nothing to write
    assert (path.read_bytes(), store.writes) == (laid_out, 0)
    store.commit(Changes(sources=[SourceRecord("eff")]))
    assert store.writes == 1 and b"\n" not in path.read_bytes()
    store.close()


def test_done_rows_from_older_states_are_pruned_even_without_a_time_or_with_one_key_twice(
    tmp_path: Path,
) -> None:
    """Rows that went out are bounded whatever wrote them: one without the time it went out is
    pruned at the next pruning, and two rows of one key go together."""
    path = tmp_path / "state.json"
    old = NOW - timedelta(days=31)
    rows = [
        delivery(1, 1, state="sent"),
        delivery(2, 2, state="sent", sent_at=old),
        delivery(2, 3, state="sent", sent_at=old),
        delivery(3, 4, state="grouped", sent_at=NOW - timedelta(days=2)),
        delivery(4, 5),
    ]
    outbox = {str(n): codec.delivery_to_json(r) for n, r in enumerate(rows, 1)}
    path.write_text(json.dumps({"meta": {"1": {"schema": 1}}, "outbox": outbox}))
    store = TinyDBStore(path)
    assert len(store.deliveries(("sent", "grouped"))) == 4
    store.commit(Changes(deliveries=[DeliveryUpdate(rows[4].key, "sent", NOW)]))
    kept = store.deliveries(("sent", "grouped"))
    assert [r.key for r in kept] == [rows[3].key, rows[4].key]
    assert not store.has_delivery(rows[0].key) and not store.has_delivery(rows[1].key)
    store.close()


def test_a_source_record_with_only_its_id_reads_as_a_source_never_polled() -> None:
    assert codec.source_from_json({"id": "hrw"}) == SourceRecord("hrw")
    assert codec.health_from_json({"id": "hrw", "health": {}}) == SourceHealth()


# -- the files --------------------------------------------------------------------------------


def test_a_state_in_directories_that_do_not_exist_yet_creates_them(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "treaty-bot" / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1)]))
    store.close()
    assert TinyDBStore(path, read_only=True).source("feed-1") == record(1)


def test_a_reopened_state_committed_with_the_same_values_is_not_rewritten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(
        Changes(
            sources=[record(1)], news=[NewsRecord(SourceId("x"), "k", "T", None, None, NOW, ())]
        )
    )
    store.close()
    before = (path.stat().st_ino, path.read_bytes())
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1)]))
    assert store.writes == 0
    assert (path.stat().st_ino, path.read_bytes()) == before
    store.close()


def test_the_state_file_keeps_its_characters_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    title = "Türkiye ratifies — 批准"
    store.commit(Changes(news=[NewsRecord(SourceId("x"), "k", title, None, None, NOW, ())]))
    store.close()
    assert title.encode() in path.read_bytes()


def test_the_lock_file_sits_beside_the_state_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    umask = os.umask(0o022)
    try:
        store = TinyDBStore(path)
    finally:
        os.umask(umask)
    lock = tmp_path / "state.json.lock"
    assert lock.read_text() == str(os.getpid())
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644  # anyone may see who holds it
    store.close()


@pytest.mark.parametrize(
    ("content", "holder"),
    [
        (b"", "unknown"),  # the holder has not written its pid (yet)
        (b"\xff\xfe4242\n", "\ufffd\ufffd4242"),
    ],
)
def test_a_lock_held_by_another_program_refuses_the_store_whatever_the_file_holds(
    tmp_path: Path, content: bytes, holder: str
) -> None:
    path = tmp_path / "state.json"
    lock = tmp_path / "state.json.lock"
    lock.write_bytes(content)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreLocked) as raised:
            TinyDBStore(path)
        assert f"(pid {holder})" in raised.value.detail
        assert raised.value.resource == str(path)
    finally:
        os.close(fd)
    TinyDBStore(path).close()  # free again once the other program let go


def test_a_state_path_that_cannot_be_read_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.mkdir()
    for _ in range(2):  # and the lock taken for the first attempt was let go
        with pytest.raises(StoreError) as raised:
            TinyDBStore(path)
        assert type(raised.value) is StoreError
        assert raised.value.detail == "cannot read: Is a directory"
        assert raised.value.resource == str(path)


@pytest.mark.parametrize(
    ("missing", "more"), [(1, ""), (3, ""), (4, " and 1 more"), (6, " and 3 more")]
)
def test_missing_seen_files_are_counted_and_the_first_three_named(
    tmp_path: Path, missing: int, more: str
) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(n) for n in range(7)]))
    store.close()
    seen = tmp_path / "state.json.seen"
    gone = sorted(p.name for p in seen.iterdir())[1 : 1 + missing]
    for name in gone:
        (seen / name).unlink()
    with pytest.raises(StoreCorrupt) as raised:
        TinyDBStore(path)
    assert raised.value.detail.startswith(
        f"{missing} file(s) of seen items it names are missing from {seen} "
        f"({', '.join(gone[:3])}{more}). "
    )
    assert raised.value.resource == str(path)


def test_a_file_of_seen_keys_is_named_after_its_source_as_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[replace(record(1), id="HRW.News_EN-2")]))
    store.close()
    [name] = os.listdir(tmp_path / "state.json.seen")
    assert name.startswith("HRW.News_EN-2-")


# -- the outbox -------------------------------------------------------------------------------


# -- from the event loop ----------------------------------------------------------------------


class Recording(TinyDBStore):
    """A store that notes the thread it was closed in."""

    closed_in: threading.Thread | None = None

    def close(self) -> None:
        self.closed_in = threading.current_thread()
        super().close()


async def test_when_close_returns_the_store_s_thread_has_ended(tmp_path: Path) -> None:
    inner = Recording(tmp_path / "state.json")
    store = AsyncStore(inner)
    await store.commit(Changes(sources=[record(1)]))
    await store.close()
    assert inner.closed_in is not None and inner.closed_in is not threading.current_thread()
    assert not inner.closed_in.is_alive()


# -- where the state is -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "database"),
    [
        ("POSTGRES://db/t", True),
        ("postgresql://bot@db/t?application_name=x://y", True),
        ("postgres", False),  # a file of that name
        ("data/state.json", False),
        ("https://example.org/state.json", False),
        ("sqlite:///data/state.db", False),
    ],
)
def test_only_a_postgresql_url_names_a_database(location: str, database: bool) -> None:
    assert is_database_url(location) is database


async def test_any_call_of_the_store_runs_on_its_thread_with_its_arguments(tmp_path: Path) -> None:
    store = AsyncStore(TinyDBStore(tmp_path / "state.json"))
    seen: list[tuple[str, tuple[object, ...], dict[str, object]]] = []

    def blocking(*args: object, **kwargs: object) -> str:
        seen.append((threading.current_thread().name, args, kwargs))
        return "done"

    assert await store.call(blocking, 1, "two", three=3) == "done"
    [(thread, args, kwargs)] = seen
    assert thread.startswith("store") and (args, kwargs) == ((1, "two"), {"three": 3})
    await store.close()
