"""Where the state lives, and moving it between the two stores.

The state is a TinyDB file (``storage`` in bot.yaml, ``data/treaty-bot.json`` by default) or
a PostgreSQL database: ``storage: postgresql://...`` in bot.yaml, or the URL in
``TREATY_BOT_DATABASE_URL``, which wins. What stays on the machine whatever the store (the
Matrix device and keys, the console's journal) lives in the directory of the state file, or
in ``data/`` when bot.yaml names a database.

``treaty-bot migrate --to URL|FILE`` copies the state the configuration names into another
store, whole, in one commit, and reads it back to check that nothing was lost.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.domain.clauses import ClauseSnapshot
from bot.domain.sessions import ReminderState
from bot.domain.treaty import TreatySnapshot
from bot.errors import StoreError
from bot.store.base import ALL_STATES, Changes, Store
from bot.store.urls import is_database_url, masked

DATABASE_URL_ENV = "TREATY_BOT_DATABASE_URL"
#: Where local files go when bot.yaml names a database rather than a file.
DEFAULT_FILES = Path("data")


@dataclass(frozen=True, slots=True)
class StateLocation:
    """A state file's path or a database URL, and the directory for local files."""

    target: str
    files: Path

    @property
    def is_database(self) -> bool:
        return is_database_url(self.target)

    @property
    def shown(self) -> str:
        """The location as logs and messages show it (a database URL's password masked)."""
        return masked(self.target) if self.is_database else self.target

    @property
    def console_journal(self) -> str:
        """The console's journal of printed rows, beside the state file."""
        if self.is_database:
            return str(self.files / "treaty-bot.console")
        return self.target + ".console"

    def __str__(self) -> str:
        return self.shown

    def __repr__(self) -> str:
        return f"StateLocation({self.shown!r}, files={str(self.files)!r})"


def state_location(storage: str, environ: Mapping[str, str]) -> StateLocation:
    """Where the state lives: ``TREATY_BOT_DATABASE_URL`` if set, else bot.yaml's
    ``storage``."""
    files = DEFAULT_FILES if is_database_url(storage) else Path(storage).parent
    url = environ.get(DATABASE_URL_ENV, "").strip()
    if not url:
        return StateLocation(storage, files)
    if not is_database_url(url):  # its value is not shown: it may be a password
        raise StoreError(
            "not a PostgreSQL URL; write postgresql://user:password@host/database",
            resource=DATABASE_URL_ENV,
        )
    return StateLocation(url, files)


def target_location(target: str) -> StateLocation:
    """A location given on the command line (``migrate --to``)."""
    files = DEFAULT_FILES if is_database_url(target) else Path(target).parent
    return StateLocation(target, files)


def open_store(
    location: StateLocation,
    *,
    read_only: bool = False,
    sole_writer: bool = False,
    replica: bool = False,
) -> Store:
    """The store at ``location`` (blocking: the app calls it in a thread). On a database,
    ``sole_writer``: refuse to open it while any other bot writes to it; ``replica``: share it
    with other replicas, but not with a sole writer (a state file is always exclusive)."""
    if location.is_database:
        from bot.store.postgres_store import PostgresStore  # psycopg loads only when used

        return PostgresStore(
            location.target, read_only=read_only, sole_writer=sole_writer, replica=replica
        )
    from bot.store.tinydb_store import TinyDBStore

    return TinyDBStore(location.target, read_only=read_only)


# -- treaty-bot migrate ---------------------------------------------------------------------


def read_all(store: Store) -> Changes:
    """Everything ``store`` holds, as one commit that writes it into an empty store."""
    return Changes(
        sources=sorted(store.sources().values(), key=lambda r: r.id),
        enqueue=store.deliveries(ALL_STATES),
        # oldest first, so that news seen at the same time keep their order
        news=sorted(store.recent_news(2**31 - 1), key=lambda n: n.seen_at),
        snapshots=store.snapshots(),
        reminders=store.reminders(),
        clauses=store.clause_snapshot(),
        treaty=store.treaty_snapshot(),
        follows=store.follows(),
    )


def is_empty(state: Changes) -> bool:
    return not (
        state.sources
        or state.enqueue
        or state.news
        or state.snapshots
        or state.follows
        or state.reminders not in (None, ReminderState())
        or state.clauses not in (None, ClauseSnapshot())
        or state.treaty not in (None, TreatySnapshot())
    )


@dataclass(frozen=True, slots=True)
class Copied:
    """What ``migrate`` copied, and from where to where (as shown)."""

    source: str
    target: str
    sources: int
    deliveries: int
    news: int
    snapshots: int
    follows: int

    def __str__(self) -> str:
        return (
            f"copied {self.sources} sources, {self.deliveries} outbox rows, {self.news} news, "
            f"{self.snapshots} event listings and {self.follows} people's follows "
            f"from {self.source} to {self.target}"
        )


def _same_place(a: StateLocation, b: StateLocation) -> bool:
    if a.is_database or b.is_database:
        return a.target == b.target
    return Path(a.target).resolve() == Path(b.target).resolve()


def migrate(source_at: StateLocation, target_at: StateLocation, *, force: bool) -> Copied:
    """Copy the state at ``source_at`` into ``target_at``, which must be empty unless
    ``force`` (then what it holds is replaced). Raises ``StoreError`` on any problem, with the
    target as it was (a file target replaced with ``force`` is removed first)."""
    if _same_place(source_at, target_at):
        raise StoreError("the state is already there", resource=target_at.shown)
    # a state file is opened for writing, which takes its lock: no bot may be running on it
    source = open_store(source_at, read_only=source_at.is_database)
    try:
        state = read_all(source)
        if is_empty(state):
            raise StoreError("nothing to copy: the state is empty", resource=source_at.shown)
        target = _open_target(target_at, force=force)
        try:
            replace_all = getattr(target, "replace_all", None)
            if force and replace_all is not None:
                replace_all(state)  # one transaction: what was there is removed with it
            else:
                target.commit(state)
            if read_all(target) != state:
                raise StoreError(
                    "the copy read back differs from the state copied", resource=target_at.shown
                )
        finally:
            target.close()
    finally:
        source.close()
    return Copied(
        source_at.shown,
        target_at.shown,
        len(state.sources),
        len(state.enqueue),
        len(state.news),
        len(state.snapshots),
        len(state.follows),
    )


def _open_target(location: StateLocation, *, force: bool) -> Store:
    target = open_store(location)
    try:
        empty = is_empty(read_all(target))
    except BaseException:
        target.close()
        raise
    if empty:
        return target
    if not force:
        target.close()
        raise StoreError(
            "it already holds a state; give --force to replace it", resource=location.shown
        )
    if location.is_database:
        return target  # replaced in the copy's own transaction
    target.close()
    path = Path(location.target)
    for companion in (path, path.with_name(path.name + ".bak")):
        companion.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".seen"), ignore_errors=True)
    return open_store(location)
