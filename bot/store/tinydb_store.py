"""The embedded store: a TinyDB JSON file, written atomically, held by one process, and each
source's seen keys in files of their own beside it (``bot.store.seen``).

TinyDB's own ``JSONStorage`` rewrites the file in place, which a crash or a full disk can leave
half-written. ``AtomicJSONStorage`` writes a temporary file in the same directory, fsyncs it,
renames it over the old one with ``os.replace`` and fsyncs the directory, so the file on disk is
always one complete state. A lock file keeps a second process out.

Files next to ``<storage>``: ``.lock``; ``.bak``, the state as it was at the last start;
``.seen/``, the seen keys of each source, one file each, named by the state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, MutableMapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import Delivery, NewsRecord, SourceHealth, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot
from bot.errors import StoreCorrupt, StoreError, StoreLocked
from bot.files import write_atomically, write_parts_atomically
from bot.store import codec
from bot.store.base import DONE_STATES, NEWS_KEPT, SENT_KEPT, Changes
from bot.store.seen import SeenFiles, StoredFingerprints, StoredSeen

log = logging.getLogger(__name__)

SCHEMA = 1


def _hint(path: Path) -> str:
    return (
        f"The bot will not start on it, so that it does not announce everything again. "
        f"To recover, restore the copy made at the last good start "
        f"(mv {path}.bak {path}), or move the file away to start afresh (the first poll of "
        f"each source then only remembers what exists)."
    )


def _decode(path: Path, raw: bytes) -> dict[str, Any]:
    """Parse and check the file's shape, or raise ``StoreCorrupt`` saying where and why."""
    hint = _hint(path)
    if not raw.strip():
        raise StoreCorrupt(f"the file is empty. {hint}", resource=str(path))
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as err:
        raise StoreCorrupt(f"not UTF-8 at byte {err.start}. {hint}", resource=str(path)) from None
    except json.JSONDecodeError as err:
        raise StoreCorrupt(
            f"not valid JSON at line {err.lineno} column {err.colno} (byte {err.pos}): "
            f"{err.msg}. {hint}",
            resource=str(path),
        ) from None
    if not isinstance(data, dict) or not all(
        isinstance(t, dict) and all(isinstance(d, dict) for d in t.values()) for t in data.values()
    ):
        raise StoreCorrupt(
            f"not a treaty-bot state file (unexpected structure). {hint}", resource=str(path)
        )
    meta = data.get("meta", {}).get("1", {})
    if "schema" not in meta:  # every state the bot writes says which it is
        raise StoreCorrupt(
            f"not a treaty-bot state file (no schema mark in meta). {hint}", resource=str(path)
        )
    for table, key in (("sources", "id"), ("outbox", "key"), ("snapshots", "name")):
        for doc_id, doc in data.get(table, {}).items():
            if not isinstance(doc.get(key), str):
                raise StoreCorrupt(
                    f"{table} record {doc_id} has no {key}. {hint}", resource=str(path)
                )
    written = meta.get("schema", SCHEMA)
    if isinstance(written, int) and not isinstance(written, bool) and written > SCHEMA:
        raise StoreCorrupt(
            f"written by a newer treaty-bot (schema {written}; this one reads schema {SCHEMA}). "
            f"Run a treaty-bot that reads schema {written}. {hint}",
            resource=str(path),
        )
    if written != SCHEMA:
        raise StoreCorrupt(
            f"written by another version (schema {written}). {hint}", resource=str(path)
        )
    return data


