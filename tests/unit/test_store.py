"""The store's contract (bot/store/base.py), on the TinyDB store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    Delivery,
    FeedState,
    NewsRecord,
    SourceHealth,
    SourceId,
    SourceRecord,
    Validators,
)
from bot.domain.text import para
from bot.errors import StoreCorrupt, StoreError, StoreLocked
from bot.store import codec
from bot.store.base import Changes, DeliveryUpdate
from bot.store.seen import SeenFiles
from bot.store.tinydb_store import TinyDBStore

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


def record(n: int = 1, seen: int = 3) -> SourceRecord:
    return SourceRecord(
        f"feed-{n}",
        Validators('"etag"', "Sat, 28 Nov 2026 08:00:00 GMT", "abc"),
        FeedState(True, {f"k{i}": NOW for i in range(seen)}),
        SourceHealth(failures=1, last_error="HTTP 500", last_error_at=NOW),
    )


def alert(n: int) -> Alert:
    return Alert(
        "news",
        AlertId(f"news:x:{n}"),
        (ChannelName("alerts"),),
        "x",
        f"T{n}",
        f"https://e.org/{n}",
        f"text {n}",
        NOW,
        (para("hello"),),
    )


def row(store: TinyDBStore, n: int) -> Delivery:
    return Delivery(
        f"news:x:{n}|alerts|console", store.next_seq(), alert(n), ChannelName("alerts"), "console"
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    news = NewsRecord(SourceId("x"), "k", "T", None, None, NOW, ("cybercrime",))
    store.commit(Changes(sources=[record()], enqueue=[row(store, 1)], news=[news]))
    store.close()
    again = TinyDBStore(path)
    assert again.source("feed-1") == record()
    assert again.source("unknown") == SourceRecord("unknown")
    [delivery] = again.deliveries()
    assert delivery.alert == alert(1) and delivery.state == "pending"
    assert again.recent_news(10) == [news]
    again.close()


def test_quiet_commit_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record()]))
    before = (path.stat().st_ino, path.stat().st_mtime_ns, store.writes)
    store.commit(Changes())
    store.commit(Changes(sources=[record()]))  # the same values again
    assert (path.stat().st_ino, path.stat().st_mtime_ns, store.writes) == before
    store.close()


def test_outbox_states_and_order(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "s.json")
    rows = [row(store, n) for n in range(3)]
    store.commit(Changes(enqueue=list(reversed(rows))))
    assert [r.key for r in store.deliveries()] == [r.key for r in rows]
    store.commit(Changes(enqueue=[rows[0]]))  # enqueueing twice is a no-op
    assert len(store.deliveries()) == 3
    store.commit(
        Changes(
            deliveries=[
                DeliveryUpdate(rows[0].key, "sent", NOW),
                DeliveryUpdate(
                    rows[1].key, "pending", NOW, "HTTP 503", NOW + timedelta(seconds=5), True
                ),
            ]
        )
    )
    pending = store.deliveries()
    assert [r.key for r in pending] == [rows[1].key, rows[2].key]
    assert pending[0].attempts == 1 and pending[0].last_error == "HTTP 503"
    assert store.has_delivery(rows[0].key)
    [sent] = store.deliveries(("sent",))
    assert sent.sent_at == NOW
    # a sent row keeps what the alert was, not its text: sent rows stay for 30 days in a file
    # that every commit rewrites
    assert (sent.alert.id, sent.alert.title) == (rows[0].alert.id, rows[0].alert.title)
    assert sent.alert.text == "" and sent.alert.body == ()
    [kept] = [
        r
        for r in json.loads((tmp_path / "s.json").read_text())["outbox"].values()
        if r["state"] == "sent"
    ]
    assert "text" not in kept["alert"] and "body" not in kept["alert"]
    assert codec.delivery_to_json(rows[0])["alert"]["text"] == "text 0"
    store.close()


def test_second_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    code = textwrap.dedent(
        f"""
        from bot.store.tinydb_store import TinyDBStore
        from bot.errors import StoreLocked
        try:
            TinyDBStore({str(path)!r})
        except StoreLocked as err:
            print(err)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "in use" in out.stdout and str(path) in out.stdout
    assert f"pid {os.getpid()}" in out.stdout
    store.close()
    TinyDBStore(path).close()  # released on close


