"""The composition root: the one module that wires configuration, store, sources, transports,
delivery and scheduling together, and owns their life cycle.

    async with App(config) as app:
        await app.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from bot import __version__, timeline
from bot.clock import Clock, SystemClock
from bot.configuration import load_config
from bot.configuration.loader import FILES
from bot.configuration.models import (
    SESSIONS_SOURCE,
    CalendarConfig,
    Config,
    DepositaryConfig,
    FeedConfig,
    HttpSettings,
    SourceConfig,
)
from bot.delivery import Outbox
from bot.domain import messages
from bot.domain.clauses import plan_clauses
from bot.domain.commands import (
    CommandView,
    ReplicaInfo,
    Reply,
    StatusInfo,
    TreatyView,
    handle,
    reload_result,
)
from bot.domain.follows import Follow, Person
from bot.domain.home import HomeView, home_view
from bot.domain.model import (
    Alert,
    AlertId,
    ChannelName,
    Delivery,
    SessionEvent,
    SourceHealth,
    SourceKind,
    SourceRecord,
    SourceView,
)
from bot.domain.planner import digest
from bot.domain.schedule import Schedule, Window, next_poll, session_windows
from bot.domain.sessions import plan_changes, plan_reminders
from bot.domain.text import render_plain
from bot.errors import (
    ConfigError,
    DeliveryError,
    LeaseLost,
    Problem,
    StoreError,
    TreatyBotError,
)
from bot.metrics import Metrics
from bot.people import FollowBook, person_of
from bot.platforms import build_transports
from bot.poller import ROUND_BATCH, Poller
from bot.polling import (
    PollOutcome,
    feed_rule,
    poll_calendar,
    poll_depositary,
    poll_feed,
    push_feed,
)
from bot.scheduler import Supervisor, periodic
from bot.sources.http import HttpFetcher
from bot.sources.parsing import Parsers
from bot.sources.websub import HubAnswer, request_hub
from bot.storage import open_store, state_location
from bot.store.base import Changes
from bot.store.runner import AsyncStore
from bot.timeline import CALENDAR_PATH
from bot.transports.base import Answer, Inbound, Transport
from bot.transports.console import ConsoleTransport, Format
from bot.websub import CALLBACK_PATH, WebSubSubscriber

if TYPE_CHECKING:
    from bot.cluster import Cluster
    from bot.web import WebServer

log = logging.getLogger(__name__)

#: /healthz turns 503 when no source succeeded within this many of its intervals.
HEALTH_INTERVALS = 3
#: How often the event loop's lag is measured (seconds).
LAG_PROBE = 0.5


#: How often the configuration files are checked for changes (seconds).
CONFIG_POLL = 2.0

#: How often the transports are asked whether something is wrong (a lost crypto store…).
TRANSPORTS_EVERY = timedelta(seconds=30)

#: A round's finished polls are recorded (and, in ``once``, delivered) this often (seconds).

#: Parser worker processes left idle this long are stopped (started again when needed).
PARSERS_IDLE = timedelta(minutes=10)

#: How long a stop may spend delivering what is due (seconds).
SHUTDOWN_BUDGET = 10.0

#: How often reminders and YAML edits are looked at while running.
SESSIONS_EVERY = timedelta(seconds=30)


def listen_address(http: HttpSettings, environ: Mapping[str, str]) -> tuple[str, int]:
    """Where the HTTP server listens: ``http.host``/``http.port`` of bot.yaml; on a platform
    that gives the port in ``PORT`` (Procfile platforms), 0.0.0.0:$PORT, unless bot.yaml sets
    the port (or the host) itself."""
    given = http.model_fields_set
    value = environ.get("PORT", "").strip()
    if not value or "port" in given:
        return http.host, http.port
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise TreatyBotError(
            f"PORT={value[:20]!r} in the environment is not a port number (1-65535)",
            resource="http server",
        )
    return (http.host if "host" in given else "0.0.0.0"), int(value)


def _public_url(config: Config, environ: Mapping[str, str]) -> str | None:
    """Where hubs reach the bot's WebSub callbacks: none when the HTTP server is off."""
    url = config.bot.http.public_url
    if not url:
        return None
    try:
        _, port = listen_address(config.bot.http, environ)
    except TreatyBotError:
        return None
    return str(url) if port else None


def _schedule(source: SourceConfig) -> Schedule:
    """Feeds adapt between every and every_max (and follow the sessions if they say so);
    calendars and the depositary keep their interval."""
    if isinstance(source, FeedConfig):
        return Schedule(source.every, source.ceiling, source.during_sessions)
    return Schedule(source.every, source.every)


def _kind(source: SourceConfig) -> SourceKind:
    if isinstance(source, DepositaryConfig):
        return "depositary"
    return "calendar" if isinstance(source, CalendarConfig) else "feed"


