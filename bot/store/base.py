"""The storage seam: what any store must do, and what it promises.

Two stores keep the contract: the TinyDB file (``tinydb_store``, one process) and PostgreSQL
(``postgres_store``, several processes may share one database). ``tests/unit/
test_store_contract.py`` runs the same tests on both.

Contract
--------
- **Writers.** A TinyDB file is used by one process: opening a file another process holds
  raises ``StoreLocked`` naming the file; it never waits and never shares. A PostgreSQL
  database may be opened by several processes at once. Each commit is then one transaction,
  and the database's keys are the guarantee: enqueueing a row whose key exists (written by
  any process) is a no-op; a delivery update applies to the row as it is in the database; a
  source record, a snapshot and a person's follows are replaced whole (the last commit wins,
  so one process at a time should write a given source: leases will decide which).
- **Nothing silently forgotten.** A state that exists but cannot be read raises
  ``StoreCorrupt`` naming it and the reason; it is left untouched. A store never starts empty
  in place of a damaged state, since that would re-announce everything.
- **Versions.** A state says which schema it is written in. One written by a newer treaty-bot
  is refused at open with ``StoreError`` naming both versions, and left untouched. PostgreSQL
  migrates an older schema at open, in one transaction, under an advisory lock, so processes
  starting together migrate it once.
- **All or nothing.** ``commit(changes)`` applies every change of one round or none of them.
  After a crash at any instant (``kill -9`` included) the state is the one before the commit
  or the one after it. On a write error (disk full, connection lost…) ``StoreError`` is
  raised, the stored state is the previous one, and so is what the store answers (its
  in-memory view is rolled back), so the caller can retry.
- **Quiet rounds cost nothing.** ``commit`` of empty changes writes nothing; nor does a
  record committed again with the same values.
- **Bounded.** Rows whose alert went out (``DONE_STATES``) keep only ``SENT_ALERT_FIELDS``
  of it and are removed ``SENT_KEPT`` after they went out (counted from the newest update of
  the commit that marks one); at most ``NEWS_KEPT`` news records are kept, the newest.
- **Time.** Every datetime going in and out is aware and in UTC.
- **Threads.** Calls are blocking; callers serialise them (the app runs them one at a time in
  a worker thread so the event loop never waits on the disk or the network). ``next_seq`` and
  ``has_delivery`` answer from memory, without I/O, from any thread: ``has_delivery`` knows
  the rows that existed at open and those this store wrote since (another process's rows are
  caught by the key when enqueued), and ``next_seq`` is larger than any ``seq`` it knows.
- **Leases.** A commit that names ``fences`` is applied only if, in the database and by its
  clock, the writer holds each named lease with that token and it has not expired; otherwise
  nothing of it is written and ``LeaseLost`` names the leases lost. The TinyDB store ignores
  them (one process owns the file).
- **Secrets.** ``location`` and every error message show a database URL with its password
  masked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import Delivery, NewsRecord, SourceHealth, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot

#: How many news records are kept (the newest).
NEWS_KEPT = 500
#: How long a row whose alert went out is kept, as a record of what went out.
SENT_KEPT = timedelta(days=30)
#: What a row whose alert went out keeps of it: enough to say what it was, not its text.
SENT_ALERT_FIELDS = ("kind", "id", "channels", "source", "title", "url", "at")
#: Rows whose alert went out (alone, or grouped into a digest or a quiet-hours release).
DONE_STATES = ("sent", "grouped")
#: Every state an outbox row can be in.
ALL_STATES = ("pending", "sending", "sent", "failed", "held", "grouped")


@dataclass(frozen=True, slots=True)
class DeliveryUpdate:
    """A change of an outbox row's state."""

    key: str
    state: str
    at: datetime
    error: str | None = None
    next_try: datetime | None = None
    count_attempt: bool = False


@dataclass(slots=True)
class Changes:
    """Everything one round wants to remember, applied in one ``commit``."""

    sources: list[SourceRecord] = field(default_factory=list)
    enqueue: list[Delivery] = field(default_factory=list)
    deliveries: list[DeliveryUpdate] = field(default_factory=list)
    news: list[NewsRecord] = field(default_factory=list)
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    reminders: ReminderState | None = None
    clauses: ClauseSnapshot | None = None
    treaty: TreatySnapshot | None = None
    #: each person's whole list of follows as it is now (an empty tuple: they follow nothing)
    follows: dict[Person, tuple[Follow, ...]] = field(default_factory=dict)
    #: the leases (name: fencing token) this commit is written under: a database shared by
    #: replicas refuses the whole commit unless the writer still holds every one of them
    #: (``LeaseLost``); a state file, which one process owns, has no leases
    fences: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(
            self.sources
            or self.enqueue
            or self.deliveries
            or self.news
            or self.snapshots
            or self.reminders is not None
            or self.clauses is not None
            or self.treaty is not None
            or bool(self.follows)
        )


class Store(Protocol):
    """Persistent state: sources, the outbox of deliveries, recent matched news, and what
    each person follows."""

    @property
    def location(self) -> str:
        """Where the state lives, for messages."""
        ...

    def source(self, source_id: str) -> SourceRecord:
        """The record of a source, or an empty one if it was never polled."""
        ...

    def sources(self) -> dict[str, SourceRecord]:
        """Every source record, by id."""
        ...

    def healths(self) -> dict[str, SourceHealth]:
        """Every source's health, by id (without decoding what each source has seen)."""
        ...

    def snapshot(self, source: str) -> Snapshot:
        """The last listing of an event source (empty, not initialised, if none)."""
        ...

    def snapshots(self) -> dict[str, Snapshot]:
        """Every event source's last listing, by source id."""
        ...

    def reminders(self) -> ReminderState:
        """Which reminders were sent."""
        ...

    def clause_snapshot(self) -> ClauseSnapshot:
        """The clause statuses last seen."""
        ...

    def treaty_snapshot(self) -> TreatySnapshot:
        """The depositary's record of the treaty as last accepted."""
        ...

    def next_seq(self) -> int:
        """A number larger than any delivery's ``seq`` so far (not persisted until commit)."""
        ...

    def commit(self, changes: Changes) -> None:
        """Apply ``changes`` atomically (see the module contract)."""
        ...

    def deliveries(self, states: Sequence[str] = ("pending", "sending")) -> list[Delivery]:
        """Outbox rows in the given states, oldest first (by ``seq``)."""
        ...

    def has_delivery(self, key: str) -> bool:
        """Whether a row with this key exists, in any state."""
        ...

    def recent_news(self, limit: int) -> list[NewsRecord]:
        """The newest matched items, newest first."""
        ...

    def follows(self) -> dict[Person, tuple[Follow, ...]]:
        """What each person follows, by (platform, user id); people who follow nothing are
        left out."""
        ...

    def close(self) -> None:
        """Release the file and its lock, or the database connections. Idempotent."""
        ...
