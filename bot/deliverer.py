"""The deliverer: the loop that sends what the outbox holds, as soon as something is queued
(``Context.delivery_kick``) and again when a retry or a held alert's release is due, and the
alerts the bot writes about itself to the ops channels (a channel that cannot be posted to, a
configuration that was not applied, a transport in trouble)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from bot.context import Context
from bot.domain import messages
from bot.domain.model import Alert, AlertId, ChannelName, Delivery
from bot.domain.planner import digest
from bot.domain.text import Rich, render_plain
from bot.errors import DeliveryError
from bot.store.base import Changes

log = logging.getLogger(__name__)

#: How often the transports are asked whether something is wrong (a lost crypto store…).
TRANSPORTS_EVERY = timedelta(seconds=30)
#: The delivery loop's longest wait while nothing is queued, and while a send is retried
#: (seconds).
IDLE_WAIT = 60.0
RETRY_WAIT = 5.0


class Deliverer:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        #: the problem last told to the ops channel, by transport
        self._reported: dict[str, str | None] = {}

    async def loop(self) -> None:
        """Deliver what is due until the bot stops."""
        ctx = self.ctx
        while not ctx.stop_event.is_set():
            ctx.delivery_kick.clear()
            try:
                report = await ctx.outbox.deliver_due()
            except Exception:
                log.exception("delivery round failed; retrying shortly")
                report = None
            wait = RETRY_WAIT if report is None or report.retrying else IDLE_WAIT
            if ctx.cluster is not None:  # rows other replicas queue for channels held here
                wait = min(wait, ctx.cluster.beat_every)
            if report is not None and report.next_release is not None:
                until = (report.next_release - ctx.clock.now()).total_seconds()
                wait = min(wait, max(until, 0.0) + 0.05)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await ctx.delivery_kick.wait()

    async def queue(self, alerts: list[Alert]) -> None:
        """Queue alerts outside a poll's or a plan's commit, and deliver them now."""
        ctx = self.ctx
        rows = ctx.outbox.rows_for(alerts)
        if rows and not ctx.dry_run:
            changes = Changes(enqueue=rows)
            await ctx.store.commit(changes)
            ctx.count_queued(changes)
            ctx.delivery_kick.set()

    # -- what the bot tells the ops channels about itself -----------------------------------

    async def tell_ops(self, id: str, source: str, title: str, body: Rich) -> None:
        channels = self.ctx.config.ops_channels
        if not channels:
            return
        alert = Alert(
            kind="source-health",
            id=AlertId(id),
            channels=tuple(ChannelName(c) for c in channels),
            source=source,
            title=title,
            url=None,
            text=render_plain(body),
            at=self.ctx.clock.now(),
            body=body,
        )
        await self.queue([alert])

    async def delivery_failed(self, row: Delivery, err: DeliveryError) -> None:
        """A channel that cannot be posted to: tell the ops channel once, with the fix."""
        await self.tell_ops(
            f"delivery:{row.transport}:{row.channel}:{digest(str(err))}",
            f"{row.transport}:{row.channel}",
            messages.delivery_failed_title(row.transport, row.channel),
            messages.delivery_failed_body(row.transport, row.channel, str(err)),
        )

    async def config_problems(self, problems: list[str]) -> None:
        """A configuration that was not applied, and why."""
        await self.tell_ops(
            f"config:{digest(*problems)}",
            "config",
            messages.config_problems_title(len(problems)),
            messages.config_problems_body(self.ctx.config.directory, problems),
        )

    async def transports_job(self) -> timedelta:
        """Tell the ops channel once when a transport reports a (new) problem."""
        for name, transport in self.ctx.transports.items():
            problem = transport.problem()
            if problem is None or problem == self._reported.get(name):
                self._reported[name] = problem
                continue
            self._reported[name] = problem
            log.error("transport problem transport=%s problem=%s", name, problem)
            await self.tell_ops(
                f"transport:{name}:{digest(problem, self.ctx.started_at.isoformat())}",
                f"transport:{name}",
                messages.transport_problem_title(name),
                messages.transport_problem_body(name, problem),
            )
        return TRANSPORTS_EVERY
