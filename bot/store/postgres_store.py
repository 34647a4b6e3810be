"""The PostgreSQL store: the state in a database that several treaty-bot processes can share.

psycopg (3, with its connection pool) is imported here and nowhere else. The store keeps the
contract of ``bot.store.base`` with the same blocking interface as the TinyDB store; the app
runs its calls in ``AsyncStore``'s worker thread (docs/design.md says why).

Every record is kept as the JSON document ``bot.store.codec`` writes for the TinyDB file, so a
state moves between the two stores without loss (``treaty-bot migrate``), in a table whose
columns are what the store looks rows up by, orders, prunes and constrains: a key, an outbox
row's state, sequence and times, a news record's time. Documents are ``json``, not ``jsonb``:
text kept as written, so the order of keys (a feed's seen items and their fingerprints) and
any character a feed may send (``\\u0000`` included) come back as they went in.

Rows that one process at a time writes once sources are leased in shards carry
``sources.shard_key`` (a stable hash of the source id, which shard leases cover) and, on
sources, event snapshots and outbox rows, ``written_by``/``written_at`` (the writer, and the
start of the transaction that wrote them). Their ``fence`` column is always 0: a commit's
leases are checked in the database as it commits (``_check_fences``), not stored per row.

The schema lives in the ``treaty_bot`` namespace and is versioned in
``treaty_bot.schema_version``; ``MIGRATIONS`` brings it up to date at open, in one
transaction, under an advisory lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json
from psycopg_pool import ConnectionPool

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import Delivery, NewsRecord, SourceHealth, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot
from bot.errors import LeaseLost, StoreDatabaseError, StoreLocked
from bot.store import codec
from bot.store.base import DONE_STATES, NEWS_KEPT, SENT_KEPT, Changes
from bot.store.leases import Beat, ReplicaRow, shard_key, shard_lease
from bot.store.seen import StoredFingerprints, StoredSeen
from bot.store.urls import masked, scrub

log = logging.getLogger(__name__)

#: The key of the advisory lock a bot holds while it writes to the database (``sole_writer``).
WRITER_LOCK = 0x7472656174790002

#: The key of the advisory lock held while the schema is migrated (any fixed 64-bit number;
#: this one is the start of sha256("treaty-bot schema")).
MIGRATION_LOCK = int.from_bytes(hashlib.sha256(b"treaty-bot schema").digest()[:8], signed=True)

_STATES = "'pending', 'sending', 'sent', 'failed', 'held', 'grouped'"

#: The schema, one step per version: ``MIGRATIONS[n - 1]`` brings version n - 1 to n.
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE treaty_bot.sources (
        id          text PRIMARY KEY,
        shard_key   integer NOT NULL,
        doc         json NOT NULL,
        seen        json,
        seen_digest text,
        seen_count  integer NOT NULL DEFAULT 0,
        fence       bigint NOT NULL DEFAULT 0,
        written_by  text NOT NULL,
        written_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX sources_by_shard ON treaty_bot.sources (shard_key);
    CREATE TABLE treaty_bot.outbox (
        key         text PRIMARY KEY,
        seq         bigint NOT NULL,
        transport   text NOT NULL,
        channel     text NOT NULL,
        state       text NOT NULL CHECK (state IN ({_STATES})),
        next_try    timestamptz,
        sent_at     timestamptz,
        doc         json NOT NULL,
        fence       bigint NOT NULL DEFAULT 0,
        written_by  text NOT NULL,
        written_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX outbox_by_state ON treaty_bot.outbox (state, seq);
    CREATE INDEX outbox_done ON treaty_bot.outbox (sent_at) WHERE state IN ('sent', 'grouped');
    CREATE TABLE treaty_bot.news (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        seen_at     timestamptz NOT NULL,
        doc         json NOT NULL
    );
    CREATE INDEX news_newest ON treaty_bot.news (seen_at DESC, id);
    CREATE TABLE treaty_bot.snapshots (
        name        text PRIMARY KEY,
        doc         json NOT NULL,
        fence       bigint NOT NULL DEFAULT 0,
        written_by  text NOT NULL,
        written_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE treaty_bot.follows (
        platform    text NOT NULL,
        user_id     text NOT NULL,
        doc         json NOT NULL,
        written_by  text NOT NULL,
        written_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (platform, user_id)
    );
    """,
    """
    CREATE TABLE treaty_bot.replicas (
        id           text PRIMARY KEY,
        host         text NOT NULL,
        pid          integer NOT NULL,
        version      text NOT NULL,
        started_at   timestamptz NOT NULL DEFAULT now(),
        heartbeat_at timestamptz NOT NULL DEFAULT now(),
        stopped_at   timestamptz
    );
    CREATE TABLE treaty_bot.leases (
        name        text PRIMARY KEY,
        holder      text,
        fence       bigint NOT NULL DEFAULT 0,
        expires_at  timestamptz NOT NULL DEFAULT '-infinity',
        acquired_at timestamptz
    );
    CREATE TABLE treaty_bot.claims (
        key         text PRIMARY KEY,
        holder      text NOT NULL,
        claimed_at  timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX claims_by_age ON treaty_bot.claims (claimed_at);
    """,
)

