"""The responder: answers the commands of every transport. It builds the view a reply is
computed from (the timeline, the clauses, recent news, the sources and their health, the
depositary's record, the asker's follows), hands the text to the pure ``domain.commands``,
and carries out what a reply asks for (a reload, a change of follows). With replicas, a
command is claimed by its event id first, so only one replica answers it."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from bot import __version__, timeline
from bot.context import Context, SourceStatus, source_kind
from bot.domain import messages
from bot.domain.commands import (
    CommandView,
    ReplicaInfo,
    Reply,
    StatusInfo,
    TreatyView,
    handle,
    needs_sources,
    parse_command,
    reload_result,
)
from bot.domain.commands import answer as answer_command
from bot.domain.follows import Follow, Person
from bot.domain.home import HomeView, home_view
from bot.domain.model import SourceCounts, SourceHealth, SourceView
from bot.domain.replies import listed
from bot.errors import Problem, StoreError
from bot.people import person_of
from bot.transports.base import Answer, Inbound

if TYPE_CHECKING:
    from bot.configuration.models import SourceConfig
    from bot.websub import WebSubSubscriber

log = logging.getLogger(__name__)


class Responder:
    def __init__(
        self,
        ctx: Context,
        websub: WebSubSubscriber,
        reload: Callable[[], Awaitable[list[Problem]]],
    ) -> None:
        self.ctx = ctx
        self.websub = websub
        self._reload = reload
        self._names: Mapping[str, str] = {}
        self._names_of: object = None

    def is_admin(self, inbound: Inbound) -> bool:
        """Admins are listed per platform in bot.yaml; whoever types on the console is one."""
        admins = self.ctx.config.bot.admins
        if inbound.platform == "console":
            return True
        if inbound.platform == "slack":
            return inbound.user in admins.slack
        if inbound.platform == "matrix":
            return inbound.user in admins.matrix
        return False

    async def answer(self, inbound: Inbound) -> Answer:
        """Answer one command from any transport; never raises."""
        ctx = self.ctx
        started = time.monotonic()
        if (
            ctx.cluster is not None
            and inbound.event_id is not None
            and not await ctx.cluster.claim(f"{inbound.platform}:{inbound.event_id}")
        ):
            log.info("command answered by another replica platform=%s", inbound.platform)
            return Answer("", (), elsewhere=True)
        try:
            command = parse_command(inbound.text)
            view = await self.command_view(inbound, sources=needs_sources(command))
            reply = await asyncio.to_thread(answer_command, command, view, ctx.clock.now())
            if reply.action == "reload":
                log.info("reload requested platform=%s user=%s", inbound.platform, inbound.user)
                problems = await self._reload()
                reply = reload_result([str(p) for p in problems], share=reply.share)
            if reply.action == "follows":
                reply = await self._settle_follows(inbound, view, reply)
        except Exception:
            reference = uuid.uuid4().hex[:8]
            log.exception("command failed reference=%s text=%r", reference, inbound.text[:100])
            reply_title, body = messages.apology(reference)
            return Answer(reply_title, body, share=False)
        finally:
            ctx.metrics.command_latency.labels(platform=inbound.platform).observe(
                time.monotonic() - started
            )
        return Answer(reply.title, reply.body, share=reply.share, direct=reply.direct)

    async def home(self, platform: str, user: str) -> HomeView:
        """A person's home page (Slack's App Home): the next dates and what they follow."""
        ctx = self.ctx
        follows = ctx.people.of(Person(platform, user))
        events = await timeline.timeline(ctx.config, ctx.store)
        return home_view(events, follows, ctx.config.clauses(), ctx.config.tz, ctx.clock.now())

    # -- what commands answer from ----------------------------------------------------------

    async def command_view(self, inbound: Inbound, *, sources: bool = True) -> CommandView:
        """What commands answer from: sessions, clauses, recent news, and (``sources``) each
        source with its health."""
        ctx = self.ctx
        config, store = ctx.config, ctx.store
        events = await timeline.timeline(config, store)
        views: tuple[SourceView, ...] = ()
        counts = None
        if sources:
            views, counts = self.source_views(await store.healths())
        return CommandView(
            sessions=tuple(events),
            clauses=config.clauses(),
            news=tuple(await store.recent_news(50)),
            sources=views,
            source_counts=counts,
            tz=config.tz,
            is_admin=self.is_admin(inbound),
            status=StatusInfo(
                version=__version__,
                started_at=ctx.started_at,
                queued_alerts=ctx.outbox.depth,
                transports=tuple(ctx.transports),
                replicas=await self._replicas(inbound),
                shards=ctx.cluster.shards if ctx.cluster is not None else 0,
            ),
            source_names=self._source_names(),
            treaty=await self.treaty_view(),
            calendar_url=timeline.calendar_url(config),
            follows=ctx.people.of(person_of(inbound)),
        )

    async def treaty_view(self) -> TreatyView | None:
        """The depositary's record as the treaty commands show it (none without the source)."""
        ctx = self.ctx
        depositary = ctx.config.depositary
        if depositary is None:
            return None
        snapshot = await ctx.store.treaty_snapshot()
        health = (await ctx.store.healths()).get(depositary.id, SourceHealth())
        status = ctx.status.get(depositary.id)
        as_of = health.last_success
        if status is not None and status.last_success is not None:
            as_of = max(as_of or status.last_success, status.last_success)
        return TreatyView(
            snapshot.status if snapshot.initialized else None,
            ctx.config.entry_into_force(),
            ctx.config.treaty_source(),
            as_of,
            health.last_error if health.failures else None,
        )

    async def _replicas(self, inbound: Inbound) -> tuple[ReplicaInfo, ...]:
        """The replicas sharing the database, for an admin's ``status``."""
        cluster = self.ctx.cluster
        if cluster is None or not self.is_admin(inbound):
            return ()
        from bot.cluster import describe

        try:
            rows = await cluster.replicas()
        except StoreError as err:
            log.warning("cannot list the replicas: %s", err)
            return ()
        return tuple(ReplicaInfo(**d) for d in describe(rows, cluster.id, cluster.lease))

    def source_views(
        self, healths: Mapping[str, SourceHealth]
    ) -> tuple[tuple[SourceView, ...], SourceCounts]:
        """The sources a reply lists (``replies.listed``: failing ones first) described, and
        all of them counted: ten thousand sources cost a count, not ten thousand descriptions."""
        sources = self.ctx.sources
        failing = {s.id for s in sources if (h := healths.get(s.id)) is not None and h.failures > 0}
        shown = listed(sources, lambda s: s.id in failing)
        views = tuple(self._source_view(s, healths.get(s.id, SourceHealth())) for s in shown)
        return views, SourceCounts(len(sources), len(failing))

    def _source_view(self, source: SourceConfig, health: SourceHealth) -> SourceView:
        status = self.ctx.status.get(source.id, SourceStatus())
        if status.last_success and (
            health.last_success is None or status.last_success > health.last_success
        ):
            health = replace(health, last_success=status.last_success)
        return SourceView(
            id=source.id,
            name=source.name,
            kind=source_kind(source),
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

    def _source_names(self) -> Mapping[str, str]:
        """Each source's name by id (news lines name their source), kept per configuration."""
        config = self.ctx.config
        if self._names_of is not config:
            self._names = {s.id: s.name for s in self.ctx.sources}
            self._names_of = config
        return self._names

    async def _settle_follows(self, inbound: Inbound, view: CommandView, reply: Reply) -> Reply:
        """Store the asker's new follows (answering again if they changed meanwhile)."""
        person = person_of(inbound)
        now = self.ctx.clock.now()

        def again(current: tuple[Follow, ...]) -> Reply:
            return handle(inbound.text, replace(view, follows=current), now)

        return await self.ctx.people.settle(
            person, view.follows, reply, again, save=not self.ctx.dry_run
        )
