"""The storage seam: what any store must do, and what it promises.

Contract
--------
- **One writer.** A store is used by one process. Opening a store whose file another process
  holds raises ``StoreLocked`` naming the file; it never waits and never shares.
- **Nothing silently forgotten.** Opening a file that exists but cannot be read raises
  ``StoreCorrupt`` naming the file and the reason; the file is left untouched. A store never
  starts empty in place of a damaged file, since that would re-announce everything.
- **All or nothing.** ``commit(changes)`` applies every change of one round or none of them. After
  a crash at any instant (``kill -9`` included) the file holds either the state before the
  commit or after it. On a write error (disk full…) ``StoreError`` is raised, the file keeps
  the previous state, and the in-memory view is rolled back to it, so the caller can retry.
- **Quiet rounds cost nothing.** ``commit`` of empty changes writes nothing.
- **Time.** Every datetime going in and out is aware and in UTC.
- **Threads.** Calls are blocking and not thread-safe; callers serialise them (the app runs them
  one at a time in a worker thread so the event loop never waits on the disk).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import Delivery, NewsRecord, SourceHealth, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot


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
        """Release the file and the lock. Idempotent."""
        ...