def _file_of(source: SourceConfig) -> str:
    """The configuration file that names a source."""
    return {"depositary": "treaty.yaml", "calendar": "sessions.yaml"}.get(
        _kind(source), "feeds.yaml"
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


@dataclass(frozen=True, slots=True)
class RoundReport:
    polled: int
    failed: int
    alerts: tuple[Alert, ...]
    outcomes: tuple[PollOutcome, ...]


class App:
    def __init__(
        self,
        config: Config,
        *,
        clock: Clock | None = None,
        fmt: Format = "text",
        dry_run: bool = False,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        transports: Mapping[str, Transport] | None = None,
        replica: bool = False,
    ) -> None:
        self.config = config
        #: ``treaty-bot run``: on a database, one of the replicas that share it
        self.replica = replica and not dry_run
        self.cluster: Cluster | None = None
        self.clock: Clock = clock or SystemClock()
        self.fmt = fmt
        self.dry_run = dry_run
        self.environ = dict(os.environ if environ is None else environ)
        #: the state file or database (TREATY_BOT_DATABASE_URL wins over bot.yaml's storage)
        self.state = state_location(config.bot.storage, self.environ)
        self.console = ConsoleTransport(fmt=fmt, tz=config.tz, stream=stream)
        self.transports: dict[str, Transport] = {}
        self._given_transports = transports
        self.store: AsyncStore | None = None
        self.fetcher: HttpFetcher | None = None
        self.parsers = Parsers()
        self._active = asyncio.Semaphore(
            config.bot.fetch.max_in_flight + 8 * max(1, self.parsers.workers)
        )
        self.outbox: Outbox | None = None
        self.people = FollowBook()
        self.supervisor = Supervisor()
        self.stop_event = asyncio.Event()
        self.delivery_kick = asyncio.Event()
        self.status: dict[str, SourceStatus] = {}
        self.metrics = Metrics()
        self.metrics.up_since.set(time.time())
        self.web: WebServer | None = None
        self._started: list[Transport] = []
        self._reported_problems: dict[str, str | None] = {}
        self.started_at = self.clock.now()
        self._rules = {f.id: feed_rule(f) for f in config.feeds}
        self.reload_requested = asyncio.Event()
        self._config_seen = self._config_signature()
        #: the session weeks of the timeline (the day before each session to its end)
        self._windows: list[Window] = []
        #: WebSub: the hubs' pushes and the polls of one feed are planned one at a time
        self.websub = WebSubSubscriber(
            self.clock,
            self.metrics,
            self._hub_request,
            self.push,
            _public_url(config, self.environ),
        )
        #: one polling task per source polled here, and the batched record of their polls
        self.poller = Poller(
            self.supervisor,
            self.stop_event,
            sources=lambda: self.sources,
            held_here=self._polled_here,
            poll=self.poll,
            record=self.record,
            next_delay=self._next_poll,
            on_alerts=self.delivery_kick.set,
        )

    # -- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        try:
            raw = await asyncio.to_thread(
                open_store,
                self.state,
                read_only=self.dry_run,
                sole_writer=not self.dry_run and not self.replica,
                replica=self.replica,
            )
            self.store = AsyncStore(raw)
            if self.replica and self.state.is_database:
                from bot.cluster import Cluster
                from bot.store.postgres_store import PostgresStore

                assert isinstance(raw, PostgresStore)
                settings = self.config.bot.replicas
                self.cluster = Cluster(
                    self.store,
                    raw,
                    shards=settings.shards,
                    lease=settings.lease.total_seconds(),
                    on_change=self._leases_changed,
                )
            fetch = self.config.bot.fetch
            self.fetcher = HttpFetcher(
                timeout=fetch.timeout,
                max_bytes=fetch.max_bytes,
                per_host=fetch.per_host,
                max_in_flight=fetch.max_in_flight,
                now=self.clock.now,
            )
            await self.fetcher.__aenter__()
            self.transports = (
                dict(self._given_transports)
                if self._given_transports is not None
                else build_transports(
                    self.config,
                    self.environ,
                    self.console,
                    self.clock,
                    state_dir=self.state.files,
                    dry_run=self.dry_run,
                )
            )
            self.metrics.start(self.transports, self.transports)
            if "console" in self.transports and not self.dry_run:
                self.console.open_journal(self.state.console_journal)
            self.outbox = Outbox(
                self.store,
                self.transports,
                self.clock,
                self.metrics,
                on_permanent=self._delivery_failed,
                rules=lambda: self.config.channel_rules(),
                tz=lambda: self.config.tz,
                claims=self.cluster,
            )
            await self.people.load(self.store)
        except BaseException:
            await self._close()
            raise
        # what exists now (configuration, modules, the state's index) lives as long as the
        # process: keep it out of the collector's scans, which would otherwise pause answers
        gc.freeze()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        await self.supervisor.stop()
        await self.poller.close()
        await self._stop_transports()
        self.console.close()
        if self.fetcher is not None:
            await self.fetcher.__aexit__(None, None, None)
            self.fetcher = None
        self.parsers.close()
        if self.store is not None:
            await self.store.close()
            self.store = None

    # -- commands ---------------------------------------------------------------------------

    def is_admin(self, inbound: Inbound) -> bool:
        """Admins are listed per platform in bot.yaml; whoever types on the console is one."""
        admins = self.config.bot.admins
        if inbound.platform == "console":
            return True
        if inbound.platform == "slack":
            return inbound.user in admins.slack
        if inbound.platform == "matrix":
            return inbound.user in admins.matrix
        return False

    async def treaty_view(self) -> TreatyView | None:
        """The depositary's record as the treaty commands show it (none without the source)."""
        depositary = self.config.depositary
        if depositary is None:
            return None
        store, _, _ = self._require()
        snapshot = await store.treaty_snapshot()
        health = (await store.healths()).get(depositary.id, SourceHealth())
        status = self.status.get(depositary.id)
        as_of = health.last_success
        if status is not None and status.last_success is not None:
            as_of = max(as_of or status.last_success, status.last_success)
        return TreatyView(
            snapshot.status if snapshot.initialized else None,
            self.config.entry_into_force(),
            self.config.treaty_source(),
            as_of,
            health.last_error if health.failures else None,
        )

    async def command_view(self, inbound: Inbound) -> CommandView:
        """What commands answer from: sessions, clauses, recent news, sources and their health."""
        store, _, outbox = self._require()
        events = await self.timeline()
        healths = await store.healths()
        # a thousand sources take a while to describe: off the loop
        views = await asyncio.to_thread(self._source_views, healths, dict(self.status))
        return CommandView(
            sessions=tuple(events),
            clauses=self.config.clauses(),
            news=tuple(await store.recent_news(50)),
            sources=tuple(views),
            tz=self.config.tz,
            is_admin=self.is_admin(inbound),
            status=StatusInfo(
                version=__version__,
                started_at=self.started_at,
                queued_alerts=outbox.depth,
                transports=tuple(self.transports),
                replicas=await self._replicas(inbound),
                shards=self.cluster.shards if self.cluster is not None else 0,
            ),
            source_names={s.id: s.name for s in self.sources},
            treaty=await self.treaty_view(),
            calendar_url=self.calendar_url,
            follows=self.people.of(person_of(inbound)),
        )

    # -- the timeline -----------------------------------------------------------------------

    async def _replicas(self, inbound: Inbound) -> tuple[ReplicaInfo, ...]:
        """The replicas sharing the database, for an admin's ``status``."""
        if self.cluster is None or not self.is_admin(inbound):
            return ()
        from bot.cluster import describe

        try:
            rows = await self.cluster.replicas()
        except StoreError as err:
            log.warning("cannot list the replicas: %s", err)
            return ()
        return tuple(ReplicaInfo(**d) for d in describe(rows, self.cluster.id, self.cluster.lease))

    async def timeline(self) -> list[SessionEvent]:
        """Every session, meeting and deadline the bot knows (``bot.timeline``)."""
        return await timeline.timeline(self.config, self._require()[0])

    async def calendar_ics(self) -> bytes:
        """The timeline as an iCalendar feed: the same bytes while nothing changes."""
        return await timeline.calendar_ics(self.config, self._require()[0])

    @property
    def calendar_url(self) -> str | None:
        """Where members subscribe to the timeline (``http.public_url`` set), else ``None``."""
        return timeline.calendar_url(self.config)

    def _source_views(
        self, healths: Mapping[str, SourceHealth], statuses: Mapping[str, SourceStatus]
    ) -> list[SourceView]:
        views = []
        for source in self.sources:
            status = statuses.get(source.id, SourceStatus())
            health = healths.get(source.id, SourceHealth())
            if status.last_success and (
                health.last_success is None or status.last_success > health.last_success
            ):
                health = replace(health, last_success=status.last_success)
            views.append(
                SourceView(
                    id=source.id,
                    name=source.name,
                    kind=_kind(source),
                    url=source.url,
                    every=source.every,
                    health=health,
                    last_poll=status.last_poll,
                    last_outcome=status.last_outcome,
                    moved_to=status.moved_to,
                    next_poll=status.next_poll,
                    schedule=status.mode,
                    interval=status.interval,
                    pushed=self.websub.pushed(source.id),
                )
            )
        return views

    async def answer(self, inbound: Inbound) -> Answer:
        """Answer one command from any transport; never raises."""
        started = time.monotonic()
        if (
            self.cluster is not None
            and inbound.event_id is not None
            and not await self.cluster.claim(f"{inbound.platform}:{inbound.event_id}")
        ):
            log.info("command answered by another replica platform=%s", inbound.platform)
            return Answer("", (), elsewhere=True)
        try:
            view = await self.command_view(inbound)
            reply = await asyncio.to_thread(handle, inbound.text, view, self.clock.now())
            if reply.action == "reload":
                log.info("reload requested platform=%s user=%s", inbound.platform, inbound.user)
                problems = await self.reload()
                reply = reload_result([str(p) for p in problems], share=reply.share)
            if reply.action == "follows":
                reply = await self._settle_follows(inbound, view, reply)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command failed reference=%s text=%r", reference, inbound.text[:100])
            reply_title, body = messages.apology(reference)
            return Answer(reply_title, body, share=False)
        finally:
            self.metrics.command_latency.labels(platform=inbound.platform).observe(
                time.monotonic() - started
            )
        return Answer(reply.title, reply.body, share=reply.share, direct=reply.direct)

    async def _settle_follows(self, inbound: Inbound, view: CommandView, reply: Reply) -> Reply:
        """Store the asker's new follows (answering again if they changed meanwhile)."""
        person = person_of(inbound)
        now = self.clock.now()

        def again(current: tuple[Follow, ...]) -> Reply:
            return handle(inbound.text, replace(view, follows=current), now)

        return await self.people.settle(person, view.follows, reply, again, save=not self.dry_run)

    async def home(self, platform: str, user: str) -> HomeView:
        """A person's home page (Slack's App Home): the next dates and what they follow."""
        follows = self.people.of(Person(platform, user))
        events = await self.timeline()
        return home_view(events, follows, self.config.clauses(), self.config.tz, self.clock.now())

    # -- polling ----------------------------------------------------------------------------

    def _require(self) -> tuple[AsyncStore, HttpFetcher, Outbox]:
        if self.store is None or self.fetcher is None or self.outbox is None:
            raise RuntimeError("App used outside 'async with'")
        return self.store, self.fetcher, self.outbox

    async def poll(self, feed: SourceConfig, *, now: datetime | None = None) -> PollOutcome:
        """Poll one feed or calendar; the outcome is a value, recorded by ``record``.

        At most ``fetch.max_in_flight`` polls fetch, and a few more wait for a parser, at any
        time: when parsing is slower than fetching, bodies do not pile up in memory.
        """
        async with self._active:
            return await self._poll(feed, now=now)

    async def _poll(self, feed: SourceConfig, *, now: datetime | None) -> PollOutcome:
        try:
            return await self._poll_source(feed, now=now)
        except StoreError as err:  # this source's part of the state cannot be read
            log.error("source not polled source=%s error=%s", feed.id, err)
            reason = str(err)
        except Exception as err:  # a flaw of ours on this source's input
            log.exception("source not polled source=%s", feed.id)
            reason = f"internal error: {type(err).__name__}"
        # either way the other sources keep their round
        return PollOutcome(feed.id, SourceRecord(feed.id), (), (), False, "skipped", reason)

    async def _poll_source(self, feed: SourceConfig, *, now: datetime | None) -> PollOutcome:
        store, fetcher, _ = self._require()
        record = await store.source(feed.id)
        if isinstance(feed, DepositaryConfig):
            outcome = await poll_depositary(
                fetcher,
                feed,
                record,
                await store.treaty_snapshot(),
                now or self.clock.now(),
                self.config.ops_channels,
                rule=self.config.entry_into_force(),
                source=self.config.treaty_source(),
                parsers=self.parsers,
            )
        elif isinstance(feed, CalendarConfig):
            outcome = await poll_calendar(
                fetcher,
                feed,
                record,
                await store.snapshot(feed.id),
                now or self.clock.now(),
                self.config.tz,
                self.config.ops_channels,
                parsers=self.parsers,
            )
        else:
            outcome = await poll_feed(
                fetcher,
                feed,
                record,
                now or self.clock.now(),
                self.config.tz,
                self.config.ops_channels,
                rule=self._rules.get(feed.id),
                parsers=self.parsers,
                discover=self.websub.needs_discovery(feed.id),
            )
            if outcome.hub_checked:
                self.websub.discovered(feed.id, outcome.hub)
        status = self.status.setdefault(feed.id, SourceStatus())
        status.last_poll = now or self.clock.now()
        status.last_outcome = outcome.outcome
        moved = fetcher.moved.get(feed.url)
        if moved is not None and moved != status.moved_to:
            log.warning(
                "source moved permanently source=%s url=%s to=%s: update its url in %s",
                feed.id,
                feed.url,
                moved,
                _file_of(feed),
            )
        status.moved_to = moved
        self.metrics.record_poll(feed.id, outcome.outcome, outcome.items)
        if outcome.outcome == "ok":
            status.items = outcome.items
        if outcome.error is None and outcome.outcome != "skipped":
            status.last_success = status.last_poll
        if outcome.error:
            log.warning(
                "poll failed source=%s outcome=%s error=%s", feed.id, outcome.outcome, outcome.error
            )
        else:
            log.debug(
                "polled source=%s outcome=%s alerts=%d",
                feed.id,
                outcome.outcome,
                len(outcome.alerts),
            )
        return outcome

    async def record(self, outcomes: Sequence[PollOutcome]) -> list[Alert]:
        """Commit what a round learnt and queue its alerts, in one atomic write.

        With replicas, the write is made under the leases of the sources' shards: outcomes of
        a shard this replica no longer holds are dropped (its new holder polls again), and if
        the database refuses the write because a lease moved on, the rest is written alone."""
        if self.cluster is None or self.dry_run:
            return await self._record(outcomes, {})
        for _ in range(2):
            outcomes = [o for o in outcomes if self.cluster.owns(o.source)]
            fences = self.cluster.fences_for(o.source for o in outcomes)
            if not outcomes or fences is None:
                return []
            try:
                return await self._record(outcomes, fences)
            except LeaseLost as err:
                self.cluster.lost(err.lost)
        return []

    async def _record(self, outcomes: Sequence[PollOutcome], fences: dict[str, int]) -> list[Alert]:
        store, _, outbox = self._require()
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
        changes.enqueue = outbox.rows_for(alerts)
        changes.enqueue += outbox.rows_for_people(alerts, self.people.everyone())
        if not self.dry_run:
            await store.commit(changes)
            self._count_queued(changes)
        return alerts

    def _count_queued(self, changes: Changes) -> None:
        for row in changes.enqueue:
            self.metrics.alerts_queued.labels(transport=row.transport).inc()

    async def evaluate(self, *, now: datetime | None = None) -> list[Alert]:
        """Sessions and clauses: diff the YAML against the last snapshot, plan due reminders,
        and record it all in one commit."""
        store, _, outbox = self._require()
        fences: dict[str, int] = {}
        if self.cluster is not None:
            planner = self.cluster.planner_fences()
            if planner is None:
                return []  # another replica plans
            fences = planner
        now = now or self.clock.now()
        tz = self.config.tz
        changes = Changes(fences=fences)
        alerts: list[Alert] = []

        previous = await store.snapshot(SESSIONS_SOURCE)
        yaml_plan = plan_changes(
            SESSIONS_SOURCE,
            previous,
            self.config.sessions(),
            now,
            tz,
            complete=True,
            channels=self.config.reminder_channels,
        )
        alerts.extend(yaml_plan.alerts)
        if yaml_plan.changed:
            changes.snapshots[SESSIONS_SOURCE] = yaml_plan.snapshot

        clause_plan = plan_clauses(
            await store.clause_snapshot(),
            self.config.clauses(),
            now,
            tuple(ChannelName(c) for c in self.config.clauses_file.channels),
        )
        alerts.extend(clause_plan.alerts)
        if clause_plan.changed:
            changes.clauses = clause_plan.snapshot

        computed = await timeline.plan_computed_dates(self.config, store, now)
        if computed is not None:
            alerts.extend(computed.alerts)
            changes.snapshots[self.config.treaty_source().id] = computed.snapshot
        snapshots = await timeline.timeline_snapshots(self.config, store, yaml_plan.snapshot)
        if computed is not None:
            snapshots[self.config.treaty_source().id] = computed.snapshot
        events = [e for snap in snapshots.values() for e in snap.events.values()]
        self._windows = session_windows(events)
        first_seen = {k: t for snap in snapshots.values() for k, t in snap.first_seen.items()}
        reminder_plan = plan_reminders(
            events,
            first_seen,
            await store.reminders(),
            now,
            tz,
            lead_times=self.config.bot.reminders.lead_times,
            channels=self.config.reminder_channels,
            channel_lead_times=self.config.channel_lead_times(),
            calendar_url=self.calendar_url,
        )
        alerts.extend(reminder_plan.alerts)
        if reminder_plan.changed:
            changes.reminders = reminder_plan.state

        changes.enqueue = outbox.rows_for(alerts)
        changes.enqueue += outbox.rows_for_people(alerts, self.people.everyone())
        if not self.dry_run:
            try:
                await store.commit(changes)
            except LeaseLost as err:
                if self.cluster is not None:
                    self.cluster.lost(err.lost)
                return []
            self._count_queued(changes)
        return alerts

    @property
    def sources(self) -> tuple[SourceConfig, ...]:
        depositary = (self.config.depositary,) if self.config.depositary is not None else ()
        return (*self.config.feeds, *self.config.calendars, *depositary)

    async def poll_round(
        self,
        feeds: Sequence[SourceConfig] | None = None,
        *,
        after_batch: Callable[[], Awaitable[object]] | None = None,
    ) -> RoundReport:
        """Poll every source once, concurrently, recording what is done every ``ROUND_BATCH``
        seconds (one commit each, then ``after_batch``): a slow source holds only itself."""
        now = self.clock.now()
        targets = list(self.sources if feeds is None else feeds)
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

    # -- the two ways to run ----------------------------------------------------------------

    async def once(self) -> RoundReport:
        """One poll of every source, then deliver what is due (or, dry, print a preview)."""
        _, _, outbox = self._require()
        if self.sources:
            self.parsers.warm_up()
        await self._start_transports(read_input=False)
        report = await self.poll_round(after_batch=None if self.dry_run else outbox.deliver_due)
        evaluated = await self.evaluate()
        report = RoundReport(
            report.polled, report.failed, report.alerts + tuple(evaluated), report.outcomes
        )
        if self.dry_run:
            for alert in report.alerts:
                for channel in alert.channels:
                    self.console.stream.write(self.console.render(alert, channel) + "\n")
            self.console.stream.flush()
        else:
            await outbox.deliver_due()
        await self._stop_transports()
        return report

    async def ask(self, text: str) -> Answer:
        """Answer one command typed in the terminal (``treaty-bot ask``)."""
        return await self.answer(Inbound("console", "", None, text))

    async def _start_transports(self, *, read_input: bool) -> None:
        for name, transport in self.transports.items():
            if transport is self.console:
                await self.console.start(self.answer, read_input=read_input)
            else:
                log.info("connecting transport=%s", name)
                serve_home = getattr(transport, "serve_home", None)
                if callable(serve_home):
                    serve_home(functools.partial(self.home, name))  # Slack's App Home
                await transport.start(self.answer)
                self._started.append(transport)

    async def _stop_transports(self) -> None:
        await self.console.stop()
        while self._started:
            transport = self._started.pop()
            try:
                await transport.stop()
            except Exception:
                log.exception("transport did not stop cleanly transport=%s", transport.name)

    def request_stop(self) -> None:
        self.stop_event.set()

    async def run(self) -> None:
        """Run until ``request_stop`` (SIGINT and SIGTERM call it)."""
        _, _, outbox = self._require()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self.request_stop)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        log.info(
            "treaty-bot %s running feeds=%d transports=%s storage=%s",
            __version__,
            len(self.config.feeds),
            ",".join(self.transports),
            self.state.shown,
        )
        host, port = listen_address(self.config.bot.http, self.environ)
        if port:
            from bot.web import WebServer  # only a running bot serves HTTP

            self.web = WebServer(host, port, self.metrics, self.health_problems)
            self.web.serve_calendar(CALENDAR_PATH, self.calendar_ics)
            self.web.serve_websub(CALLBACK_PATH, self.websub, self.config.bot.fetch.max_bytes)
            self.supervisor.spawn("websub", self.websub.serve(self.stop_event))
            slack = self.transports.get("slack")
            if self.config.bot.slack.mode == "http" and slack is not None:
                mount = getattr(slack, "mount", None)
                if callable(mount):
                    mount(self.web.app)  # Slack's requests arrive at /slack/events
            await self.web.start()
        if self.cluster is not None:
            await self.cluster.beat()  # this replica's shards, before any poll
            self.supervisor.spawn("replica", self.cluster.run(self.stop_event))
        await self._start_transports(read_input=True)
        self.supervisor.spawn("loop-lag", self._watch_loop_lag())
        self.supervisor.spawn(
            "transports",
            periodic(
                "transports",
                self.stop_event,
                self._transports_job,
                first_delay=TRANSPORTS_EVERY.total_seconds(),
            ),
        )
        self.supervisor.spawn("delivery", self._delivery_loop())
        self.supervisor.spawn("sessions", periodic("sessions", self.stop_event, self._sessions_job))
        self.supervisor.spawn(
            "parsers",
            periodic(
                "parsers",
                self.stop_event,
                self._parsers_job,
                first_delay=PARSERS_IDLE.total_seconds(),
            ),
        )
        self.poller.sync(first_run=True)
        self.supervisor.spawn("config-watch", self._watch_config())
        await outbox.retry_failed()
        self.delivery_kick.set()  # deliver what an earlier run left in the outbox
        await self.stop_event.wait()
        log.info("stopping")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await self.supervisor.stop()
        try:  # what is due goes out now, within a budget; the rest waits in the outbox
            async with asyncio.timeout(SHUTDOWN_BUDGET):
                await outbox.deliver_due()
        except TimeoutError:
            log.warning("stopping before every alert was sent; they are kept for the next start")
        if self.cluster is not None:
            await self.cluster.leave()  # the others take this replica's shards at once
        await self._stop_transports()
        if self.web is not None:
            await self.web.stop()
            self.web = None

    def health_problems(self) -> list[str]:
        """Why the bot is not healthy, or nothing: for ``/healthz``."""
        problems = []
        if self.stop_event.is_set() or self.supervisor.running == 0:
            problems.append("the scheduler is not running")
        problems.extend(
            f"{name}: {reason}"
            for name, transport in self.transports.items()
            if (reason := transport.problem()) is not None
        )
        if self.cluster is not None and not self.cluster.valid() and self.cluster.failures:
            problems.append(
                f"cannot reach the state database ({self.cluster.failures} heartbeats failed); "
                "this replica holds no leases"
            )
        # with replicas, a replica answers for the sources of the shards it holds
        feeds = tuple(f for f in self.sources if self._polled_here(f.id))
        if feeds:
            now = self.clock.now()
            window = HEALTH_INTERVALS * min(f.every for f in feeds)
            if now - self.started_at > window:
                recent = [
                    f.id
                    for f in feeds
                    if (s := self.status.get(f.id)) is not None
                    and s.last_success is not None
                    and now - s.last_success <= HEALTH_INTERVALS * f.every
                ]
                if not recent:
                    problems.append(
                        f"no source polled successfully in the last {HEALTH_INTERVALS} intervals"
                    )
        return problems

    async def _watch_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stop_event.is_set():
            started = loop.time()
            await asyncio.sleep(LAG_PROBE)
            self.metrics.observe_lag(max(0.0, loop.time() - started - LAG_PROBE))

    # -- configuration changes while running ------------------------------------------------

    def _polled_here(self, source_id: str) -> bool:
        return self.cluster is None or self.cluster.owns(source_id)

    def _leases_changed(self) -> None:
        """Shards taken or lost: start or stop their pollers (once polling has started)."""
        if self.poller.started:
            self.poller.sync()
        self.delivery_kick.set()

    async def reload(self) -> list[Problem]:
        """Re-read the configuration; apply it if valid, else keep the last good one.

        Returns the problems found (empty when the new configuration was applied).
        """
        directory = self.config.directory
        self._config_seen = await asyncio.to_thread(self._config_signature)
        try:
            config = await asyncio.to_thread(load_config, directory)
        except ConfigError as err:
            for problem in err.problems:
                log.error("configuration not applied: %s", problem)
            await self._queue_config_problems([str(p) for p in err.problems])
            return list(err.problems)
        if config.bot.storage != self.config.bot.storage:
            log.warning("storage changed in bot.yaml; it takes effect at the next start")
        old_feeds = {f.id for f in self.sources}
        self.config = config
        self._rules = {f.id: feed_rule(f) for f in config.feeds}
        self.console.tz = config.tz
        for transport in self.transports.values():
            remap = getattr(transport, "set_channels", None)
            if callable(remap):
                remap(config.bot.channels)
        if self.poller.started:
            self.poller.sync()
        new_feeds = {f.id for f in self.sources}
        self.websub.public_url = _public_url(config, self.environ)
        self.websub.removed(old_feeds - new_feeds)  # unsubscribed at their hubs
        log.info(
            "configuration reloaded feeds=%d added=%s removed=%s",
            len(config.feeds),
            ",".join(sorted(new_feeds - old_feeds)) or "-",
            ",".join(sorted(old_feeds - new_feeds)) or "-",
        )
        await self._require()[2].retry_failed()
        await self.evaluate()
        self.delivery_kick.set()
        return []

    async def _delivery_failed(self, row: Delivery, err: DeliveryError) -> None:
        """A channel that cannot be posted to: tell the ops channel once, with the fix."""
        if not self.config.ops_channels:
            return
        body = messages.delivery_failed_body(row.transport, row.channel, str(err))
        alert = Alert(
            kind="source-health",
            id=AlertId(f"delivery:{row.transport}:{row.channel}:{digest(str(err))}"),
            channels=tuple(ChannelName(c) for c in self.config.ops_channels),
            source=f"{row.transport}:{row.channel}",
            title=messages.delivery_failed_title(row.transport, row.channel),
            url=None,
            text=render_plain(body),
            at=self.clock.now(),
            body=body,
        )
        await self._queue([alert])

    async def _queue(self, alerts: list[Alert]) -> None:
        store, _, outbox = self._require()
        rows = outbox.rows_for(alerts)
        if rows and not self.dry_run:
            await store.commit(Changes(enqueue=rows))
            self._count_queued(Changes(enqueue=rows))
            self.delivery_kick.set()

    async def _queue_config_problems(self, problems: list[str]) -> None:
        if not self.config.ops_channels:
            return
        now = self.clock.now()
        body = messages.config_problems_body(self.config.directory, problems)
        alert = Alert(
            kind="source-health",
            id=AlertId(f"config:{digest(*problems)}"),
            channels=tuple(ChannelName(c) for c in self.config.ops_channels),
            source="config",
            title=messages.config_problems_title(len(problems)),
            url=None,
            text=render_plain(body),
            at=now,
            body=body,
        )
        await self._queue([alert])

    def _config_signature(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for name in FILES:
            try:
                st = os.stat(os.path.join(self.config.directory, name))
            except OSError:
                out.append((name, -1, -1))
            else:
                out.append((name, st.st_mtime_ns, st.st_size))
        return tuple(out)

    async def _watch_config(self) -> None:
        """Reload when a config file changes (once it has stopped changing) or on SIGHUP."""
        pending: tuple[tuple[str, int, int], ...] | None = None
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CONFIG_POLL):
                    await self.reload_requested.wait()
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                log.info("reloading the configuration (SIGHUP)")
                await self.reload()
                pending = None
                continue
            current = await asyncio.to_thread(self._config_signature)
            if current == self._config_seen:
                pending = None
            elif current == pending:  # unchanged for one tick: the edit is complete
                pending = None
                log.info("configuration files changed; reloading")
                await self.reload()
            else:
                pending = current

    def _next_poll(self, feed: SourceConfig, outcome: PollOutcome) -> timedelta:
        """When to poll ``feed`` again after ``outcome`` (its schedule, the server's wishes, a
        failing source's backoff, WebSub); noted in its status for ``feeds``."""
        health = outcome.record.health
        now = self.clock.now()
        status = self.status.setdefault(feed.id, SourceStatus())
        plan = next_poll(
            _schedule(feed),
            status.interval,
            changed=outcome.outcome == "ok",
            failures=health.failures,
            backoff_cap=self.config.bot.fetch.backoff_cap,
            server_wait=outcome.wait,
            windows=self._windows,
            now=now,
        )
        delay = plan.delay
        if health.not_before is not None:
            delay = max(delay, health.not_before - now)
        if isinstance(feed, FeedConfig) and self.websub.pushed(feed.id):
            delay = max(delay, feed.ceiling)  # pushed: polling is only the safety net
        status.interval, status.mode, status.next_poll = plan.interval, plan.mode, now + delay
        return delay

    async def _hub_request(self, hub: str, form: Mapping[str, str]) -> HubAnswer:
        return await request_hub(self._require()[1], hub, form)

    async def push(self, feed_id: str, body: bytes, content_type: str | None) -> PollOutcome | None:
        """Plan and record a body a WebSub hub pushed, as a poll of the feed would."""
        feed = next((f for f in self.config.feeds if f.id == feed_id), None)
        if feed is None:
            return None
        store = self._require()[0]
        async with self.poller.lock(feed_id), self._active:
            now = self.clock.now()
            try:
                record = await store.source(feed_id)
                outcome = await push_feed(
                    feed,
                    record,
                    body,
                    content_type,
                    now,
                    self.config.tz,
                    self.config.ops_channels,
                    rule=self._rules.get(feed_id),
                    parsers=self.parsers,
                )
                alerts = await self.record([outcome])
            except Exception:
                log.exception(
                    "pushed content not recorded; the next poll reads it source=%s", feed_id
                )
                return None
        status = self.status.setdefault(feed_id, SourceStatus())
        if outcome.outcome == "ok":
            status.items = outcome.items
        log.info(
            "pushed content read source=%s outcome=%s alerts=%d",
            feed_id,
            outcome.outcome,
            len(alerts),
        )
        if alerts:
            self.delivery_kick.set()
        return outcome

    async def _parsers_job(self) -> timedelta:
        """Between negotiation weeks most polls are 304s: parser workers idle that long go."""
        if self.parsers.close_if_idle(PARSERS_IDLE.total_seconds()):
            log.info("parser processes stopped after %s idle", PARSERS_IDLE)
        return PARSERS_IDLE / 2

    async def _transports_job(self) -> timedelta:
        """Tell the ops channel once when a transport reports a (new) problem."""
        for name, transport in self.transports.items():
            problem = transport.problem()
            if problem is None or problem == self._reported_problems.get(name):
                self._reported_problems[name] = problem
                continue
            self._reported_problems[name] = problem
            log.error("transport problem transport=%s problem=%s", name, problem)
            if not self.config.ops_channels:
                continue
            body = messages.transport_problem_body(name, problem)
            await self._queue(
                [
                    Alert(
                        kind="source-health",
                        id=AlertId(
                            f"transport:{name}:{digest(problem, self.started_at.isoformat())}"
                        ),
                        channels=tuple(ChannelName(c) for c in self.config.ops_channels),
                        source=f"transport:{name}",
                        title=messages.transport_problem_title(name),
                        url=None,
                        text=render_plain(body),
                        at=self.clock.now(),
                        body=body,
                    )
                ]
            )
        return TRANSPORTS_EVERY

    async def _sessions_job(self) -> timedelta:
        alerts = await self.evaluate()
        if alerts:
            self.delivery_kick.set()
        return SESSIONS_EVERY

    async def _delivery_loop(self) -> None:
        _, _, outbox = self._require()
        while not self.stop_event.is_set():
            self.delivery_kick.clear()
            try:
                report = await outbox.deliver_due()
            except Exception:
                log.exception("delivery round failed; retrying shortly")
                report = None
            wait = 5.0 if report is None or report.retrying else 60.0
            if self.cluster is not None:  # rows other replicas queue for channels held here
                wait = min(wait, self.cluster.beat_every)
            if report is not None and report.next_release is not None:
                until = (report.next_release - self.clock.now()).total_seconds()
                wait = min(wait, max(until, 0.0) + 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self.delivery_kick.wait()