def test_lock_in_same_process(tmp_path: Path) -> None:
    store = TinyDBStore(tmp_path / "s.json")
    with pytest.raises(StoreLocked):
        TinyDBStore(tmp_path / "s.json")
    store.close()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b'{"sources": {"1": {"id": "a"}}', "not valid JSON at line 1"),
        (b'{"sources": {}} trailing', "not valid JSON"),
        (b"\x00\x00\x00\x00", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2, 3]", "unexpected structure"),
        (b'{"sources": [1]}', "unexpected structure"),
        (b'{"meta": {"1": {"schema": 99}}}', "schema 99"),
    ],
)
def test_corrupt_file_is_refused_and_left_alone(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt) as info:
        TinyDBStore(path)
    message = str(info.value)
    assert str(path) in message and reason in message
    assert ".bak" in message  # says how to recover
    assert path.read_bytes() == content
    TinyDBStore(tmp_path / "other.json").close()  # and the lock was released


def test_backup_is_made_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record()]))
    store.close()
    TinyDBStore(path).close()
    assert json.loads((tmp_path / "state.json.bak").read_text()) == json.loads(path.read_text())


def test_write_error_keeps_previous_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1)]))
    before = path.read_bytes()

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(StoreError, match="disk is full"):
        store.commit(Changes(sources=[record(2)], enqueue=[row(store, 1)]))
    assert path.read_bytes() == before
    assert store.source("feed-2") == SourceRecord("feed-2")  # rolled back in memory too
    assert store.deliveries() == []
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    store.commit(Changes(sources=[record(2)], enqueue=[row(store, 1)]))  # retried
    assert store.source("feed-2") == record(2)
    assert len(store.deliveries()) == 1
    store.close()


def test_file_size_limit_is_a_real_write_error(tmp_path: Path) -> None:
    """A real EFBIG from the kernel (a file-size limit stands in for a full disk)."""
    path = tmp_path / "state.json"
    code = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from datetime import UTC, datetime
        from bot.store.tinydb_store import TinyDBStore
        from bot.store.base import Changes
        from bot.domain.model import SourceRecord, FeedState
        from bot.errors import StoreError
        now = datetime(2026, 1, 1, tzinfo=UTC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        store = TinyDBStore({str(path)!r})
        store.commit(Changes(sources=[SourceRecord("small")]))
        size = Path({str(path)!r}).stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 2000, size + 2000))
        big = SourceRecord("big", feed=FeedState(True, {{f"k{{i}}": now for i in range(500)}}))
        try:
            store.commit(Changes(sources=[big]))
        except StoreError as err:
            print("refused:", err)
        store.commit(Changes(sources=[SourceRecord("small-2")]))
        print("after:", sorted(store.sources()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "refused:" in out.stdout and "disk is full" in out.stdout
    assert "after: ['small', 'small-2']" in out.stdout
    data = json.loads(path.read_text())
    assert sorted(d["id"] for d in data["sources"].values()) == ["small", "small-2"]


CRASH_WRITER = textwrap.dedent(
    """
    import sys
    from datetime import UTC, datetime
    from bot.store.tinydb_store import TinyDBStore
    from bot.store.base import Changes
    from bot.domain.model import SourceRecord, FeedState
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store = TinyDBStore(sys.argv[1])
    n = len(store.sources())
    while True:
        n += 1
        size = 400 if n % 2 else 5  # grow and shrink the file, the risky case
        seen = {f"k{i}": now for i in range(size)}
        store.commit(Changes(sources=[SourceRecord(f"s{n}", feed=FeedState(True, seen)),
                                      SourceRecord("counter", feed=FeedState(True, seen))]))
        print(n, flush=True)
    """
)


def test_sigkill_never_leaves_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    last = 0
    for kill in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None
        acknowledged = 0
        for _ in range(3 + kill % 5):  # a few commits, then kill mid-way through the next
            acknowledged = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = TinyDBStore(path)  # always loads
        ids = store.sources()
        store.close()
        assert f"s{acknowledged}" in ids  # every acknowledged commit is on disk
        assert acknowledged > last
        last = acknowledged


def _seen_dir(path: Path) -> Path:
    return path.with_name(path.name + ".seen")


def test_a_commit_writes_only_the_seen_keys_that_changed(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(n, seen=35) for n in range(1000)]))
    assert len(os.listdir(_seen_dir(path))) == 1000
    main_size = path.stat().st_size
    before = store.seen_files_written
    one = record(7, seen=35)
    changed = SourceRecord(one.id, one.validators, FeedState(True, {**one.feed.seen, "new": NOW}))
    store.commit(Changes(sources=[changed]))
    # one source's keys written, whatever the others hold
    assert 0 < store.seen_files_written - before < 35 * 40
    assert len(os.listdir(_seen_dir(path))) == 1000  # the replaced file is gone
    # health changes alone write no seen keys, and the main file holds no keys at all
    before = store.seen_files_written
    store.commit(Changes(sources=[replace_health(record(n, seen=35)) for n in range(8, 108)]))
    assert store.seen_files_written == before
    assert "k34" not in path.read_text() and path.stat().st_size <= main_size * 1.2
    store.close()
    again = TinyDBStore(path)
    assert again.source("feed-7") == changed
    assert again.source("feed-8").feed == record(8, seen=35).feed
    again.close()


