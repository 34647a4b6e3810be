"""The composition root: the one module that wires configuration, store, sources, transports
and the roles of a running bot together, and owns their life cycle.

    async with App(config) as app:
        await app.run()

The roles are modules of their own, sharing one ``Context``: the poller (``poller.py``), the
planning job (``planning.py``), the deliverer (``deliverer.py``), the responder
(``responder.py``) and, with replicas, the cluster (``cluster.py``).
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

from bot import __version__, planning, timeline
from bot.clock import Clock, SystemClock
from bot.configuration import load_config
from bot.configuration.loader import FILES
from bot.configuration.models import Config, HttpSettings, SourceConfig
from bot.context import Context, SourceStatus
from bot.deliverer import TRANSPORTS_EVERY, Deliverer
from bot.delivery import Outbox
from bot.domain.commands import CommandView
from bot.domain.home import HomeView
from bot.domain.model import Alert, SessionEvent
from bot.errors import ConfigError, Problem, TreatyBotError
from bot.metrics import Metrics
from bot.people import FollowBook
from bot.platforms import build_transports
from bot.poller import Poller, RoundReport
from bot.polling import PollOutcome
from bot.responder import Responder
from bot.scheduler import Supervisor, periodic
from bot.sources.http import HttpFetcher
from bot.sources.parsing import QUIET_BELOW
from bot.sources.websub import HubAnswer, request_hub
from bot.storage import open_store, state_location
from bot.store.runner import AsyncStore
from bot.timeline import CALENDAR_PATH
from bot.transports.base import Answer, Inbound, Transport
from bot.transports.console import ConsoleTransport, Format
from bot.websub import CALLBACK_PATH, WebSubSubscriber

if TYPE_CHECKING:
    from bot.cluster import Cluster
    from bot.web import WebServer

__all__ = ["CALENDAR_PATH", "App", "RoundReport", "SourceStatus", "listen_address"]

log = logging.getLogger(__name__)

#: /healthz turns 503 when no source succeeded within this many of its intervals.
HEALTH_INTERVALS = 3
#: How often the event loop's lag is measured (seconds).
LAG_PROBE = 0.5
#: How often the configuration files are checked for changes (seconds).
CONFIG_POLL = 2.0
#: How often the parser worker processes are looked at: stopped when they parsed fewer than
#: ``parsing.QUIET_BELOW`` bodies since (started again when many bodies arrive at once).
PARSERS_CHECK = timedelta(minutes=1)
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
        environ = dict(os.environ if environ is None else environ)
        metrics = Metrics()
        metrics.up_since.set(time.time())
        self.ctx = Context(config, clock or SystemClock(), metrics, dry_run, environ)
        #: ``treaty-bot run``: on a database, one of the replicas that share it
        self.replica = replica and not dry_run
        self.fmt = fmt
        #: the state file or database (TREATY_BOT_DATABASE_URL wins over bot.yaml's storage)
        self.state = state_location(config.bot.storage, environ)
        self.console = ConsoleTransport(fmt=fmt, tz=config.tz, stream=stream)
        self._given_transports = transports
        self.supervisor = Supervisor()
        self.web: WebServer | None = None
        self._started: list[Transport] = []
        self.reload_requested = asyncio.Event()
        self._config_seen = self._config_signature()
        #: WebSub: the hubs' pushes and the polls of one feed are planned one at a time
        self.websub = WebSubSubscriber(
            self.clock,
            metrics,
            self._hub_request,
            lambda feed, body, content_type: self.poller.push(feed, body, content_type),
            self._websub_url(config),
        )
        metrics.count_sources(len(self.ctx.sources))
        self.poller = Poller(
            self.ctx, self.supervisor, self.websub, on_first_round=self._first_round_done
        )
        self.deliverer = Deliverer(self.ctx)
        self.responder = Responder(self.ctx, self.websub, self.reload)

    def _websub_url(self, config: Config) -> str | None:
        """Where hubs reach this bot's callbacks, or ``None`` (no subscriptions): replicas
        share one public address, behind which a push may reach any of them, while a
        subscription's secret and its feed's shard are one replica's."""
        if self.replica and self.state.is_database:
            return None
        return _public_url(config, self.environ)

    # -- what the roles share, as the rest of the program and the tests know it -------------

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def clock(self) -> Clock:
        return self.ctx.clock

    @property
    def dry_run(self) -> bool:
        return self.ctx.dry_run

    @property
    def environ(self) -> Mapping[str, str]:
        return self.ctx.environ

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def status(self) -> dict[str, SourceStatus]:
        return self.ctx.status

    @property
    def people(self) -> FollowBook:
        return self.ctx.people

    @property
    def stop_event(self) -> asyncio.Event:
        return self.ctx.stop_event

    @property
    def transports(self) -> dict[str, Transport]:
        return self.ctx.transports

    @property
    def cluster(self) -> Cluster | None:
        return self.ctx.cluster

    @property
    def store(self) -> AsyncStore:
        return self.ctx.store

    @property
    def outbox(self) -> Outbox:
        return self.ctx.outbox

    @property
    def sources(self) -> tuple[SourceConfig, ...]:
        return self.ctx.sources

    # -- life cycle -------------------------------------------------------------------------

    async def __aenter__(self) -> App:
        ctx = self.ctx
        fetcher: HttpFetcher | None = None
        store: AsyncStore | None = None
        try:
            raw = await asyncio.to_thread(
                open_store,
                self.state,
                read_only=self.dry_run,
                sole_writer=not self.dry_run and not self.replica,
                replica=self.replica,
            )
            store = AsyncStore(raw)
            if self.replica and self.state.is_database:
                from bot.cluster import Cluster
                from bot.store.postgres_store import PostgresStore

                assert isinstance(raw, PostgresStore)
                settings = self.config.bot.replicas
                ctx.cluster = Cluster(
                    store,
                    raw,
                    shards=settings.shards,
                    lease=settings.lease.total_seconds(),
                    on_change=self._leases_changed,
                )
            fetch = self.config.bot.fetch
            fetcher = HttpFetcher(
                timeout=fetch.timeout,
                max_bytes=fetch.max_bytes,
                per_host=fetch.per_host,
                max_in_flight=fetch.max_in_flight,
                now=self.clock.now,
            )
            await fetcher.__aenter__()
            ctx.transports = (
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
            self.metrics.start(ctx.transports, ctx.transports)
            if "console" in ctx.transports and not self.dry_run:
                self.console.open_journal(self.state.console_journal)
            outbox = Outbox(
                store,
                ctx.transports,
                self.clock,
                self.metrics,
                on_permanent=self.deliverer.delivery_failed,
                rules=lambda: self.config.channel_rules(),
                tz=lambda: self.config.tz,
                claims=ctx.cluster,
            )
            ctx.attach(store, fetcher, outbox)
            await ctx.people.load(store)
        except BaseException:
            ctx.attach(store, fetcher, None)  # closed by _close
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
        ctx = self.ctx
        await self.supervisor.stop()
        await self.poller.close()
        await self._stop_transports()
        self.console.close()
        fetcher, store = ctx._fetcher, ctx._store
        ctx.detach()
        if fetcher is not None:
            await fetcher.__aexit__(None, None, None)
        ctx.parsers.close()
        if store is not None:
            await store.close()

    # -- the roles' work, as the command line and the tests call it --------------------------

    def is_admin(self, inbound: Inbound) -> bool:
        return self.responder.is_admin(inbound)

    async def answer(self, inbound: Inbound) -> Answer:
        """Answer one command from any transport; never raises."""
        return await self.responder.answer(inbound)

    async def ask(self, text: str) -> Answer:
        """Answer one command typed in the terminal (``treaty-bot ask``)."""
        return await self.answer(Inbound("console", "", None, text))

    async def command_view(self, inbound: Inbound) -> CommandView:
        return await self.responder.command_view(inbound)

    async def home(self, platform: str, user: str) -> HomeView:
        return await self.responder.home(platform, user)

    async def timeline(self) -> list[SessionEvent]:
        """Every session, meeting and deadline the bot knows (``bot.timeline``)."""
        return await timeline.timeline(self.config, self.ctx.store)

    async def calendar_ics(self) -> bytes:
        """The timeline as an iCalendar feed: the same bytes while nothing changes."""
        return await timeline.calendar_ics(self.config, self.ctx.store)

    @property
    def calendar_url(self) -> str | None:
        """Where members subscribe to the timeline (``http.public_url`` set), else ``None``."""
        return timeline.calendar_url(self.config)

    async def poll(self, source: SourceConfig, *, now: datetime | None = None) -> PollOutcome:
        return await self.poller.poll(source, now=now)

    async def record(self, outcomes: Sequence[PollOutcome]) -> list[Alert]:
        return await self.poller.record(outcomes)

    async def poll_round(
        self,
        sources: Sequence[SourceConfig] | None = None,
        *,
        after_batch: Callable[[], Awaitable[object]] | None = None,
    ) -> RoundReport:
        return await self.poller.round(sources, after_batch=after_batch)

    async def push(self, feed_id: str, body: bytes, content_type: str | None) -> PollOutcome | None:
        return await self.poller.push(feed_id, body, content_type)

    async def evaluate(self, *, now: datetime | None = None) -> list[Alert]:
        """Sessions, clauses, computed dates and reminders (``planning.evaluate``)."""
        return await planning.evaluate(self.ctx, now=now)

    # -- the two ways to run ----------------------------------------------------------------

    async def once(self) -> RoundReport:
        """One poll of every source, then deliver what is due (or, dry, print a preview)."""
        outbox = self.ctx.outbox
        if self.sources:
            self.ctx.parsers.warm_up()
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

    async def run(self, *, stop_asked: Callable[[], bool] = lambda: False) -> None:
        """Run until ``request_stop`` (SIGINT and SIGTERM call it).

        ``stop_asked`` says whether a SIGTERM came while the process started, before these
        handlers were installed; the bot then starts and stops at once.
        """
        outbox = self.ctx.outbox
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(sig, self.request_stop)
        if stop_asked():  # checked once the handlers are in place: no signal falls between
            log.info("stop asked while starting")
            self.request_stop()
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
            if _public_url(self.config, self.environ):
                log.info("websub is off with replicas; every feed is polled on its schedule")
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
        self.supervisor.spawn("delivery", self.deliverer.loop())
        self.supervisor.spawn("sessions", periodic("sessions", self.stop_event, self._sessions_job))
        self.supervisor.spawn(
            "parsers",
            periodic(
                "parsers",
                self.stop_event,
                self._parsers_job,
                first_delay=PARSERS_CHECK.total_seconds(),
            ),
        )
        self.poller.sync(first_run=True)
        self.supervisor.spawn("config-watch", self._watch_config())
        await outbox.retry_failed()
        self.ctx.delivery_kick.set()  # deliver what an earlier run left in the outbox
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
        feeds = tuple(f for f in self.sources if self.ctx.polled_here(f.id))
        if feeds:
            now = self.clock.now()
            window = HEALTH_INTERVALS * min(f.every for f in feeds)
            if now - self.ctx.started_at > window:
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

    # -- jobs -------------------------------------------------------------------------------

    def _first_round_done(self, sources: int) -> None:
        """Every source polled here has had its first poll since the start: what the bot
        learnt of them (records, caches) lives as long as the process. Keep it out of the
        collector's scans, which would otherwise pause the loop longer the more sources there
        are."""
        seconds = (self.clock.now() - self.ctx.started_at).total_seconds()
        log.info("first poll of every source done sources=%d seconds=%.1f", sources, seconds)
        gc.freeze()

    def _leases_changed(self) -> None:
        """Shards taken or lost: start or stop their pollers (once polling has started)."""
        if self.poller.started:
            self.poller.sync()
        self.ctx.delivery_kick.set()

    async def _transports_job(self) -> timedelta:
        return await self.deliverer.transports_job()

    async def _sessions_job(self) -> timedelta:
        if await self.evaluate():
            self.ctx.delivery_kick.set()
        return SESSIONS_EVERY

    async def _parsers_job(self) -> timedelta:
        """Between negotiation weeks most polls are 304s or the same body: a changed feed now
        and then is parsed in a thread, and the workers' memory is given back."""
        if await self.ctx.parsers.close_if_quiet():
            log.info(
                "parser processes stopped: fewer than %d large bodies in the last %s; "
                "parsing in a thread until many arrive at once",
                QUIET_BELOW,
                PARSERS_CHECK,
            )
        return PARSERS_CHECK

    async def _hub_request(self, hub: str, form: Mapping[str, str]) -> HubAnswer:
        return await request_hub(self.ctx.fetcher, hub, form)

    # -- configuration changes while running ------------------------------------------------

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
            await self.deliverer.config_problems([str(p) for p in err.problems])
            return list(err.problems)
        if config.bot.storage != self.config.bot.storage:
            log.warning("storage changed in bot.yaml; it takes effect at the next start")
        old_feeds = {f.id for f in self.sources}
        self.ctx.config = config
        self.metrics.count_sources(len(self.sources))
        self.console.tz = config.tz
        for transport in self.transports.values():
            remap = getattr(transport, "set_channels", None)
            if callable(remap):
                remap(config.bot.channels)
        self.poller.configure()
        new_feeds = {f.id for f in self.sources}
        self.websub.public_url = self._websub_url(config)
        self.websub.removed(old_feeds - new_feeds)  # unsubscribed at their hubs
        log.info(
            "configuration reloaded feeds=%d added=%s removed=%s",
            len(config.feeds),
            ",".join(sorted(new_feeds - old_feeds)) or "-",
            ",".join(sorted(old_feeds - new_feeds)) or "-",
        )
        await self.ctx.outbox.retry_failed()
        await self.evaluate()
        self.ctx.delivery_kick.set()
        return []

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