#: How long a command's claim is remembered (a platform retries an event within minutes).
CLAIMS_KEPT = "1 day"
#: Replicas stopped or silent for longer than this are dropped from ``replicas``.
REPLICAS_KEPT = "1 day"

#: The schema version this code writes and reads.
SCHEMA = len(MIGRATIONS)


def _writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class PostgresStore:
    """The ``Store`` on a PostgreSQL database (see ``bot.store.base`` for the contract).

    ``read_only``: for previews and answers in the terminal. One connection holds one
    transaction that is never committed: commits apply inside it (each in a savepoint), so
    the preview sees its own changes, and nothing reaches the database.
    """

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        sole_writer: bool = False,
        replica: bool = False,
        pool_size: int = 4,
        connect_timeout: int = 10,
    ) -> None:
        self._url = url
        self._read_only = read_only
        self.writer = _writer_id()
        #: the schema versions this store applied when it opened (none if it was up to date)
        self.migrated: tuple[int, ...] = ()
        self.writes = 0
        self._keys: set[str] = set()
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[Any]] | None = None
        self._ro: psycopg.Connection[Any] | None = None
        self._ro_lock = threading.RLock()
        #: the connection that holds the one-bot-per-database lock (``sole_writer``)
        self._claim: psycopg.Connection[Any] | None = None
        try:
            conn = psycopg.connect(url, connect_timeout=connect_timeout, autocommit=True)
        except psycopg.Error as err:
            raise self._error("cannot connect", err) from None
        try:
            self._open(conn)
        except BaseException:
            conn.close()
            raise
        if read_only:
            self._ro = conn
            return
        conn.close()
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=pool_size,
            kwargs={"connect_timeout": connect_timeout},
            name="treaty-bot-store",
            check=ConnectionPool.check_connection,
            timeout=connect_timeout,
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except psycopg.Error as err:
            self._pool.close()
            raise self._error("cannot connect", err) from None
        if sole_writer or replica:
            try:
                self._claim_database(connect_timeout, shared=replica)
            except BaseException:
                self.close()
                raise

    def _claim_database(self, connect_timeout: int, *, shared: bool) -> None:
        """Replicas (``treaty-bot run``) share the database through leases and take the
        writers' advisory lock in shared mode; a sole writer (``once``, ``migrate``), which
        writes without leases, takes it alone. So ``once`` is refused while replicas run, and
        a replica while ``once`` runs. The lock is held by a session of its own, released when
        this store closes or its process dies."""
        take = "pg_try_advisory_lock_shared" if shared else "pg_try_advisory_lock"
        try:
            conn = psycopg.connect(self._url, connect_timeout=connect_timeout, autocommit=True)
            row = conn.execute(f"SELECT {take}(%s)", (WRITER_LOCK,)).fetchone()
        except psycopg.Error as err:
            raise self._error("cannot connect", err) from None
        if not row or not row[0]:
            conn.close()
            raise StoreLocked(
                "a `treaty-bot once` or `migrate` is writing to this database; wait until it ends"
                if shared
                else "treaty-bot replicas run on this database; stop them first (`once` "
                "writes without leases)",
                resource=self.location,
            )
        self._claim = conn

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    # -- life cycle -------------------------------------------------------------------------

    def _error(self, what: str, err: BaseException) -> StoreDatabaseError:
        """A store error saying ``what`` failed and why, with the URL's password masked."""
        reason = " ".join(str(err).split()) or type(err).__name__
        return StoreDatabaseError(f"{what}: {scrub(reason, self._url)}", resource=self.location)

    def _open(self, conn: psycopg.Connection[Any]) -> None:
        """Check (and bring up to date) the schema, and load the outbox's keys."""
        try:
            current = self._version(conn)
            self._refuse_newer(current)
            conn.autocommit = False
            if current < SCHEMA:
                self.migrated = self._migrate(conn)
            elif self._read_only:
                # nothing to migrate: one snapshot of the database for the whole preview
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            rows = conn.execute("SELECT key, seq FROM treaty_bot.outbox").fetchall()
            if not self._read_only:
                conn.commit()
        except psycopg.Error as err:
            raise self._error("cannot open", err) from None
        self._keys = {key for key, _ in rows}
        self._seq = max((int(seq) for _, seq in rows), default=0)

    @staticmethod
    def _version(conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT to_regclass('treaty_bot.schema_version') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        found = conn.execute("SELECT max(version) FROM treaty_bot.schema_version").fetchone()
        return int(found[0]) if found and found[0] is not None else 0

    def _refuse_newer(self, current: int) -> None:
        if current > SCHEMA:
            raise StoreDatabaseError(
                f"the database's schema is version {current}, newer than this treaty-bot's "
                f"(version {SCHEMA}); run a treaty-bot that knows version {current}, which "
                f"wrote it. The database is left as it is",
                resource=self.location,
            )

    def _migrate(self, conn: psycopg.Connection[Any]) -> tuple[int, ...]:
        """Bring the schema to ``SCHEMA`` in the transaction under way, under the advisory
        lock: a process that waited for it finds the work done and does nothing."""
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE SCHEMA IF NOT EXISTS treaty_bot")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS treaty_bot.schema_version ("
            " version integer PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now(),"
            " applied_by text NOT NULL)"
        )
        current = self._version(conn)
        self._refuse_newer(current)
        applied = tuple(range(current + 1, SCHEMA + 1))
        for version in applied:
            conn.execute(MIGRATIONS[version - 1])
            conn.execute(
                "INSERT INTO treaty_bot.schema_version (version, applied_by) VALUES (%s, %s)",
                (version, self.writer),
            )
        if applied:
            log.info(
                "state database schema migrated location=%s versions=%s",
                self.location,
                ",".join(map(str, applied)),
            )
        return applied

    def close(self) -> None:
        if self._claim is not None:
            claim, self._claim = self._claim, None
            claim.close()  # the advisory lock goes with its session
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()
        if self._ro is not None:
            conn, self._ro = self._ro, None
            with self._ro_lock, contextlib.suppress(psycopg.Error):
                conn.rollback()
            conn.close()

    @property
    def location(self) -> str:
        return masked(self._url)

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection in a transaction, committed at the end of the block unless it raises."""
        if self._read_only:
            with self._ro_lock:
                if self._ro is None:
                    raise StoreDatabaseError("the store is closed", resource=self.location)
                with self._ro.transaction():  # a savepoint: the outer one is never committed
                    yield self._ro
            return
        if self._pool is None:
            raise StoreDatabaseError("the store is closed", resource=self.location)
        with self._pool.connection() as conn:
            yield conn

    def _rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self._session() as conn:
                return conn.execute(query, params).fetchall()
        except psycopg.Error as err:
            raise self._error("cannot read", err) from None

    # -- reads ------------------------------------------------------------------------------

    def source(self, source_id: str) -> SourceRecord:
        rows = self._rows(
            "SELECT doc, seen_digest, seen_count FROM treaty_bot.sources WHERE id = %s",
            (source_id,),
        )
        if not rows:
            return SourceRecord(id=source_id)
        doc, digest, count = rows[0]
        return self._decode_source(source_id, doc, digest, count)

    def _decode_source(
        self, source_id: str, doc: dict[str, Any], digest: str | None, count: int
    ) -> SourceRecord:
        if not digest:
            return codec.source_from_json(doc)
        decoded: list[tuple[dict[str, datetime], dict[str, str]]] = []

        def read() -> tuple[dict[str, datetime], dict[str, str]]:
            # read by whoever first needs the keys (a poll with a new body to plan)
            if not decoded:
                raw = self._read_seen(source_id, digest)
                decoded.append((codec.seen_from_json(raw), codec.fingerprints_from_json(raw)))
            return decoded[0]

        seen = StoredSeen(digest, count, lambda: read()[0])
        return codec.source_from_json(doc, seen, StoredFingerprints(digest, lambda: read()[1]))

    def _read_seen(self, source_id: str, digest: str) -> dict[str, Any]:
        rows = self._rows(
            "SELECT seen FROM treaty_bot.sources WHERE id = %s AND seen_digest = %s",
            (source_id, digest),
        )
        if not rows or not isinstance(rows[0][0], dict):
            raise StoreDatabaseError(
                f"the seen items of source {source_id} changed since its record was read; "
                f"its next poll reads them again",
                resource=self.location,
            )
        raw: dict[str, Any] = rows[0][0]
        return raw

    def sources(self) -> dict[str, SourceRecord]:
        rows = self._rows(
            "SELECT id, doc, seen_digest, seen_count FROM treaty_bot.sources ORDER BY id"
        )
        return {
            source_id: self._decode_source(source_id, doc, digest, count)
            for source_id, doc, digest, count in rows
        }

    def healths(self) -> dict[str, SourceHealth]:
        rows = self._rows("SELECT id, doc FROM treaty_bot.sources ORDER BY id")
        return {source_id: codec.health_from_json(doc) for source_id, doc in rows}

    def _snapshot_doc(self, name: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT doc FROM treaty_bot.snapshots WHERE name = %s", (name,))
        return dict(rows[0][0]) if rows and rows[0][0] else None

    def snapshot(self, source: str) -> Snapshot:
        data = self._snapshot_doc(f"events:{source}")
        return codec.snapshot_from_json(data) if data else Snapshot()

    def snapshots(self) -> dict[str, Snapshot]:
        rows = self._rows(
            "SELECT name, doc FROM treaty_bot.snapshots WHERE left(name, 7) = 'events:' "
            "ORDER BY name"
        )
        return {name.removeprefix("events:"): codec.snapshot_from_json(doc) for name, doc in rows}

    def reminders(self) -> ReminderState:
        data = self._snapshot_doc("reminders")
        return codec.reminders_from_json(data) if data else ReminderState()

    def clause_snapshot(self) -> ClauseSnapshot:
        data = self._snapshot_doc("clauses")
        return codec.clauses_from_json(data) if data else ClauseSnapshot()

    def treaty_snapshot(self) -> TreatySnapshot:
        data = self._snapshot_doc("treaty")
        return codec.treaty_from_json(data) if data else TreatySnapshot()

    def next_seq(self) -> int:
        """Larger than any seq this store knows, and than the last it gave: microseconds since
        the epoch, so that the rows replicas queue at the same time sort together."""
        with self._seq_lock:
            self._seq = max(self._seq + 1, time.time_ns() // 1000)
            return self._seq

    def deliveries(self, states: Sequence[str] = ("pending", "sending")) -> list[Delivery]:
        rows = self._rows(
            "SELECT doc FROM treaty_bot.outbox WHERE state = ANY(%s) ORDER BY seq, key",
            (list(states),),
        )
        return [codec.delivery_from_json(doc) for (doc,) in rows]

    def has_delivery(self, key: str) -> bool:
        return key in self._keys

    def recent_news(self, limit: int) -> list[NewsRecord]:
        rows = self._rows(
            "SELECT doc FROM treaty_bot.news ORDER BY seen_at DESC, id LIMIT %s",
            (max(0, min(limit, 2**31 - 1)),),
        )
        return [codec.news_from_json(doc) for (doc,) in rows]

    def follows(self) -> dict[Person, tuple[Follow, ...]]:
        rows = self._rows("SELECT doc FROM treaty_bot.follows ORDER BY platform, user_id")
        found = dict(codec.follows_from_json(doc) for (doc,) in rows)
        return {person: follows for person, follows in found.items() if follows}

    # -- the one write path -----------------------------------------------------------------

    def commit(self, changes: Changes) -> None:
        if changes:
            self._commit(changes, clear=False)

    def replace_all(self, changes: Changes) -> None:
        """Make the stored state ``changes`` alone: what was stored is removed in the same
        transaction (``treaty-bot migrate --force``)."""
        self._commit(changes, clear=True)

    def _commit(self, changes: Changes, *, clear: bool) -> None:
        gone: list[str] = []
        try:
            with self._session() as conn, conn.cursor() as cur:
                if clear:
                    cur.execute(
                        "TRUNCATE treaty_bot.sources, treaty_bot.outbox, treaty_bot.news,"
                        " treaty_bot.snapshots, treaty_bot.follows"
                    )
                self._apply(cur, changes, gone)
        except LeaseLost:
            raise
        except psycopg.Error as err:
            raise self._error("cannot write; the previous state is kept", err) from None
        self.writes += 1
        if clear:
            self._keys = set()
        self._keys.update(r.key for r in changes.enqueue)
        self._keys.difference_update(gone)
        if changes.enqueue:
            top = max(r.seq for r in changes.enqueue)
            with self._seq_lock:
                self._seq = max(self._seq, top)

    def _check_fences(self, cur: psycopg.Cursor[Any], fences: Mapping[str, int]) -> None:
        """Refuse the commit unless this writer holds every lease named, with its token, by
        the database's clock. The rows are locked (``FOR SHARE``) until the commit ends, so a
        take-over waits for it and a commit never lands after one.

        Here and in every statement on leases the clock is ``clock_timestamp()``, the moment
        the statement runs: ``now()`` is its transaction's start, and a transaction begun
        while the lease was held, whose statements a cut network delivered late, would renew
        or write under a lease that had meanwhile expired."""
        names = sorted(fences)
        cur.execute(
            "SELECT name FROM treaty_bot.leases WHERE holder = %s"
            " AND expires_at > clock_timestamp()"
            " AND (name, fence) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
            " ORDER BY name FOR SHARE",
            (self.writer, names, [fences[n] for n in names]),
        )
        lost = frozenset(names) - {name for (name,) in cur.fetchall()}
        if lost:
            raise LeaseLost(lost, resource=self.location)

    def _apply(self, cur: psycopg.Cursor[Any], changes: Changes, gone: list[str]) -> None:
        if changes.fences:
            self._check_fences(cur, changes.fences)
        snapshots = [
            (f"events:{source}", codec.snapshot_to_json(snap))
            for source, snap in changes.snapshots.items()
        ]
        if changes.reminders is not None:
            snapshots.append(("reminders", codec.reminders_to_json(changes.reminders)))
        if changes.clauses is not None:
            snapshots.append(("clauses", codec.clauses_to_json(changes.clauses)))
        if changes.treaty is not None:
            snapshots.append(("treaty", codec.treaty_to_json(changes.treaty)))
        if snapshots:
            snapshots.sort(key=lambda named: named[0])  # rows locked in one order: no deadlock
            cur.executemany(
                "INSERT INTO treaty_bot.snapshots AS s (name, doc, written_by)"
                " VALUES (%s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE"
                " SET doc = EXCLUDED.doc, written_by = EXCLUDED.written_by, written_at = now()"
                " WHERE s.doc::text IS DISTINCT FROM EXCLUDED.doc::text",
                [(name, Json(doc), self.writer) for name, doc in snapshots],
            )
        self._apply_follows(cur, changes.follows)
        if changes.sources:
            self._apply_sources(cur, changes.sources)
        if changes.enqueue:
            cur.executemany(
                "INSERT INTO treaty_bot.outbox"
                " (key, seq, transport, channel, state, next_try, sent_at, doc, written_by)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (key) DO NOTHING",
                [
                    (
                        r.key,
                        r.seq,
                        r.transport,
                        r.channel,
                        r.state,
                        r.next_try,
                        r.sent_at,
                        Json(codec.delivery_to_json(r)),
                        self.writer,
                    )
                    for r in sorted(changes.enqueue, key=lambda r: r.key)
                ],
            )
        if changes.deliveries:
            self._apply_deliveries(cur, changes)
        if changes.news:
            cur.executemany(
                "INSERT INTO treaty_bot.news (seen_at, doc) VALUES (%s, %s)",
                [(n.seen_at, Json(codec.news_to_json(n))) for n in changes.news],
            )
            cur.execute(
                "DELETE FROM treaty_bot.news WHERE id IN (SELECT id FROM treaty_bot.news"
                " ORDER BY seen_at DESC, id DESC OFFSET %s)",
                (NEWS_KEPT,),
            )
        if any(u.state in DONE_STATES for u in changes.deliveries):
            now = max(u.at for u in changes.deliveries)
            cur.execute(
                "DELETE FROM treaty_bot.outbox WHERE state = ANY(%s)"
                " AND (sent_at IS NULL OR sent_at < %s) RETURNING key",
                (list(DONE_STATES), now.astimezone(UTC) - SENT_KEPT),
            )
            gone.extend(key for (key,) in cur.fetchall())

    def _apply_follows(
        self, cur: psycopg.Cursor[Any], follows: dict[Person, tuple[Follow, ...]]
    ) -> None:
        people = sorted(follows, key=lambda p: (p.platform, p.user))
        removed = [(p.platform, p.user) for p in people if not follows[p]]
        kept = [(p, follows[p]) for p in people if follows[p]]
        if removed:
            cur.executemany(
                "DELETE FROM treaty_bot.follows WHERE platform = %s AND user_id = %s", removed
            )
        if kept:
            cur.executemany(
                "INSERT INTO treaty_bot.follows AS f (platform, user_id, doc, written_by)"
                " VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (platform, user_id) DO UPDATE"
                " SET doc = EXCLUDED.doc, written_by = EXCLUDED.written_by, written_at = now()"
                " WHERE f.doc::text IS DISTINCT FROM EXCLUDED.doc::text",
                [
                    (p.platform, p.user, Json(codec.follows_to_json(p, listed)), self.writer)
                    for p, listed in kept
                ],
            )

    def _apply_sources(self, cur: psycopg.Cursor[Any], records: Sequence[SourceRecord]) -> None:
        cur.execute(
            "SELECT id, seen_digest FROM treaty_bot.sources WHERE id = ANY(%s)"
            " ORDER BY id FOR UPDATE",
            (sorted({r.id for r in records}),),
        )
        digests: dict[str, str | None] = dict(cur.fetchall())
        params = []
        for record in sorted(records, key=lambda r: r.id):  # the last of one id still wins
            digest, count, payload = self._seen_payload(record, digests.get(record.id))
            digests[record.id] = digest
            doc = codec.source_to_json(record, with_seen=False)
            params.append(
                (record.id, shard_key(record.id), Json(doc), payload, digest, count, self.writer)
            )
        cur.executemany(
            "INSERT INTO treaty_bot.sources AS s"
            " (id, shard_key, doc, seen, seen_digest, seen_count, written_by)"
            " VALUES (%s, %s, %s, %s::json, %s, %s, %s)"
            " ON CONFLICT (id) DO UPDATE SET"
            " doc = EXCLUDED.doc,"
            " seen = CASE WHEN EXCLUDED.seen_digest IS NOT DISTINCT FROM s.seen_digest"
            " THEN s.seen ELSE EXCLUDED.seen END,"
            " seen_digest = EXCLUDED.seen_digest,"
            " seen_count = EXCLUDED.seen_count,"
            " written_by = EXCLUDED.written_by,"
            " written_at = now()"
            " WHERE s.doc::text IS DISTINCT FROM EXCLUDED.doc::text"
            " OR s.seen_digest IS DISTINCT FROM EXCLUDED.seen_digest"
            " OR s.seen_count IS DISTINCT FROM EXCLUDED.seen_count",
            params,
        )

    @staticmethod
    def _seen_payload(
        record: SourceRecord, stored: str | None
    ) -> tuple[str | None, int, str | None]:
        """The digest and count of a record's seen keys, and their JSON text when the row
        does not hold them already (``None``: keep what it holds)."""
        seen = record.feed.seen
        prints = record.feed.fingerprints
        if (
            isinstance(seen, StoredSeen)
            and seen.name == stored
            and (prints.name == seen.name if isinstance(prints, StoredFingerprints) else not prints)
        ):
            return stored, len(seen), None  # as read (or not read at all): the row holds them
        if not seen:
            return None, 0, None
        payload = json.dumps(
            codec.seen_to_json(seen, prints), separators=(",", ":"), ensure_ascii=False
        )
        digest = hashlib.sha256(payload.encode()).hexdigest()[:24]
        return digest, len(seen), None if digest == stored else payload

    def _apply_deliveries(self, cur: psycopg.Cursor[Any], changes: Changes) -> None:
        keys = sorted({u.key for u in changes.deliveries})
        cur.execute(
            "SELECT key, doc FROM treaty_bot.outbox WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
            (keys,),
        )
        stored: dict[str, dict[str, Any]] = dict(cur.fetchall())
        rows: dict[str, dict[str, Any]] = {}
        for change in changes.deliveries:
            row = rows.get(change.key) or stored.get(change.key)
            if row is None:
                continue
            rows[change.key] = codec.delivery_updated(row, change)
        updates = [
            (
                Json(row),
                row["state"],
                codec.dt(row.get("next_try")),
                codec.dt(row.get("sent_at")),
                self.writer,
                key,
            )
            for key, row in sorted(rows.items())
            if row != stored.get(key)
        ]
        if updates:
            cur.executemany(
                "UPDATE treaty_bot.outbox SET doc = %s, state = %s, next_try = %s,"
                " sent_at = %s, written_by = %s, written_at = now() WHERE key = %s",
                updates,
            )

    # -- replicas: heartbeats, leases, claims -----------------------------------------------

    @contextlib.contextmanager
    def _write(self, what: str) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction, a database error raised as ``what``."""
        try:
            with self._session() as conn, conn.cursor() as cur:
                yield cur
        except psycopg.Error as err:
            raise self._error(what, err) from None

    def beat(
        self,
        *,
        held: Mapping[str, int],
        shards: int,
        jobs: Sequence[str],
        lease: float,
        version: str,
    ) -> Beat:
        """One heartbeat, in one transaction: say this replica is alive, renew the leases it
        holds (those it lost are missing from the answer), take its share of the shards
        (``ceil(shards / live replicas)``: free or expired ones first, by name), give back
        what it holds beyond its share, and take each job lease that is free."""
        if self._read_only:
            raise StoreDatabaseError("a preview holds no leases", resource=self.location)
        host, pid = socket.gethostname(), os.getpid()
        names = sorted(held)
        with self._write("cannot renew the leases") as cur:
            cur.execute(
                "INSERT INTO treaty_bot.replicas (id, host, pid, version) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (id) DO UPDATE"
                " SET heartbeat_at = clock_timestamp(), stopped_at = NULL",
                (self.writer, host, pid, version),
            )
            wanted = [shard_lease(n) for n in range(shards)] + list(jobs)
            cur.execute(
                "INSERT INTO treaty_bot.leases (name) SELECT unnest(%s::text[])"
                " ON CONFLICT (name) DO NOTHING",
                (wanted,),
            )
            cur.execute(
                "UPDATE treaty_bot.leases"
                " SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE holder = %s AND expires_at > clock_timestamp()"
                " AND (name, fence) IN (SELECT * FROM unnest(%s::text[], %s::bigint[]))"
                " RETURNING name, fence",
                (lease, self.writer, names, [held[n] for n in names]),
            )
            now_held: dict[str, int] = {name: int(fence) for name, fence in cur.fetchall()}
            cur.execute(
                "SELECT count(*) FROM treaty_bot.replicas WHERE stopped_at IS NULL"
                " AND heartbeat_at > clock_timestamp() - make_interval(secs => %s)",
                (lease,),
            )
            found = cur.fetchone()
            live = max(1, int(found[0]) if found else 1)
            share = -(-shards // live)
            mine = sorted(
                (n for n in now_held if n.startswith("shard:") and n in wanted),
                key=lambda n: int(n[6:]),
            )
            if len(mine) > share:
                extra = mine[share:]
                cur.execute(
                    "UPDATE treaty_bot.leases SET holder = NULL, expires_at = clock_timestamp()"
                    " WHERE holder = %s AND name = ANY(%s)",
                    (self.writer, extra),
                )
                for name in extra:
                    del now_held[name]
            elif len(mine) < share:
                now_held.update(self._take(cur, lease, share - len(mine), shards=shards))
            for job in jobs:
                if job not in now_held:
                    now_held.update(self._take(cur, lease, 1, names=[job]))
            # the shards beyond the count configured now (fewer shards than before) are freed
            stale = sorted(n for n in now_held if n.startswith("shard:") and n not in wanted)
            if stale:
                cur.execute(
                    "UPDATE treaty_bot.leases SET holder = NULL, expires_at = clock_timestamp()"
                    " WHERE holder = %s AND name = ANY(%s)",
                    (self.writer, stale),
                )
                for name in stale:
                    del now_held[name]
            cur.execute(
                "SELECT min(expires_at) FROM treaty_bot.leases WHERE holder IS NOT NULL"
                " AND holder <> %s AND expires_at > clock_timestamp()",
                (self.writer,),
            )
            expiry = cur.fetchone()
            cur.execute(
                "DELETE FROM treaty_bot.claims WHERE claimed_at < clock_timestamp() - %s::interval",
                (CLAIMS_KEPT,),
            )
            cur.execute(
                "DELETE FROM treaty_bot.replicas WHERE coalesce(stopped_at, heartbeat_at)"
                " < clock_timestamp() - %s::interval",
                (REPLICAS_KEPT,),
            )
        return Beat(now_held, live, expiry[0] if expiry else None)

    def _take(
        self,
        cur: psycopg.Cursor[Any],
        lease: float,
        count: int,
        *,
        shards: int | None = None,
        names: Sequence[str] = (),
    ) -> dict[str, int]:
        """Take up to ``count`` free or expired leases (shards, or those ``names``), skipping
        rows another replica is taking at this moment; each taken lease's token goes up."""
        if shards is not None:
            names = [shard_lease(n) for n in range(shards)]
        cur.execute(
            "UPDATE treaty_bot.leases SET holder = %s, fence = fence + 1,"
            " expires_at = clock_timestamp() + make_interval(secs => %s),"
            " acquired_at = clock_timestamp()"
            " WHERE name IN (SELECT name FROM treaty_bot.leases WHERE name = ANY(%s)"
            " AND (holder IS NULL OR expires_at <= clock_timestamp())"
            " ORDER BY name FOR UPDATE SKIP LOCKED LIMIT %s)"
            " RETURNING name, fence",
            (self.writer, lease, list(names), count),
        )
        return {name: int(fence) for name, fence in cur.fetchall()}

    def take(
        self, names: Sequence[str], *, held: Mapping[str, int], lease: float
    ) -> dict[str, int]:
        """Of the leases ``names`` (created when new), those this replica holds now: the ones
        in ``held`` it still holds, and the free or expired ones it takes."""
        wanted = sorted(set(names))
        with self._write("cannot take the leases") as cur:
            cur.execute(
                "INSERT INTO treaty_bot.leases (name) SELECT unnest(%s::text[])"
                " ON CONFLICT (name) DO NOTHING",
                (wanted,),
            )
            kept = [n for n in wanted if n in held]
            cur.execute(
                "SELECT name, fence FROM treaty_bot.leases WHERE holder = %s"
                " AND expires_at > clock_timestamp() AND name = ANY(%s)",
                (self.writer, kept),
            )
            found = {name: int(fence) for name, fence in cur.fetchall() if held[name] == fence}
            rest = [n for n in wanted if n not in found]
            if rest:
                found.update(self._take(cur, lease, len(rest), names=rest))
        return found

    def release(self, names: Sequence[str]) -> None:
        """Give leases back at once (their next holder need not wait for them to expire)."""
        if not names:
            return
        with self._write("cannot release the leases") as cur:
            cur.execute(
                "UPDATE treaty_bot.leases SET holder = NULL, expires_at = clock_timestamp()"
                " WHERE holder = %s AND name = ANY(%s)",
                (self.writer, sorted(names)),
            )

    def leave(self) -> None:
        """A replica stopping cleanly: every lease it holds is given back, and it is marked
        stopped, so the others take its shards at their next heartbeat."""
        with self._write("cannot leave") as cur:
            cur.execute(
                "UPDATE treaty_bot.leases SET holder = NULL, expires_at = clock_timestamp()"
                " WHERE holder = %s",
                (self.writer,),
            )
            cur.execute(
                "UPDATE treaty_bot.replicas SET stopped_at = clock_timestamp() WHERE id = %s",
                (self.writer,),
            )

    def claim_once(self, key: str) -> bool:
        """Whether this replica is the first to claim ``key`` (a command's event id): only the
        first answers."""
        with self._write("cannot claim") as cur:
            cur.execute(
                "INSERT INTO treaty_bot.claims (key, holder) VALUES (%s, %s)"
                " ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, self.writer),
            )
            return cur.fetchone() is not None

    def replicas(self) -> list[ReplicaRow]:
        """Every replica the database knows (running or stopped within ``REPLICAS_KEPT``),
        oldest first, each with the leases it holds now."""
        rows = self._rows(
            "SELECT r.id, r.host, r.pid, r.version, r.started_at, r.heartbeat_at, r.stopped_at,"
            " coalesce(array_agg(l.name ORDER BY l.name) FILTER (WHERE l.name IS NOT NULL),"
            " '{}'), clock_timestamp()"
            " FROM treaty_bot.replicas r LEFT JOIN treaty_bot.leases l"
            " ON l.holder = r.id AND l.expires_at > clock_timestamp()"
            " GROUP BY r.id ORDER BY r.started_at, r.id"
        )
        return [
            ReplicaRow(
                id=rid,
                host=host,
                pid=int(pid),
                version=version,
                started_at=started,
                heartbeat_at=beat,
                stopped_at=stopped,
                leases=tuple(leases),
                now=now,
            )
            for rid, host, pid, version, started, beat, stopped, leases, now in rows
        ]