def replace_health(r: SourceRecord) -> SourceRecord:
    return SourceRecord(r.id, r.validators, r.feed, SourceHealth(last_success=NOW))


def test_files_left_by_a_crash_are_removed_and_missing_ones_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1), record(2)]))
    store.close()
    orphan = _seen_dir(path) / "feed-1-000000000000.json"
    orphan.write_text("{}")  # written by a commit that never reached the main file
    TinyDBStore(path).close()
    assert not orphan.exists() and len(os.listdir(_seen_dir(path))) == 2
    victim = sorted(_seen_dir(path).iterdir())[0]
    victim.unlink()
    with pytest.raises(StoreCorrupt) as err:
        TinyDBStore(path)
    assert victim.name in str(err.value) and ".bak" in str(err.value)


def test_a_corrupt_seen_file_is_refused_for_its_source_only(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1), record(2)]))
    name = json.loads(path.read_text())["sources"]["1"]["seen_file"]
    (_seen_dir(path) / name).write_text('{"k0": "2026-11')
    damaged = store.source("feed-1")  # the keys are read when first looked at
    with pytest.raises(StoreCorrupt, match=name):
        dict(damaged.feed.seen)
    assert store.source("feed-2") == record(2)
    store.close()


def test_seen_keys_are_read_only_when_looked_at_and_not_written_back_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1, seen=5)]))
    name = json.loads(path.read_text())["sources"]["1"]["seen_file"]
    reads: list[str] = []
    real_read = SeenFiles.read
    monkeypatch.setattr(SeenFiles, "read", lambda self, n: reads.append(n) or real_read(self, n))

    unread = store.source("feed-1")
    assert len(unread.feed.seen) == 5 and reads == []  # the count comes from the state
    failing = replace(unread, health=SourceHealth(failures=2, last_error="HTTP 503"))
    store.commit(Changes(sources=[failing]))  # only the health changed: same file, unread
    assert reads == []
    doc = json.loads(path.read_text())["sources"]["1"]
    assert doc["seen_file"] == name and doc["seen_count"] == 5
    assert doc["health"]["failures"] == 2

    again = store.source("feed-1")
    assert dict(again.feed.seen) == dict(record(1, seen=5).feed.seen) and reads == [name]
    store.close()


def test_the_backup_made_at_start_stays_whole(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1, seen=3)]))
    store.close()
    store = TinyDBStore(path)  # .bak: the state with 3 keys
    store.commit(Changes(sources=[record(1, seen=5)]))
    store.commit(Changes(sources=[record(1, seen=7)]))
    store.close()
    os.replace(tmp_path / "state.json.bak", path)
    restored = TinyDBStore(path)
    assert restored.source("feed-1") == record(1, seen=3)
    restored.close()


