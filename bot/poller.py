"""The poller: the schedule of the sources this process polls (one queue of due times, a task
only for a poll under way), each poll of a source, and the batched record of what the polls
found.

With replicas on a shared database a process polls only the sources of the shards it holds
(``Context.polled_here``); ``sync`` schedules and forgets sources when the configuration or
the leases change. A poll's outcome is recorded with the others that finish within
``ROUND_BATCH``, in one commit: a thousand feeds polled each minute make one write a second,
not seventeen. A feed's lock is held from its poll to its record, and a WebSub push of that
feed takes it too, so a poll and a push of one feed are planned one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from bot.configuration.models import (
    CalendarConfig,
    DepositaryConfig,
    FeedConfig,
    SourceConfig,
)
from bot.context import Context, file_of
from bot.domain.model import Alert, SourceRecord
from bot.domain.schedule import Schedule, next_poll
from bot.errors import LeaseLost, StoreError
from bot.polling import (
    PollOutcome,
    feed_rule,
    poll_calendar,
    poll_depositary,
    poll_feed,
    push_feed,
)
from bot.scheduler import Supervisor, jittered_early
from bot.store.base import Changes
from bot.websub import WebSubSubscriber

log = logging.getLogger(__name__)

#: Polls finishing within this many seconds are recorded together.
ROUND_BATCH = 1.0
#: When the bot starts, the first polls are spread over this many seconds; after a reload or a
#: take-over of shards, over this many (so thousands of sources do not start at once).
FIRST_SPREAD = 5.0
LATER_SPREAD = 0.5
#: The second poll of a source in this process comes this much earlier at most (a share of its
#: interval): sources first polled together are spread over their interval, so that ten
#: thousand of them are not due again in the same minutes, round after round.
SETTLE_SPREAD = 0.9
#: A poll that could not be recorded is repeated after this long.
RETRY_RECORD = timedelta(minutes=1)
#: A turn that failed unexpectedly is run again after this long.
RETRY_FAILED = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class RoundReport:
    polled: int
    failed: int
    alerts: tuple[Alert, ...]
    outcomes: tuple[PollOutcome, ...]


def schedule_of(source: SourceConfig) -> Schedule:
    """Feeds adapt between every and every_max (and follow the sessions if they say so);
    calendars and the depositary keep their interval."""
    if isinstance(source, FeedConfig):
        return Schedule(source.every, source.ceiling, source.during_sessions)
    return Schedule(source.every, source.every)


class Poller:
    def __init__(
        self,
        ctx: Context,
        supervisor: Supervisor,
        websub: WebSubSubscriber,
        *,
        on_first_round: Callable[[int], object] | None = None,
    ) -> None:
        self.ctx = ctx
        self.supervisor = supervisor
        self.websub = websub
        # at most ``fetch.max_in_flight`` polls fetch, and a few more wait for a parser, at any
        # time: when parsing is slower than fetching, bodies do not pile up in memory
        self._active = asyncio.Semaphore(
            ctx.config.bot.fetch.max_in_flight + 8 * max(1, ctx.parsers.workers)
        )
        self._rules = {f.id: feed_rule(f) for f in ctx.config.feeds}
        #: the sources polled here, when each is due next (a heap, entries made stale by a
        #: later schedule are skipped), and the turns under way
        self._wanted: dict[str, SourceConfig] = {}
        self._queue: list[tuple[float, int, str]] = []
        self._due_at: dict[str, float] = {}
        self._order = itertools.count()
        self._turns: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        self._to_record: list[tuple[PollOutcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None
        #: whether polling has started (``sync`` was called once)
        self.started = False
        #: the sources whose first poll since the start is not recorded yet
        self._first: set[str] = set()
        #: the sources not yet polled since they were scheduled here, and those whose next
        #: poll is spread over their interval (``SETTLE_SPREAD``)
        self._settling: set[str] = set()
        self._spread_next: set[str] = set()
        self._on_first_round = on_first_round

    def configure(self) -> None:
        """The configuration changed (``ctx.config``): new feed rules, and the tasks follow."""
        self._rules = {f.id: feed_rule(f) for f in self.ctx.config.feeds}
        if self.started:
            self.sync()

    @property
    def polled(self) -> tuple[str, ...]:
        """The ids of the sources this process polls now."""
        return tuple(self._wanted)

    def lock(self, source_id: str) -> asyncio.Lock:
        return self._locks.setdefault(source_id, asyncio.Lock())

    # -- the schedule -----------------------------------------------------------------------

    def sync(self, *, first_run: bool = False) -> None:
        """Poll the sources polled here: schedule new ones, forget removed or changed ones
        (and those of shards this process no longer holds; a poll of theirs under way is
        cancelled)."""
        self.started = True
        if self.ctx.stop_event.is_set():
            return
        wanted = {f.id: f for f in self.ctx.sources if self.ctx.polled_here(f.id)}
        for source_id, source in list(self._wanted.items()):
            if wanted.get(source_id) != source:
                del self._wanted[source_id]
                self._settling.discard(source_id)
                self._spread_next.discard(source_id)
                self._due_at.pop(source_id, None)
                turn = self._turns.pop(source_id, None)
                if turn is not None:
                    turn.cancel()
        spread = FIRST_SPREAD if first_run else LATER_SPREAD
        if first_run:
            self._first = set(wanted)
        for source in wanted.values():
            if source.id not in self._wanted:
                self._wanted[source.id] = source
                self._settling.add(source.id)
                self._schedule(
                    source.id, random.uniform(0, min(spread, source.every.total_seconds()))
                )
        if self._ticker is None or self._ticker.done():
            self._ticker = self.supervisor.spawn("poller", self._tick())

    def _schedule(self, source_id: str, delay: float) -> None:
        due = asyncio.get_running_loop().time() + delay
        self._due_at[source_id] = due
        heapq.heappush(self._queue, (due, next(self._order), source_id))
        if self._queue[0][2] == source_id:
            self._wake.set()  # sooner than what the ticker waits for

    async def _tick(self) -> None:
        """Start each source's turn when it is due. Thousands of sources wait as entries of
        one queue rather than as a task each; a turn is a task only while it runs."""
        loop = asyncio.get_running_loop()
        try:
            while not self.ctx.stop_event.is_set():
                now = loop.time()
                while self._queue and self._queue[0][0] <= now:
                    due, _, source_id = heapq.heappop(self._queue)
                    if self._due_at.get(source_id) != due or source_id in self._turns:
                        continue  # rescheduled, or no longer polled here
                    del self._due_at[source_id]
                    source = self._wanted[source_id]
                    self._turns[source_id] = asyncio.create_task(
                        self._turn(source), name=f"poll:{source_id}"
                    )
                self._wake.clear()
                wait = self._queue[0][0] - now if self._queue else None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:  # stopping: the polls under way end with the ticker
            turns = list(self._turns.values())
            for turn in turns:
                turn.cancel()
            await asyncio.gather(*turns, return_exceptions=True)

    async def _turn(self, source: SourceConfig) -> None:
        try:
            delay = await self.job(source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job failed; it runs again later job=poll:%s", source.id)
            delay = RETRY_FAILED
        finally:
            if self._turns.get(source.id) is asyncio.current_task():
                del self._turns[source.id]
        if self._wanted.get(source.id) is source and not self.ctx.stop_event.is_set():
            if source.id in self._spread_next:
                self._spread_next.discard(source.id)
                wait = jittered_early(delay, SETTLE_SPREAD)
            else:
                wait = jittered_early(delay)
            self.ctx.status_of(source.id).next_poll = self.ctx.clock.now() + timedelta(seconds=wait)
            self._schedule(source.id, wait)

    async def job(self, source: SourceConfig) -> timedelta:
        """One turn of a source's task: poll it, wait for the record, and say when to poll
        next."""
        async with self.lock(source.id):  # a push of this feed waits for the record
            outcome = await self.poll(source)
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
        if self._first:
            self._first.discard(source.id)
            if not self._first and self._on_first_round is not None:
                self._on_first_round(len(self._wanted))
        return self.next_delay(source, outcome)

    async def _record_soon(self) -> None:
        """Commit the polls that finished, together, at most every ``ROUND_BATCH`` seconds."""
        while self._to_record:
            await asyncio.sleep(ROUND_BATCH)  # batching window: the polls finishing meanwhile
            batch, self._to_record = self._to_record, []
            try:
                alerts = await self.record([outcome for outcome, _ in batch])
            except Exception as err:
                for _, recorded in batch:
                    if not recorded.done():
                        recorded.set_exception(err)
                continue
            for _, recorded in batch:
                if not recorded.done():
                    recorded.set_result(None)
            if alerts:
                self.ctx.delivery_kick.set()

    async def close(self) -> None:
        """Polls not recorded yet are repeated at the next start."""
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder

    # -- one poll ---------------------------------------------------------------------------

    async def poll(self, source: SourceConfig, *, now: datetime | None = None) -> PollOutcome:
        """Poll one feed, calendar or the depositary; the outcome is a value, recorded by
        ``record``. Never raises: a source that cannot be polled gives a skipped outcome, and
        the other sources keep their round."""
        async with self._active:
            try:
                return await self._poll(source, now=now)
            except StoreError as err:  # this source's part of the state cannot be read
                log.error("source not polled source=%s error=%s", source.id, err)
                reason = str(err)
            except Exception as err:  # a flaw of ours on this source's input
                log.exception("source not polled source=%s", source.id)
                reason = f"internal error: {type(err).__name__}"
        return PollOutcome(source.id, SourceRecord(source.id), (), (), False, "skipped", reason)

    async def _poll(self, source: SourceConfig, *, now: datetime | None) -> PollOutcome:
        ctx = self.ctx
        config, store, fetcher = ctx.config, ctx.store, ctx.fetcher
        now = now or ctx.clock.now()
        record = await store.source(source.id)
        if isinstance(source, DepositaryConfig):
            outcome = await poll_depositary(
                fetcher,
                source,
                record,
                await store.treaty_snapshot(),
                now,
                config.ops_channels,
                rule=config.entry_into_force(),
                source=config.treaty_source(),
                parsers=ctx.parsers,
            )
        elif isinstance(source, CalendarConfig):
            outcome = await poll_calendar(
                fetcher,
                source,
                record,
                await store.snapshot(source.id),
                now,
                config.tz,
                config.ops_channels,
                parsers=ctx.parsers,
            )
        else:
            outcome = await poll_feed(
                fetcher,
                source,
                record,
                now,
                config.tz,
                config.ops_channels,
                rule=self._rules.get(source.id),
                parsers=ctx.parsers,
                discover=self.websub.needs_discovery(source.id),
            )
            if outcome.hub_checked:
                self.websub.discovered(source.id, outcome.hub)
        self._note(source, outcome, now)
        return outcome

    def _note(self, source: SourceConfig, outcome: PollOutcome, now: datetime) -> None:
        """What ``feeds``, ``/metrics`` and the logs show of a poll."""
        status = self.ctx.status_of(source.id)
        status.last_poll = now
        status.last_outcome = outcome.outcome
        moved = self.ctx.fetcher.moved.get(source.url)
        if moved is not None and moved != status.moved_to:
            log.warning(
                "source moved permanently source=%s url=%s to=%s: update its url in %s",
                source.id,
                source.url,
                moved,
                file_of(source),
            )
        status.moved_to = moved
        self.ctx.metrics.record_poll(source.id, outcome.outcome, outcome.items)
        if outcome.outcome == "ok":
            status.items = outcome.items
        if outcome.error is None and outcome.outcome != "skipped":
            status.last_success = now
        if outcome.error:
            log.warning(
                "poll failed source=%s outcome=%s error=%s",
                source.id,
                outcome.outcome,
                outcome.error,
            )
        else:
            log.debug(
                "polled source=%s outcome=%s alerts=%d",
                source.id,
                outcome.outcome,
                len(outcome.alerts),
            )

    def next_delay(self, source: SourceConfig, outcome: PollOutcome) -> timedelta:
        """When to poll ``source`` again after ``outcome`` (its schedule, the server's wishes,
        a failing source's backoff, WebSub); noted in its status for ``feeds``."""
        health = outcome.record.health
        now = self.ctx.clock.now()
        status = self.ctx.status_of(source.id)
        # a feed changes when it lists new items (not when only its build date moved)
        changed = outcome.outcome == "ok" and (
            outcome.new_items > 0 or not isinstance(source, FeedConfig)
        )
        if changed or status.changed_at is None:
            status.changed_at = now
        plan = next_poll(
            schedule_of(source),
            status.interval,
            changed=changed,
            failures=health.failures,
            backoff_cap=self.ctx.config.bot.fetch.backoff_cap,
            server_wait=outcome.wait,
            windows=self.ctx.windows,
            now=now,
            quiet=now - status.changed_at,
        )
        delay = plan.delay
        if health.not_before is not None:
            delay = max(delay, health.not_before - now)
        if isinstance(source, FeedConfig) and self.websub.pushed(source.id):
            delay = max(delay, source.ceiling)  # pushed: polling is only the safety net
        if source.id in self._settling:
            # its first poll here: the next is spread over the interval, unless the source
            # backs off or its server asked for a wait
            self._settling.discard(source.id)
            if plan.mode in ("fixed", "adaptive") and not plan.server and delay == plan.delay:
                self._spread_next.add(source.id)
        status.interval, status.mode, status.next_poll = plan.interval, plan.mode, now + delay
        return delay

    # -- what the polls found ---------------------------------------------------------------

    async def record(self, outcomes: Sequence[PollOutcome]) -> list[Alert]:
        """Commit what polls learnt and queue their alerts, in one atomic write.

        With replicas, the write is made under the leases of the sources' shards: outcomes of
        a shard this replica no longer holds are dropped (its new holder polls again), and if
        the database refuses the write because a lease moved on, the rest is written alone."""
        cluster = self.ctx.cluster
        if cluster is None or self.ctx.dry_run:
            return await self._record(outcomes, {})
        for _ in range(2):
            outcomes = [o for o in outcomes if cluster.owns(o.source)]
            fences = cluster.fences_for(o.source for o in outcomes)
            if not outcomes or fences is None:
                return []
            try:
                return await self._record(outcomes, fences)
            except LeaseLost as err:
                cluster.lost(err.lost)
        return []

    async def _record(self, outcomes: Sequence[PollOutcome], fences: dict[str, int]) -> list[Alert]:
        ctx = self.ctx
        changes = Changes(fences=fences)
        alerts: list[Alert] = []
        for o in outcomes:
            if o.changed:
                changes.sources.append(o.record)
            if o.snapshot is not None:
                changes.snapshots[o.source] = o.snapshot
            if o.treaty is not None:
                changes.treaty = o.treaty
            changes.news.extend(o.news)
            alerts.extend(o.alerts)
        changes.enqueue = ctx.outbox.rows_for(alerts)
        changes.enqueue += ctx.outbox.rows_for_people(alerts, ctx.people.everyone())
        if not ctx.dry_run:
            await ctx.store.commit(changes)
            ctx.count_queued(changes)
        return alerts

    async def round(
        self,
        sources: Sequence[SourceConfig] | None = None,
        *,
        after_batch: Callable[[], Awaitable[object]] | None = None,
    ) -> RoundReport:
        """Poll every source once, concurrently, recording what is done every ``ROUND_BATCH``
        seconds (one commit each, then ``after_batch``): a slow source holds only itself."""
        now = self.ctx.clock.now()
        targets = list(self.ctx.sources if sources is None else sources)
        tasks = [asyncio.ensure_future(self.poll(f, now=now)) for f in targets]
        pending: set[asyncio.Future[PollOutcome]] = set(tasks)
        alerts: list[Alert] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, timeout=ROUND_BATCH)
                batch = [t.result() for t in tasks if t in done]
                alerts.extend(await self.record(batch))
                if after_batch is not None:
                    await after_batch()
        finally:
            for task in pending:
                task.cancel()
        outcomes = [t.result() for t in tasks]
        failed = sum(1 for o in outcomes if o.error)
        return RoundReport(len(targets), failed, tuple(alerts), tuple(outcomes))

    # -- WebSub -----------------------------------------------------------------------------

    async def push(self, feed_id: str, body: bytes, content_type: str | None) -> PollOutcome | None:
        """Plan and record a body a WebSub hub pushed, as a poll of the feed would."""
        ctx = self.ctx
        feed = next((f for f in ctx.config.feeds if f.id == feed_id), None)
        if feed is None:
            return None
        async with self.lock(feed_id), self._active:
            try:
                outcome = await push_feed(
                    feed,
                    await ctx.store.source(feed_id),
                    body,
                    content_type,
                    ctx.clock.now(),
                    ctx.config.tz,
                    ctx.config.ops_channels,
                    rule=self._rules.get(feed_id),
                    parsers=ctx.parsers,
                )
                alerts = await self.record([outcome])
            except Exception:
                log.exception(
                    "pushed content not recorded; the next poll reads it source=%s", feed_id
                )
                return None
        if outcome.outcome == "ok":
            ctx.status_of(feed_id).items = outcome.items
        log.info(
            "pushed content read source=%s outcome=%s alerts=%d",
            feed_id,
            outcome.outcome,
            len(alerts),
        )
        if alerts:
            ctx.delivery_kick.set()
        return outcome
