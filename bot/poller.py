"""The poller: one polling task per source this process polls, and the batched record of what
the polls found.

With replicas on a shared database a process polls only the sources of the shards it holds
(``held_here``); ``sync`` starts and stops the tasks when the configuration or the leases
change. A poll's outcome is recorded with the others that finish within ``ROUND_BATCH``, in
one commit: a thousand feeds polled each minute make one write a second, not seventeen. A
feed's lock is held from its poll to its record, and a WebSub push of that feed takes it too,
so a poll and a push of one feed are planned one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from bot.configuration.models import SourceConfig
from bot.domain.model import Alert
from bot.polling import PollOutcome
from bot.scheduler import Supervisor, periodic

log = logging.getLogger(__name__)

#: Polls finishing within this many seconds are recorded together.
ROUND_BATCH = 1.0
#: When the bot starts, the first polls are spread over this many seconds; after a reload or a
#: take-over of shards, over this many (so thousands of sources do not start at once).
FIRST_SPREAD = 5.0
LATER_SPREAD = 0.5
#: A poll that could not be recorded is repeated after this long.
RETRY_RECORD = timedelta(minutes=1)


class Poller:
    def __init__(
        self,
        supervisor: Supervisor,
        stop: asyncio.Event,
        *,
        sources: Callable[[], Sequence[SourceConfig]],
        held_here: Callable[[str], bool],
        poll: Callable[[SourceConfig], Awaitable[PollOutcome]],
        record: Callable[[Sequence[PollOutcome]], Awaitable[list[Alert]]],
        next_delay: Callable[[SourceConfig, PollOutcome], timedelta],
        on_alerts: Callable[[], object],
    ) -> None:
        self.supervisor = supervisor
        self.stop = stop
        self._sources = sources
        self._held_here = held_here
        self._poll = poll
        self._record = record
        self._next_delay = next_delay
        self._on_alerts = on_alerts
        self._tasks: dict[str, tuple[SourceConfig, asyncio.Task[None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._to_record: list[tuple[PollOutcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        #: whether polling has started (``sync`` was called once)
        self.started = False

    @property
    def polled(self) -> tuple[str, ...]:
        """The ids of the sources this process polls now."""
        return tuple(self._tasks)

    def lock(self, source_id: str) -> asyncio.Lock:
        return self._locks.setdefault(source_id, asyncio.Lock())

    def sync(self, *, first_run: bool = False) -> None:
        """One polling task per source polled here: start new ones, stop removed or changed
        ones (and those of shards this process no longer holds)."""
        self.started = True
        if self.stop.is_set():
            return
        wanted = {f.id: f for f in self._sources() if self._held_here(f.id)}
        for source_id, (source, task) in list(self._tasks.items()):
            if wanted.get(source_id) != source:
                task.cancel()
                del self._tasks[source_id]
        spread = FIRST_SPREAD if first_run else LATER_SPREAD
        for source in wanted.values():
            if source.id in self._tasks:
                continue
            first = random.uniform(0, min(spread, source.every.total_seconds()))
            task = self.supervisor.spawn(
                f"poll:{source.id}",
                periodic(
                    f"poll:{source.id}",
                    self.stop,
                    functools.partial(self.job, source),
                    first_delay=first,
                ),
            )
            self._tasks[source.id] = (source, task)

    async def job(self, source: SourceConfig) -> timedelta:
        """One turn of a source's task: poll it, wait for the record, and say when to poll
        next."""
        async with self.lock(source.id):  # a push of this feed waits for the record
            outcome = await self._poll(source)
            recorded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._to_record.append((outcome, recorded))
            if self._recorder is None or self._recorder.done():
                self._recorder = asyncio.create_task(self._record_soon(), name="recorder")
            try:
                await recorded
            except Exception:
                log.exception(
                    "could not record a poll; it is repeated next time source=%s", source.id
                )
                return RETRY_RECORD
        return self._next_delay(source, outcome)

    async def _record_soon(self) -> None:
        """Commit the polls that finished, together, at most every ``ROUND_BATCH`` seconds."""
        while self._to_record:
            await asyncio.sleep(ROUND_BATCH)  # batching window: the polls finishing meanwhile
            batch, self._to_record = self._to_record, []
            try:
                alerts = await self._record([outcome for outcome, _ in batch])
            except Exception as err:
                for _, recorded in batch:
                    if not recorded.done():
                        recorded.set_exception(err)
                continue
            for _, recorded in batch:
                if not recorded.done():
                    recorded.set_result(None)
            if alerts:
                self._on_alerts()

    async def close(self) -> None:
        """Polls not recorded yet are repeated at the next start."""
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