def test_a_state_with_seen_keys_inline_is_moved_to_files(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    inline = {
        "id": "feed-1",
        "etag": None,
        "last_modified": None,
        "body_hash": "abc",
        "initialized": True,
        "seen": {"a": "2026-11-28T09:00:00+00:00", "b": "2026-11-28T09:00:00+00:00"},
        "health": {"failures": 0},
    }
    path.write_text(json.dumps({"meta": {"1": {"schema": 1}}, "sources": {"1": inline}}))
    store = TinyDBStore(path)
    assert set(store.source("feed-1").feed.seen) == {"a", "b"}
    store.close()
    doc = json.loads(path.read_text())["sources"]["1"]
    assert "seen" not in doc and doc["seen_count"] == 2
    assert json.loads((tmp_path / "state.json.bak").read_text())["sources"]["1"] == inline


def test_two_records_of_one_source_in_one_commit_leave_one_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    store.commit(Changes(sources=[record(1, seen=2)]))
    store.commit(Changes(sources=[record(1, seen=3), record(1, seen=4)]))  # the later wins
    assert len(store.source("feed-1").feed.seen) == 4
    assert len(list(_seen_dir(path).iterdir())) == 1
    store.close()


def test_fingerprints_live_with_the_seen_keys_and_older_files_have_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    printed = SourceRecord(
        "feed-1", feed=FeedState(True, {"a": NOW, "b": NOW, "c": NOW}, {"a": "fp-a", "c": "fp-c"})
    )
    store.commit(Changes(sources=[printed, record(2)]))
    store.close()
    name = json.loads(path.read_text())["sources"]["1"]["seen_file"]
    raw = json.loads((_seen_dir(path) / name).read_text())
    assert codec.seen_from_json(raw) == {"a": NOW, "b": NOW, "c": NOW}  # what a reader of keys sees

    reads: list[str] = []
    real_read = SeenFiles.read
    monkeypatch.setattr(SeenFiles, "read", lambda self, n: reads.append(n) or real_read(self, n))
    store = TinyDBStore(path)
    again = store.source("feed-1")
    assert reads == []  # read when first looked at, once for keys and fingerprints
    assert dict(again.feed.fingerprints) == {"a": "fp-a", "c": "fp-c"}
    assert dict(again.feed.seen) == dict(printed.feed.seen) and reads == [name]
    assert again == printed
    # written back unchanged, the record keeps its file
    store.commit(Changes(sources=[replace(again, health=SourceHealth(failures=1))]))
    assert json.loads(path.read_text())["sources"]["1"]["seen_file"] == name
    # a file written before fingerprints were kept: the keys load, the fingerprints are none
    old = store.source("feed-2")
    assert dict(old.feed.fingerprints) == {} and len(old.feed.seen) == 3
    store.close()


def test_follows_round_trip_per_person_and_an_empty_list_removes_it(tmp_path: Path) -> None:
    from bot.domain.follows import Follow, Person

    path = tmp_path / "state.json"
    ann, bo = Person("slack", "U0ANN"), Person("matrix", "@bo:example.org")
    theirs = (Follow("clause", "art-24", "24"), Follow("state", "Türkiye"), Follow("words", "a b"))
    store = TinyDBStore(path)
    assert store.follows() == {}
    store.commit(Changes(follows={ann: theirs, bo: (Follow("words", "privacy"),)}))
    store.commit(Changes(follows={bo: (Follow("words", "encryption"),)}))  # replaces bo's list
    store.close()
    again = TinyDBStore(path)
    assert again.follows() == {ann: theirs, bo: (Follow("words", "encryption"),)}
    again.commit(Changes(follows={ann: ()}))
    assert again.follows() == {bo: (Follow("words", "encryption"),)}
    again.close()
    assert TinyDBStore(path, read_only=True).follows() == {bo: (Follow("words", "encryption"),)}


def test_reminders_and_session_snapshots_round_trip_and_are_replaced(tmp_path: Path) -> None:
    from bot.domain.clauses import ClauseSnapshot
    from bot.domain.model import SessionEvent
    from bot.domain.sessions import ReminderState, Snapshot

    path = tmp_path / "state.json"
    start = NOW + timedelta(days=40)
    close = SessionEvent(
        key="sessions:close",
        source="sessions",
        title="Close of signature",
        start=start,
        end=start + timedelta(hours=8),
        kind="deadline",
        all_day=True,
        timezone="America/New_York",
        location="UN Headquarters, New York",
        url="https://treaties.un.org/close",
        status="rescheduled",
        description="Last day to sign.",
        channels=(ChannelName("alerts"), ChannelName("ops")),
        lead_times=(timedelta(days=14), timedelta(0)),
    )
    call = SessionEvent("cal:call@x", "cal", "Coalition call", NOW + timedelta(days=3))
    sessions = Snapshot(
        True,
        {close.key: close},
        {close.key: NOW - timedelta(days=2)},
        {close.key: 2},
        {close.key: NOW - timedelta(days=1)},
    )
    calendar = Snapshot(True, {call.key: call}, {call.key: NOW})
    sent = ReminderState(
        {close.key: {14 * 86400: start.isoformat()}, f"{call.key}#ops": {3600: "x"}}
    )
    store = TinyDBStore(path)
    assert store.reminders() == ReminderState() and store.snapshot("sessions") == Snapshot()
    store.commit(Changes(snapshots={"sessions": sessions, "cal": calendar}, reminders=sent))
    store.close()

    again = TinyDBStore(path)
    assert again.reminders() == sent
    assert again.snapshot("sessions") == sessions and again.snapshot("cal") == calendar
    assert again.snapshots() == {"sessions": sessions, "cal": calendar}
    assert again.snapshot("other") == Snapshot()
    # a later state replaces the stored one: one record each, never two
    later = ReminderState({close.key: {14 * 86400: start.isoformat(), 0: start.isoformat()}})
    moved = Snapshot(True, {}, {}, {}, {})
    again.commit(Changes(snapshots={"sessions": moved}, reminders=later))
    assert again.reminders() == later and again.snapshot("sessions") == moved
    assert again.snapshots() == {"sessions": moved, "cal": calendar}
    again.commit(Changes(clauses=ClauseSnapshot(True, {"art-4": "open"})))  # others stay
    again.close()
    stored = json.loads(path.read_text())["snapshots"]
    assert sorted(d["name"] for d in stored.values()) == [
        "clauses",
        "events:cal",
        "events:sessions",
        "reminders",
    ]
    last = TinyDBStore(path, read_only=True)
    assert last.reminders() == later and last.snapshot("sessions") == moved
    assert last.clause_snapshot() == ClauseSnapshot(True, {"art-4": "open"})
    last.close()


def test_the_file_is_exactly_the_state_though_only_changed_sources_are_encoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit re-encodes only the sources it writes, and what reaches the disk is still
    exactly the whole state: after inserts, updates, a failed write and its retry."""
    import random

    from bot.store import tinydb_store

    path = tmp_path / "state.json"
    store = TinyDBStore(path)
    encoded: list[object] = []
    real = tinydb_store._dumps

    def counting(value: object) -> str:
        encoded.append(value)
        return real(value)

    monkeypatch.setattr(tinydb_store, "_dumps", counting)
    rng = random.Random(7)

    def check() -> None:
        written = path.read_text()
        assert json.loads(written) == store._storage.read()
        assert written == json.dumps(
            store._storage.read(), separators=(",", ":"), ensure_ascii=False
        )

    store.commit(Changes(sources=[record(n) for n in range(200)]))
    check()
    for turn in range(30):
        changed = rng.sample(range(220), 5)  # some of them new
        encoded.clear()
        store.commit(
            Changes(
                sources=[
                    replace(record(n), health=SourceHealth(failures=turn + 1)) for n in changed
                ]
            )
        )
        check()
        docs = [v for v in encoded if isinstance(v, dict) and "health" in v]
        assert len(docs) == len(changed)  # not the two hundred others
    with monkeypatch.context() as failing:
        failing.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "full")))
        with pytest.raises(StoreError):
            store.commit(Changes(sources=[replace(record(3), health=SourceHealth(failures=99))]))
    store.commit(Changes(sources=[replace(record(4), health=SourceHealth(failures=98))]))
    check()
    assert store.source("feed-3").health.failures != 99
    store.close()
    again = TinyDBStore(path)
    assert again.source("feed-4").health.failures == 98
    again.close()
