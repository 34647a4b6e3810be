"""Runs a blocking ``Store`` on one worker thread, so the event loop never waits on the disk.

One thread means one writer: calls run one after another, in the order they were made.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from bot.domain.clauses import ClauseSnapshot
from bot.domain.follows import Follow, Person
from bot.domain.model import Delivery, NewsRecord, SourceHealth, SourceRecord
from bot.domain.sessions import ReminderState, Snapshot
from bot.domain.treaty import TreatySnapshot
from bot.store.base import Changes, Store

T = TypeVar("T")


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Any blocking call of the store's (replicas' leases), on the store's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

    @property
    def location(self) -> str:
        return self.store.location

    async def source(self, source_id: str) -> SourceRecord:
        return await self._call(self.store.source, source_id)

    async def sources(self) -> dict[str, SourceRecord]:
        return await self._call(self.store.sources)

    async def commit(self, changes: Changes) -> None:
        if changes:
            await self._call(self.store.commit, changes)

    async def deliveries(self, states: Sequence[str] = ("pending", "sending")) -> list[Delivery]:
        return await self._call(self.store.deliveries, states)

    async def recent_news(self, limit: int) -> list[NewsRecord]:
        return await self._call(self.store.recent_news, limit)

    async def healths(self) -> dict[str, SourceHealth]:
        return await self._call(self.store.healths)

    async def snapshot(self, source: str) -> Snapshot:
        return await self._call(self.store.snapshot, source)

    async def snapshots(self) -> dict[str, Snapshot]:
        return await self._call(self.store.snapshots)

    async def reminders(self) -> ReminderState:
        return await self._call(self.store.reminders)

    async def clause_snapshot(self) -> ClauseSnapshot:
        return await self._call(self.store.clause_snapshot)

    async def treaty_snapshot(self) -> TreatySnapshot:
        return await self._call(self.store.treaty_snapshot)

    def next_seq(self) -> int:
        return self.store.next_seq()

    def has_delivery(self, key: str) -> bool:
        return self.store.has_delivery(key)

    async def follows(self) -> dict[Person, tuple[Follow, ...]]:
        return await self._call(self.store.follows)

    async def close(self) -> None:
        await self._call(self.store.close)
        self._executor.shutdown(wait=True)
