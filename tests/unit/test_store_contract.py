"""The store's contract (bot/store/base.py), one suite for every store: the TinyDB file and
PostgreSQL (a real server: see tests/postgres.py).

Each test gets a ``backend``: how to open a store on a fresh state, how to make its writes
fail, a mark that changes whenever the stored state is written, and how to make the state
look written by a newer treaty-bot. What only one store does (TinyDB's files and lock,
PostgreSQL's several writers) is tested in test_store.py and test_postgres_store.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.domain.clauses import ClauseSnapshot
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
from bot.domain.text import Bullets, Span, para
from bot.domain.treaty import Participant, Statement, TreatySnapshot, TreatyStatus
from bot.errors import StoreError
from bot.store import postgres_store, tinydb_store
from bot.store.base import ALL_STATES, NEWS_KEPT, Changes, DeliveryUpdate, Store
from bot.store.postgres_store import PostgresStore
from bot.store.tinydb_store import TinyDBStore
from tests.postgres import PostgresServer

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


# -- the stores -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    open: Callable[..., Any]  # (read_only=False) -> a store
    failing_writes: Callable[[], contextlib.AbstractContextManager[None]]
    written: Callable[[], object]
    make_newer: Callable[[], int]
    opened: list[Any] = dataclasses.field(default_factory=list)

    def store(self, *, read_only: bool = False) -> Any:
        store = self.open(read_only=read_only)
        self.opened.append(store)
        return store

    def reopen(self, store: Any) -> Any:
        store.close()
        return self.store()


def _tinydb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    path = tmp_path / "state.json"

    @contextlib.contextmanager
    def failing_writes() -> Iterator[None]:
        def full(*args: object) -> None:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patch:
            patch.setattr(os, "replace", full)
            yield

    def written() -> object:
        seen = path.with_name(path.name + ".seen")
        files = sorted(p.name for p in seen.iterdir()) if seen.is_dir() else []
        if not path.exists():
            return None, files
        return path.stat().st_ino, path.stat().st_mtime_ns, path.read_bytes(), files

    def make_newer() -> int:
        data = json.loads(path.read_text())
        data["meta"]["1"]["schema"] = tinydb_store.SCHEMA + 1
        path.write_text(json.dumps(data))
        return tinydb_store.SCHEMA

    return Backend(
        "tinydb",
        lambda read_only=False: TinyDBStore(path, read_only=read_only),
        failing_writes,
        written,
        make_newer,
    )


TABLES = ("sources", "outbox", "news", "snapshots", "follows", "schema_version")


def _postgresql(server: PostgresServer, url: str) -> Backend:
    @contextlib.contextmanager
    def failing_writes() -> Iterator[None]:
        # the last table a commit writes refuses: what came before must be undone
        server.execute(
            url,
            "CREATE FUNCTION treaty_bot.refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device'; END $$;"
            "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE OR DELETE ON treaty_bot.news "
            "FOR EACH ROW EXECUTE FUNCTION treaty_bot.refuse()",
        )
        try:
            yield
        finally:
            server.execute(
                url, "DROP TRIGGER refuse ON treaty_bot.news; DROP FUNCTION treaty_bot.refuse()"
            )

    def written() -> object:
        exists = server.execute(url, "SELECT to_regclass('treaty_bot.sources') IS NOT NULL")
        if not exists[0][0]:
            return None
        # every row's version: an insert, update or delete changes it
        return [
            server.execute(url, f"SELECT array_agg(xmin::text ORDER BY ctid) FROM treaty_bot.{t}")
            for t in TABLES
        ]

    def make_newer() -> int:
        server.execute(
            url,
            "INSERT INTO treaty_bot.schema_version (version, applied_by) "
            f"VALUES ({postgres_store.SCHEMA + 1}, 'a newer treaty-bot')",
        )
        return postgres_store.SCHEMA

    return Backend(
        "postgresql",
        lambda read_only=False: PostgresStore(url, read_only=read_only),
        failing_writes,
        written,
        make_newer,
    )


@pytest.fixture(params=["tinydb", "postgresql"])
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    if request.param == "tinydb":
        chosen = _tinydb(tmp_path, monkeypatch)
    else:
        chosen = _postgresql(
            request.getfixturevalue("postgres"), request.getfixturevalue("postgres_url")
        )
    yield chosen
    for store in chosen.opened:
        store.close()


# -- what a round remembers: one of every kind ---------------------------------------------


def source(n: int = 1, seen: int = 3, **health: Any) -> SourceRecord:
    keys = {f"https://e.org/{n}/{i}": NOW - timedelta(hours=i) for i in range(seen)}
    return SourceRecord(
        f"feed-{n}",
        Validators('"etag-1"', "Sat, 28 Nov 2026 08:00:00 GMT", "ab" * 32),
        FeedState(True, keys, {k: f"{i:012x}" for i, k in enumerate(keys) if i % 2 == 0}),
        SourceHealth(
            **(
                {
                    "failures": 2,
                    "last_success": NOW - timedelta(hours=2),
                    "last_error": "HTTP 503",
                    "last_error_at": NOW - timedelta(minutes=5),
                    "failing_since": NOW - timedelta(hours=1),
                    "alerted": True,
                    "not_before": NOW + timedelta(minutes=10),
                }
                | health
            )
        ),
    )


def alert(n: int, *, start: datetime | None = None) -> Alert:
    return Alert(
        "news" if start is None else "session-reminder",
        AlertId(f"news:x:{n}"),
        (ChannelName("alerts"), ChannelName("ops")),
        "x",
        f"Title {n} <b>&</b>",
        f"https://e.org/{n}",
        f"text {n}",
        NOW,
        (
            para("hello ", Span("world", "strong"), Span("link", "link", "https://e.org")),
            Bullets(((Span("one"),), (Span("two", "em"),))),
        ),
        start,
    )


def row(store: Any, n: int, state: str = "pending", **fields: Any) -> Delivery:
    return Delivery(
        f"news:x:{n}|alerts|console",
        store.next_seq(),
        alert(n, start=NOW + timedelta(days=n) if n % 2 else None),
        ChannelName("alerts"),
        "console",
        state,  # type: ignore[arg-type]
        **fields,
    )


def news(n: int, at: datetime = NOW) -> NewsRecord:
    return NewsRecord(
        SourceId("x"), f"k{n}", f"News {n}", f"https://e.org/n/{n}", NOW - timedelta(days=1), at,
        ("cybercrime", "/art(icle)? 24/"),
    )  # fmt: skip


EVENT = SessionEvent(
    key="sessions:close",
    source="sessions",
    title="Close of signature",
    start=NOW + timedelta(days=40),
    end=NOW + timedelta(days=40, hours=8),
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
SESSIONS = Snapshot(
    True,
    {EVENT.key: EVENT},
    {EVENT.key: NOW - timedelta(days=2)},
    {EVENT.key: 2},
    {EVENT.key: NOW - timedelta(days=1)},
)
CALL = SessionEvent("cal:call@x", "cal", "Coalition call", NOW + timedelta(days=3))
CALENDAR = Snapshot(True, {CALL.key: CALL}, {CALL.key: NOW})
REMINDERS = ReminderState(
    {EVENT.key: {14 * 86400: EVENT.start.isoformat()}, f"{CALL.key}#ops": {3600: "x"}}
)
CLAUSES = ClauseSnapshot(True, {"art-4": "contested", "art-24": "agreed"})
TREATY = TreatySnapshot(
    True,
    TreatyStatus(
        (
            Participant("Türkiye", date(2026, 10, 25), None, None),
            Participant("Viet Nam", date(2026, 10, 25), date(2026, 11, 2), "ratification"),
        ),
        (Statement("Viet Nam", "declaration", "In accordance with article 47…"),),
    ),
)
ANN, BO = Person("slack", "U0ANN"), Person("matrix", "@bo:example.org")
FOLLOWS = {
    ANN: (Follow("clause", "art-24", "24"), Follow("state", "Türkiye"), Follow("words", "a b")),
    BO: (Follow("words", "privacy"),),
}


def every_kind(store: Any) -> Changes:
    """A state with every kind of record, and an outbox row in every state."""
    rows = [
        row(store, 1),
        row(store, 2, "sending", attempts=1, last_error="HTTP 503", next_try=NOW),
        row(store, 3, "sent", attempts=1, sent_at=NOW),
        row(store, 4, "failed", attempts=3, last_error="channel_not_found"),
        row(store, 5, "held", next_try=NOW + timedelta(hours=9), held_for="digest"),
        row(store, 6, "held", next_try=NOW + timedelta(hours=2), held_for="quiet"),
        row(store, 7, "grouped", sent_at=NOW - timedelta(minutes=1)),
    ]
    return Changes(
        sources=[source(1), source(2, seen=0, failures=0), source(3, seen=40)],
        enqueue=rows,
        news=[news(1), news(2, NOW + timedelta(minutes=1)), news(3, NOW - timedelta(days=3))],
        snapshots={"sessions": SESSIONS, "cal": CALENDAR},
        reminders=REMINDERS,
        clauses=CLAUSES,
        treaty=TREATY,
        follows=dict(FOLLOWS),
    )


def assert_holds(store: Any, changes: Changes) -> None:
    """Every read of ``store`` answers what ``changes`` (committed to a fresh state) wrote."""
    assert store.sources() == {r.id: r for r in changes.sources}
    for r in changes.sources:
        assert store.source(r.id) == r
        got = store.source(r.id).feed
        assert list(got.seen) == list(r.feed.seen)  # in the order they were seen
        assert dict(got.fingerprints) == dict(r.feed.fingerprints)
    assert store.healths() == {r.id: r.health for r in changes.sources}
    assert store.deliveries(ALL_STATES) == sorted(changes.enqueue, key=lambda d: d.seq)
    assert all(store.has_delivery(r.key) for r in changes.enqueue)
    assert store.next_seq() > max(r.seq for r in changes.enqueue)
    assert store.recent_news(100) == sorted(changes.news, key=lambda n: n.seen_at, reverse=True)
    assert store.snapshots() == changes.snapshots
    for name, snap in changes.snapshots.items():
        assert store.snapshot(name) == snap
        assert list(store.snapshot(name).events) == list(snap.events)
    assert store.reminders() == changes.reminders
    assert store.clause_snapshot() == changes.clauses
    assert store.treaty_snapshot() == changes.treaty
    assert store.follows() == changes.follows


# -- the contract ---------------------------------------------------------------------------


def test_a_fresh_state_is_empty(backend: Backend) -> None:
    store: Store = backend.store()
    assert store.sources() == {} and store.healths() == {}
    assert store.source("feed-1") == SourceRecord("feed-1")
    assert store.deliveries(ALL_STATES) == [] and not store.has_delivery("x")
    assert store.recent_news(10) == []
    assert store.snapshots() == {} and store.snapshot("sessions") == Snapshot()
    assert store.reminders() == ReminderState()
    assert store.clause_snapshot() == ClauseSnapshot()
    assert store.treaty_snapshot() == TreatySnapshot()
    assert store.follows() == {}
    assert store.next_seq() < store.next_seq()


def test_every_record_kind_round_trips(backend: Backend) -> None:
    store = backend.store()
    changes = every_kind(store)
    store.commit(changes)
    assert_holds(store, changes)
    assert_holds(backend.reopen(store), changes)


def test_held_rows_keep_why_and_until_when(backend: Backend) -> None:
    store = backend.store()
    store.commit(every_kind(store))
    held = backend.reopen(store).deliveries(("held",))
    assert [(r.held_for, r.next_try) for r in held] == [
        ("digest", NOW + timedelta(hours=9)),
        ("quiet", NOW + timedelta(hours=2)),
    ]


def test_outbox_order_states_and_a_key_enqueued_twice(backend: Backend) -> None:
    store = backend.store()
    rows = [row(store, n) for n in range(3)]
    store.commit(Changes(enqueue=list(reversed(rows))))
    assert [r.key for r in store.deliveries()] == [r.key for r in rows]  # by seq
    store.commit(Changes(enqueue=[replace(rows[0], seq=store.next_seq(), attempts=9)]))
    assert store.deliveries() == rows  # enqueueing a key again changes nothing
    store.commit(
        Changes(
            deliveries=[
                DeliveryUpdate(rows[0].key, "sending", NOW),
                DeliveryUpdate(rows[1].key, "sending", NOW, "HTTP 503", NOW + timedelta(5), True),
                DeliveryUpdate("no such key", "sent", NOW),
            ]
        )
    )
    store.commit(Changes(deliveries=[DeliveryUpdate(rows[0].key, "sent", NOW)]))
    store = backend.reopen(store)
    pending = store.deliveries()
    assert [r.key for r in pending] == [rows[1].key, rows[2].key]
    assert (pending[0].state, pending[0].attempts, pending[0].last_error) == (
        "sending",
        1,
        "HTTP 503",
    )
    assert pending[0].next_try == NOW + timedelta(5)
    assert store.has_delivery(rows[0].key) and not store.has_delivery("no such key")
    [sent] = store.deliveries(("sent",))
    assert (sent.sent_at, sent.attempts, sent.last_error, sent.next_try) == (NOW, 0, None, None)
    # a row whose alert went out keeps what it was, not its text
    assert (sent.alert.id, sent.alert.title, sent.alert.url) == (
        rows[0].alert.id,
        rows[0].alert.title,
        rows[0].alert.url,
    )
    assert (sent.alert.text, sent.alert.body, sent.alert.event_start) == ("", (), None)


def test_one_key_enqueued_twice_in_one_commit_makes_one_row(backend: Backend) -> None:
    """The first is kept, as when a key already stored is enqueued again: one message goes
    out, and marking it sent leaves nothing pending."""
    store = backend.store()
    first = row(store, 1)
    store.commit(Changes(enqueue=[first, replace(first, seq=store.next_seq(), attempts=4)]))
    assert store.deliveries() == [first]
    store.commit(Changes(deliveries=[DeliveryUpdate(first.key, "sent", NOW)]))
    store = backend.reopen(store)
    assert store.deliveries() == []
    assert len(store.deliveries(("sent",))) == 1


def test_sent_and_grouped_rows_are_pruned_after_30_days(backend: Backend) -> None:
    store = backend.store()
    old, grouped, recent, waiting = (row(store, n) for n in range(4))
    store.commit(Changes(enqueue=[old, grouped, recent, waiting]))
    store.commit(
        Changes(
            deliveries=[
                DeliveryUpdate(old.key, "sent", NOW),
                DeliveryUpdate(grouped.key, "grouped", NOW),
            ]
        )
    )
    later = NOW + timedelta(days=30, minutes=1)
    store.commit(Changes(deliveries=[DeliveryUpdate(recent.key, "sent", later)]))
    assert [r.key for r in store.deliveries(ALL_STATES)] == [recent.key, waiting.key]
    assert not store.has_delivery(old.key) and not store.has_delivery(grouped.key)
    store = backend.reopen(store)
    assert [r.key for r in store.deliveries(ALL_STATES)] == [recent.key, waiting.key]
    assert not store.has_delivery(old.key) and store.has_delivery(recent.key)


def test_rows_sent_within_30_days_are_kept(backend: Backend) -> None:
    store = backend.store()
    first, second = row(store, 1), row(store, 2)
    store.commit(Changes(enqueue=[first, second]))
    store.commit(Changes(deliveries=[DeliveryUpdate(first.key, "sent", NOW)]))
    store.commit(Changes(deliveries=[DeliveryUpdate(second.key, "sent", NOW + timedelta(days=30))]))
    assert [r.key for r in store.deliveries(("sent",))] == [first.key, second.key]


def test_news_are_bounded_to_the_newest(backend: Backend) -> None:
    store = backend.store()
    first = [news(n, NOW + timedelta(seconds=n)) for n in range(NEWS_KEPT - 5)]
    store.commit(Changes(news=first))
    tied = [news(1000 + n, NOW + timedelta(hours=1)) for n in range(10)]
    store.commit(Changes(news=tied))
    kept = backend.reopen(store).recent_news(10_000)
    assert len(kept) == NEWS_KEPT
    # newest first; those seen at the same time in the order they were recorded
    assert kept[:10] == tied
    assert kept[10:] == sorted(first, key=lambda n: n.seen_at, reverse=True)[:-5]


def test_a_commit_is_all_or_nothing(backend: Backend) -> None:
    store = backend.store()
    store.commit(Changes(sources=[source(1)], news=[news(1)]))
    assert store.healths() == {"feed-1": source(1).health}  # read between commits
    before = backend.written()
    failing = Changes(
        sources=[source(2), source(1, failures=9)],
        enqueue=[row(store, 1)],
        news=[news(2)],
        snapshots={"sessions": SESSIONS},
        follows={ANN: FOLLOWS[ANN]},
    )
    with backend.failing_writes(), pytest.raises(StoreError) as info:
        store.commit(failing)
    assert "previous state is kept" in str(info.value)
    assert backend.written() == before
    # what the store answers is rolled back too, so the round can be retried
    assert store.source("feed-2") == SourceRecord("feed-2")
    assert store.source("feed-1") == source(1)
    assert store.deliveries(ALL_STATES) == [] and not store.has_delivery(failing.enqueue[0].key)
    assert store.recent_news(10) == [news(1)]
    assert store.snapshots() == {} and store.follows() == {}
    assert store.healths() == {"feed-1": source(1).health}
    store.commit(failing)  # retried once the cause is gone
    assert store.source("feed-1") == source(1, failures=9)
    assert store.healths() == {"feed-1": source(1, failures=9).health, "feed-2": source(2).health}
    store = backend.reopen(store)
    assert store.source("feed-2") == source(2)
    assert [r.key for r in store.deliveries()] == [failing.enqueue[0].key]
    assert store.recent_news(10) == [news(1), news(2)]
    assert store.snapshots() == {"sessions": SESSIONS} and store.follows() == {ANN: FOLLOWS[ANN]}
    store.healths()
    store.commit(Changes(sources=[source(2, failures=1)]))  # one source: the other is kept
    assert store.healths() == {
        "feed-1": source(1, failures=9).health,
        "feed-2": source(2, failures=1).health,
    }


def test_a_quiet_commit_writes_nothing(backend: Backend) -> None:
    store = backend.store()
    changes = every_kind(store)
    store.commit(changes)
    before = backend.written()
    store.commit(Changes())
    assert backend.written() == before
    # the same values again: nothing to write either
    store.commit(
        Changes(
            sources=[store.source("feed-1"), source(3, seen=40)],
            enqueue=changes.enqueue[:2],
            snapshots=changes.snapshots,
            reminders=changes.reminders,
            clauses=changes.clauses,
            treaty=changes.treaty,
            follows=changes.follows,
        )
    )
    assert backend.written() == before


def test_seen_keys_are_kept_as_read_and_replaced_when_they_change(backend: Backend) -> None:
    store = backend.store()
    store.commit(Changes(sources=[source(1, seen=5)]))
    as_read = store.source("feed-1")  # its keys not looked at
    store.commit(Changes(sources=[replace(as_read, health=SourceHealth(failures=1))]))
    store = backend.reopen(store)
    again = store.source("feed-1")
    assert again == replace(source(1, seen=5), health=SourceHealth(failures=1))
    fewer = replace(again.feed, seen=dict(list(again.feed.seen.items())[:2]), fingerprints={})
    store.commit(Changes(sources=[replace(again, feed=fewer)]))
    store = backend.reopen(store)
    assert dict(store.source("feed-1").feed.seen) == dict(fewer.seen)
    # two records of one source in one commit: the last one is kept
    store.commit(Changes(sources=[source(1, seen=7), source(1, seen=1)]))
    store = backend.reopen(store)
    assert store.source("feed-1") == source(1, seen=1)
    store.commit(Changes(sources=[source(1, seen=0)]))
    store = backend.reopen(store)
    assert store.source("feed-1").feed.seen == {}
    # the same for sources new in that commit: one record each, the last one
    store.commit(Changes(sources=[source(2, seen=7), source(3), source(2, seen=3)]))
    store = backend.reopen(store)
    assert store.source("feed-2") == source(2, seen=3)
    assert store.source("feed-3") == source(3)
    assert sorted(store.healths()) == ["feed-1", "feed-2", "feed-3"]


def test_follows_are_replaced_per_person_and_an_empty_list_removes_them(
    backend: Backend,
) -> None:
    store = backend.store()
    store.commit(Changes(follows=dict(FOLLOWS)))
    store.commit(Changes(follows={BO: (Follow("words", "encryption"),)}))
    store = backend.reopen(store)
    assert store.follows() == {ANN: FOLLOWS[ANN], BO: (Follow("words", "encryption"),)}
    store.commit(Changes(follows={ANN: ()}))
    assert backend.reopen(store).follows() == {BO: (Follow("words", "encryption"),)}


def _datetimes(value: object) -> Iterator[datetime]:
    if isinstance(value, datetime):
        yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _datetimes(getattr(value, f.name))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _datetimes(k)
            yield from _datetimes(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _datetimes(v)


def test_times_come_back_aware_and_in_utc(backend: Backend) -> None:
    store = backend.store()
    store.commit(every_kind(store))
    store = backend.reopen(store)
    found = list(
        _datetimes(
            [
                store.sources(),
                [dict(r.feed.seen) for r in store.sources().values()],
                store.healths(),
                store.deliveries(ALL_STATES),
                store.recent_news(100),
                store.snapshots(),
            ]
        )
    )
    assert len(found) > 50
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in found)


def test_a_preview_sees_its_changes_and_writes_nothing(backend: Backend) -> None:
    store = backend.store()
    store.commit(Changes(sources=[source(1)]))
    store.close()
    before = backend.written()
    preview = backend.store(read_only=True)
    preview.commit(Changes(sources=[source(2)], enqueue=[row(preview, 1)], news=[news(1)]))
    assert sorted(preview.sources()) == ["feed-1", "feed-2"]
    assert preview.recent_news(5) == [news(1)] and len(preview.deliveries()) == 1
    preview.close()
    assert backend.written() == before
    assert sorted(backend.store().sources()) == ["feed-1"]


def test_a_state_written_by_a_newer_version_is_refused(backend: Backend) -> None:
    store = backend.store()
    store.commit(Changes(sources=[source(1)]))
    location = store.location
    store.close()
    ours = backend.make_newer()
    before = backend.written()
    with pytest.raises(StoreError) as info:
        backend.store()
    message = str(info.value)
    assert location in message
    assert {str(ours), str(ours + 1)} <= set(re.findall(r"\d+", message))
    assert "newer" in message
    assert backend.written() == before  # left as it is


# -- several processes (PostgreSQL only: a TinyDB file has one, see test_store.py) -----------


def test_stores_opening_together_migrate_once(postgres_url: str) -> None:
    count = 4
    ready = threading.Barrier(count)
    opened: list[PostgresStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        ready.wait()
        try:
            opened.append(PostgresStore(postgres_url))
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=start) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        migrated = sorted(s.migrated for s in opened)
        assert migrated == [()] * (count - 1) + [tuple(range(1, postgres_store.SCHEMA + 1))]
        first = opened[0]
        first.commit(Changes(sources=[source(1)]))
        assert all(s.source("feed-1") == source(1) for s in opened)
    finally:
        for s in opened:
            s.close()
