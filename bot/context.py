"""What the roles of a running bot share: the configuration in force, the store, the HTTP
client, the outbox, the replica's leases and what the process learnt of its sources.

``App`` builds one ``Context`` and hands it to each role (the poller, the planner, the
deliverer, the responder); a reload replaces ``config`` here, once, for all of them. The store,
the fetcher and the outbox exist between ``App.__aenter__`` and ``App.__aexit__``; asked for
outside, they raise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.clock import Clock
from bot.configuration.models import (
    CalendarConfig,
    Config,
    DepositaryConfig,
    SourceConfig,
)
from bot.delivery import Outbox
from bot.domain.model import SourceKind
from bot.domain.schedule import Window
from bot.metrics import Metrics
from bot.people import FollowBook
from bot.sources.http import HttpFetcher
from bot.sources.parsing import Parsers
from bot.store.base import Changes
from bot.store.runner import AsyncStore
from bot.transports.base import Transport

if TYPE_CHECKING:
    from bot.cluster import Cluster


def source_kind(source: SourceConfig) -> SourceKind:
    if isinstance(source, DepositaryConfig):
        return "depositary"
    return "calendar" if isinstance(source, CalendarConfig) else "feed"


def file_of(source: SourceConfig) -> str:
    """The configuration file that names a source."""
    return {"depositary": "treaty.yaml", "calendar": "sessions.yaml"}.get(
        source_kind(source), "feeds.yaml"
    )


@dataclass(slots=True)
class SourceStatus:
    """What the running bot knows of a source beyond the store: its latest poll."""

    last_poll: datetime | None = None
    last_outcome: str | None = None
    last_success: datetime | None = None
    items: int = 0
    moved_to: str | None = None
    #: the adaptive interval reached, how the next poll was planned, and when it is due
    interval: timedelta | None = None
    mode: str | None = None
    next_poll: datetime | None = None
    #: the last poll that found new items (or the first poll of this process)
    changed_at: datetime | None = None


@dataclass(eq=False)
class Context:
    config: Config
    clock: Clock
    metrics: Metrics
    #: previews (``once --dry-run``) read and never write
    dry_run: bool = False
    environ: Mapping[str, str] = field(default_factory=dict)
    started_at: datetime = field(init=False)
    parsers: Parsers = field(default_factory=Parsers)
    people: FollowBook = field(default_factory=FollowBook)
    transports: dict[str, Transport] = field(default_factory=dict)
    #: with replicas on a database: this replica's heartbeat and leases
    cluster: Cluster | None = None
    #: each source's latest poll, by source id
    status: dict[str, SourceStatus] = field(default_factory=dict)
    #: the session weeks of the timeline (the day before each session to its end)
    windows: list[Window] = field(default_factory=list)
    #: set to deliver now rather than at the delivery loop's next turn
    delivery_kick: asyncio.Event = field(default_factory=asyncio.Event)
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _store: AsyncStore | None = None
    _fetcher: HttpFetcher | None = None
    _outbox: Outbox | None = None

    def __post_init__(self) -> None:
        self.started_at = self.clock.now()

    def attach(
        self, store: AsyncStore | None, fetcher: HttpFetcher | None, outbox: Outbox | None
    ) -> None:
        self._store, self._fetcher, self._outbox = store, fetcher, outbox

    def detach(self) -> None:
        self._store = self._fetcher = self._outbox = None

    @property
    def store(self) -> AsyncStore:
        if self._store is None:
            raise RuntimeError("App used outside 'async with'")
        return self._store

    @property
    def fetcher(self) -> HttpFetcher:
        if self._fetcher is None:
            raise RuntimeError("App used outside 'async with'")
        return self._fetcher

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise RuntimeError("App used outside 'async with'")
        return self._outbox

    @property
    def sources(self) -> tuple[SourceConfig, ...]:
        """Every source of the configuration in force: feeds, calendars, the depositary."""
        config = self.config
        depositary = (config.depositary,) if config.depositary is not None else ()
        return (*config.feeds, *config.calendars, *depositary)

    def polled_here(self, source_id: str) -> bool:
        """Whether this process polls the source (with replicas: holds its shard)."""
        return self.cluster is None or self.cluster.owns(source_id)

    def status_of(self, source_id: str) -> SourceStatus:
        return self.status.setdefault(source_id, SourceStatus())

    def count_queued(self, changes: Changes) -> None:
        for row in changes.enqueue:
            self.metrics.alerts_queued.labels(transport=row.transport).inc()