#: Tables that grow with the number of sources: each of their documents is encoded once and
#: again only when the store says it changed (``touch``), so that a commit costs what it
#: changes rather than the whole state (at 10,000 sources the main file is about 4 MB, and
#: encoding it holds the interpreter's lock for some 50 ms).
FRAGMENTED = frozenset({"sources"})


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class AtomicJSONStorage(Storage):
    """A TinyDB storage holding the data in memory and writing it atomically on ``flush``.

    Writes made inside ``batch()`` are flushed once at its end; a write error rolls the
    in-memory data back to what is on disk. The text written is exactly ``json.dumps`` of the
    data; the documents of ``FRAGMENTED`` tables are taken from their encoding at the last
    flush unless ``touch`` named them since. The text is written in parts and never joined:
    at 10,000 sources one joined copy is megabytes, allocated and freed at each commit, and
    such blocks leave the allocator's heaps larger than the state they hold.
    """

    def __init__(
        self, path: Path, data: dict[str, Any], text: str | None, *, read_only: bool
    ) -> None:
        """``text``: what the file holds now, ``data`` decoded (``None``: no file yet)."""
        self.path = path
        self.read_only = read_only
        self._data = data
        #: the text on disk, in the parts it was written in (as read: one part)
        self._on_disk: list[str] = [json.dumps(data) if text is None else text]
        self._depth = 0
        self._dirty = False
        self.writes = 0
        #: table -> document id -> its '"id":{...}' text, as last encoded
        self._fragments: dict[str, dict[str, str]] = {}

    def read(self) -> dict[str, Any] | None:
        return self._data

    def write(self, data: dict[str, Any]) -> None:
        self._data = data
        self._dirty = True
        if self._depth == 0:
            self.flush()

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        except BaseException:
            self._rollback()
            raise
        finally:
            self._depth -= 1
        if self._depth == 0:
            self.flush()

    def touch(self, table: str, doc_ids: Iterable[int]) -> None:
        """Documents of ``table`` that were inserted or changed: encode them again."""
        cache = self._fragments.get(table)
        if cache is not None:
            for doc_id in doc_ids:
                cache.pop(str(doc_id), None)

    def parts(self) -> list[str]:
        """The data as JSON, as ``json.dumps`` writes it with the separators above, in parts
        whose concatenation is that text."""
        parts = ["{"]
        for name, table in self._data.items():
            if len(parts) > 1:
                parts.append(",")
            if name not in FRAGMENTED:
                parts.append(f"{_dumps(name)}:{_dumps(table)}")
                continue
            cache = self._fragments.setdefault(name, {})
            if len(cache) > len(table):  # documents removed: forget theirs
                cache = self._fragments[name] = {k: v for k, v in cache.items() if k in table}
            parts.append(f"{_dumps(name)}:{{")
            first = True
            for doc_id, doc in table.items():
                text = cache.get(doc_id)
                if text is None:
                    text = cache[doc_id] = f"{_dumps(doc_id)}:{_dumps(doc)}"
                if not first:
                    parts.append(",")
                first = False
                parts.append(text)
            parts.append("}")
        parts.append("}")
        return parts

    def _unchanged(self, parts: list[str]) -> bool:
        if len(self._on_disk) == 1:  # as read: compare the text once
            return "".join(parts) == self._on_disk[0]
        return parts == self._on_disk  # the documents' texts mostly the very same objects

    def flush(self) -> None:
        if not self._dirty:
            return
        parts = self.parts()
        self._dirty = False
        if self._unchanged(parts):
            return
        if self.read_only:
            return
        try:
            write_parts_atomically(self.path, parts)
        except OSError as err:
            self._rollback()
            reason = (
                "the disk is full"
                if err.errno in (errno.ENOSPC, errno.EFBIG)
                else (err.strerror or str(err))
            )
            raise StoreError(
                f"cannot write: {reason}; the previous state is kept", resource=str(self.path)
            ) from err
        self._on_disk = parts
        self.writes += 1

    def _rollback(self) -> None:
        self._data = json.loads("".join(self._on_disk))
        self._dirty = False
        self._fragments.clear()

    def close(self) -> None:
        pass


def _replace_with(
    docs: dict[int, dict[str, Any]], ids: dict[str, int], key: str
) -> Callable[[MutableMapping[Any, Any]], None]:
    """A TinyDB update that makes each document it is given ``docs[its id]``."""

    def replace(doc: MutableMapping[Any, Any]) -> None:
        new = docs[ids[doc[key]]]
        doc.clear()
        doc.update(new)

    return replace


class TinyDBStore:
    """The ``Store`` on a TinyDB JSON file (see ``bot.store.base`` for the contract)."""

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self._path = Path(path)
        self._lock_fd: int | None = None
        self._read_only = read_only
        if not read_only:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        try:
            data, text = self._load()
        except BaseException:
            self._unlock()
            raise
        self._storage = AtomicJSONStorage(self._path, data, text, read_only=read_only)
        self._db = TinyDB(storage=lambda: self._storage)
        self._db.default_table_name = "meta"
        self._sources = self._db.table("sources", cache_size=0)
        self._outbox = self._db.table("outbox", cache_size=0)
        self._news = self._db.table("news", cache_size=0)
        self._meta = self._db.table("meta", cache_size=0)
        self._snapshots = self._db.table("snapshots", cache_size=0)
        self._snapshot_ids = {d["name"]: d.doc_id for d in self._snapshots.all()}
        self._follows = self._db.table("follows", cache_size=0)
        self._follow_ids = {(d["platform"], d["user"]): d.doc_id for d in self._follows.all()}
        self._source_ids = {d["id"]: d.doc_id for d in self._sources.all()}
        self._outbox_ids = {d["key"]: d.doc_id for d in self._outbox.all()}
        self._seq = max((int(d["seq"]) for d in self._outbox.all()), default=0)
        #: what commands read, decoded once per commit: health, event listings, recent news
        self._decoded: dict[str, Any] = {}
        self._seen = SeenFiles(self._path.with_name(self._path.name + ".seen"), read_only=read_only)
        named = {d["seen_file"] for d in self._sources.all() if d.get("seen_file")}
        try:
            self._seen.check(named, state=self._path, hint=_hint(self._path))
        except BaseException:
            self._unlock()
            raise
        #: files named by the state at start (and by its .bak copy): kept until the next start
        self._kept = frozenset(named)
        if not read_only:
            self._seen.collect(set(named))
            inline = [d for d in self._sources.all() if "seen" in d]
            if inline:  # a state written before seen keys had files of their own
                self.commit(Changes(sources=[codec.source_from_json(dict(d)) for d in inline]))

    # -- life cycle -------------------------------------------------------------------------

    def _lock(self) -> None:
        lock_path = self._path.with_name(self._path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreLocked(
                f"another treaty-bot process (pid {holder}) is using it; stop that one first, "
                f"or give this one another storage file",
                resource=str(self._path),
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _load(self) -> tuple[dict[str, Any], str | None]:
        """The state and the text it was read from (``None`` if there is no file yet)."""
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}, None
        except OSError as err:
            raise StoreError(f"cannot read: {err.strerror}", resource=str(self._path)) from err
        data = _decode(self._path, raw)
        if not self._read_only:
            write_atomically(self._path.with_name(self._path.name + ".bak"), raw)
        return data, raw.decode(errors="replace")

    def close(self) -> None:
        self._unlock()

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def writes(self) -> int:
        """How many times the file was written since opening (for tests and benchmarks)."""
        return self._storage.writes

    @property
    def seen_files_written(self) -> int:
        """Bytes of seen keys written since opening (for tests and benchmarks)."""
        return self._seen.bytes_written

    # -- reads ------------------------------------------------------------------------------

    def source(self, source_id: str) -> SourceRecord:
        doc_id = self._source_ids.get(source_id)
        if doc_id is None:
            return SourceRecord(id=source_id)
        doc = self._sources.get(doc_id=doc_id)
        return self._decode_source(dict(doc)) if doc else SourceRecord(id=source_id)

    def _decode_source(self, doc: dict[str, Any]) -> SourceRecord:
        name = doc.get("seen_file")
        if not name:
            return codec.source_from_json(doc)
        decoded: list[tuple[dict[str, datetime], dict[str, str]]] = []

        def read() -> tuple[dict[str, datetime], dict[str, str]]:
            # read from the thread that first needs the keys: files named by the state are
            # never rewritten, and the one a record names is removed only after a commit of
            # a newer record of the same source
            if not decoded:
                raw = self._seen.read(name)
                decoded.append((codec.seen_from_json(raw), codec.fingerprints_from_json(raw)))
            return decoded[0]

        seen = StoredSeen(name, int(doc.get("seen_count") or 0), lambda: read()[0])
        return codec.source_from_json(doc, seen, StoredFingerprints(name, lambda: read()[1]))

    def sources(self) -> dict[str, SourceRecord]:
        return {d["id"]: self._decode_source(dict(d)) for d in self._sources.all()}

    def _snapshot_data(self, name: str) -> dict[str, Any] | None:
        doc_id = self._snapshot_ids.get(name)
        doc = self._snapshots.get(doc_id=doc_id) if doc_id is not None else None
        return dict(doc["data"]) if doc else None

    def snapshot(self, source: str) -> Snapshot:
        data = self._snapshot_data(f"events:{source}")
        return codec.snapshot_from_json(data) if data else Snapshot()

    def snapshots(self) -> dict[str, Snapshot]:
        cached = self._decoded.get("snapshots")
        if cached is None:
            cached = self._decoded["snapshots"] = {
                d["name"].removeprefix("events:"): codec.snapshot_from_json(d["data"])
                for d in self._snapshots.all()
                if d["name"].startswith("events:")
            }
        return dict(cached)

    def reminders(self) -> ReminderState:
        data = self._snapshot_data("reminders")
        return codec.reminders_from_json(data) if data else ReminderState()

    def clause_snapshot(self) -> ClauseSnapshot:
        data = self._snapshot_data("clauses")
        return codec.clauses_from_json(data) if data else ClauseSnapshot()

    def treaty_snapshot(self) -> TreatySnapshot:
        data = self._snapshot_data("treaty")
        return codec.treaty_from_json(data) if data else TreatySnapshot()

    def _put_snapshot(self, name: str, data: dict[str, Any]) -> None:
        doc = {"name": name, "data": data}
        doc_id = self._snapshot_ids.get(name)
        if doc_id is None:
            self._snapshot_ids[name] = self._snapshots.insert(doc)
        else:
            self._snapshots.upsert(Document(doc, doc_id=doc_id))

    def healths(self) -> dict[str, SourceHealth]:
        cached = self._decoded.get("healths")
        if cached is None:
            cached = self._decoded["healths"] = {
                d["id"]: codec.health_from_json(dict(d)) for d in self._sources.all()
            }
        return dict(cached)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def deliveries(self, states: Sequence[str] = ("pending", "sending")) -> list[Delivery]:
        rows = [
            codec.delivery_from_json(dict(d)) for d in self._outbox.all() if d["state"] in states
        ]
        rows.sort(key=lambda r: r.seq)
        return rows

    def has_delivery(self, key: str) -> bool:
        return key in self._outbox_ids

    def follows(self) -> dict[Person, tuple[Follow, ...]]:
        cached = self._decoded.get("follows")
        if cached is None:
            cached = self._decoded["follows"] = dict(
                codec.follows_from_json(dict(d)) for d in self._follows.all()
            )
        return {person: follows for person, follows in cached.items() if follows}

    def _put_follows(self, person: Person, follows: tuple[Follow, ...]) -> None:
        ident = (person.platform, person.user)
        doc_id = self._follow_ids.get(ident)
        if not follows:
            if doc_id is not None:
                self._follows.remove(doc_ids=[doc_id])
                del self._follow_ids[ident]
            return
        doc = codec.follows_to_json(person, follows)
        if doc_id is None:
            self._follow_ids[ident] = self._follows.insert(doc)
        else:
            self._follows.upsert(Document(doc, doc_id=doc_id))

    def recent_news(self, limit: int) -> list[NewsRecord]:
        rows = self._decoded.get("news")
        if rows is None:
            rows = self._decoded["news"] = sorted(
                (codec.news_from_json(dict(d)) for d in self._news.all()),
                key=lambda n: n.seen_at,
                reverse=True,
            )
        return rows[:limit]

    # -- the one write path -----------------------------------------------------------------

    def commit(self, changes: Changes) -> None:
        if not changes:
            return
        # the healths of thousands of sources are kept decoded across commits (``feeds`` and
        # ``status`` read them): only those of the sources this commit writes are decoded again
        healths = self._decoded.get("healths")
        self._decoded.clear()
        source_ids = dict(self._source_ids)
        outbox_ids = dict(self._outbox_ids)
        snapshot_ids = dict(self._snapshot_ids)
        follow_ids = dict(self._follow_ids)
        replaced: list[str] = []
        try:
            with self._storage.batch():
                if not self._meta.get(doc_id=1):
                    self._meta.insert(Document({"schema": SCHEMA}, doc_id=1))
                self._apply(changes, replaced)
                self._seen.sync()  # the files are durable before the state names them
        except BaseException:
            self._seen.forget_written(remove=True)
            self._source_ids = source_ids
            self._outbox_ids = outbox_ids
            self._snapshot_ids = snapshot_ids
            self._follow_ids = follow_ids
            self._follows.clear_cache()
            self._follows._next_id = None
            for table in (self._sources, self._outbox, self._news, self._meta, self._snapshots):
                table.clear_cache()
                table._next_id = None
            raise
        self._seen.forget_written(remove=False)
        self._seen.remove(n for n in replaced if n not in self._kept)
        if healths is not None:
            for record in changes.sources:
                doc = self._sources.get(doc_id=self._source_ids[record.id])
                healths[record.id] = codec.health_from_json(dict(doc or {}))
            self._decoded["healths"] = healths

    def _apply(self, changes: Changes, replaced: list[str]) -> None:
        for source, snap in changes.snapshots.items():
            self._put_snapshot(f"events:{source}", codec.snapshot_to_json(snap))
        if changes.reminders is not None:
            self._put_snapshot("reminders", codec.reminders_to_json(changes.reminders))
        if changes.clauses is not None:
            self._put_snapshot("clauses", codec.clauses_to_json(changes.clauses))
        for person, follows in changes.follows.items():
            self._put_follows(person, follows)
        if changes.treaty is not None:
            self._put_snapshot("treaty", codec.treaty_to_json(changes.treaty))
        # each table is updated in one call: TinyDB walks the whole table on every call
        # (an insert too: the new sources of a commit are inserted together)
        updated: dict[int, dict[str, Any]] = {}
        added: dict[str, dict[str, Any]] = {}
        for record in changes.sources:
            doc_id = self._source_ids.get(record.id)
            current = (
                (updated.get(doc_id) or self._sources.get(doc_id=doc_id))
                if doc_id is not None
                else added.get(record.id)
            )
            doc = self._source_doc(record, current)
            if current is not None and current.get("seen_file") not in (None, doc["seen_file"]):
                replaced.append(current["seen_file"])
            if doc_id is None:
                added[record.id] = doc
            else:
                updated[doc_id] = doc
        if added:
            ids = self._sources.insert_multiple(list(added.values()))
            self._source_ids.update(zip(added, ids, strict=True))
            self._storage.touch("sources", ids)
        if updated:
            self._storage.touch("sources", updated)
            self._sources.update(
                _replace_with(updated, self._source_ids, "id"), doc_ids=list(updated)
            )
        fresh: dict[str, Delivery] = {}
        for r in changes.enqueue:  # a key enqueued twice in one commit: the first is kept
            if r.key not in self._outbox_ids:
                fresh.setdefault(r.key, r)
        if fresh:
            ids = self._outbox.insert_multiple([codec.delivery_to_json(r) for r in fresh.values()])
            for delivery, doc_id in zip(fresh.values(), ids, strict=True):
                self._outbox_ids[delivery.key] = doc_id
        rows: dict[int, dict[str, Any]] = {}
        for change in changes.deliveries:
            doc_id = self._outbox_ids.get(change.key)
            if doc_id is None:
                continue
            row = rows.get(doc_id) or self._outbox.get(doc_id=doc_id) or {}
            rows[doc_id] = codec.delivery_updated(row, change)
        if rows:
            self._outbox.update(_replace_with(rows, self._outbox_ids, "key"), doc_ids=list(rows))
        if changes.news:
            self._news.insert_multiple([codec.news_to_json(n) for n in changes.news])
            self._prune_news()
        if any(u.state in DONE_STATES for u in changes.deliveries):
            self._prune_sent(max(u.at for u in changes.deliveries))

    def _source_doc(self, record: SourceRecord, current: dict[str, Any] | None) -> dict[str, Any]:
        """The main file's document of a source; its seen keys go to a new file only when they
        differ from those of the file it names now."""
        doc = codec.source_to_json(record, with_seen=False)
        seen = record.feed.seen
        prints = record.feed.fingerprints
        if (
            isinstance(seen, StoredSeen)
            and current
            and seen.name == current.get("seen_file")
            and (prints.name == seen.name if isinstance(prints, StoredFingerprints) else not prints)
        ):
            # the keys as they were read (or not read at all): the file named now holds them
            return doc | {k: current.get(k) for k in ("seen_file", "seen_hash", "seen_count")}
        if not record.feed.seen:
            return doc | {"seen_file": None, "seen_hash": None, "seen_count": 0}
        payload = json.dumps(
            codec.seen_to_json(record.feed.seen, prints), separators=(",", ":"), ensure_ascii=False
        ).encode()
        digest = hashlib.sha256(payload).hexdigest()[:24]
        if current is not None and current.get("seen_hash") == digest and current.get("seen_file"):
            name = current["seen_file"]
        else:
            name = self._seen.write_new(record.id, payload)
        return doc | {"seen_file": name, "seen_hash": digest, "seen_count": len(record.feed.seen)}

    def _prune_news(self) -> None:
        docs = self._news.all()
        if len(docs) <= NEWS_KEPT:
            return
        docs.sort(key=lambda d: d["seen_at"])
        self._news.remove(doc_ids=[d.doc_id for d in docs[: len(docs) - NEWS_KEPT]])

    def _prune_sent(self, now: datetime) -> None:
        cutoff = (now.astimezone(UTC) - SENT_KEPT).isoformat()
        old = [
            d
            for d in self._outbox.all()
            if d["state"] in DONE_STATES and (d.get("sent_at") or "") < cutoff
        ]
        if old:
            self._outbox.remove(doc_ids=[d.doc_id for d in old])
            for d in old:
                self._outbox_ids.pop(d["key"], None)
