"""The outbox: alerts become rows in the store before anything is sent, and are marked sent after.

Per (transport, channel) rows go out in order; channels are independent, so a channel that waits
on a rate limit or an outage holds up only itself. A row found in ``sending`` at start-up was
interrupted mid-send: the transport is asked whether the platform already has it before it is
sent again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from bot.clock import Clock
from bot.domain.follows import Follow, Person, followers
from bot.domain.holding import ChannelRules, HoldReason, grouped_alerts, hold_for
from bot.domain.model import Alert, ChannelName, Delivery
from bot.errors import DeliveryError, LeaseLost
from bot.metrics import Metrics
from bot.store.base import Changes, DeliveryUpdate
from bot.store.runner import AsyncStore
from bot.transports.base import Transport

log = logging.getLogger(__name__)

PermanentFailureHook = Callable[[Delivery, DeliveryError], Awaitable[None]]

NO_RULES = ChannelRules()
RETRY_BASE = timedelta(seconds=5)
RETRY_CAP = timedelta(minutes=30)


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff with jitter: 5 s, 10 s, 20 s … up to 30 min."""
    factor: int = 1 << min(max(attempts - 1, 0), 16)
    base = min(RETRY_BASE * factor, RETRY_CAP)
    return base * random.uniform(0.8, 1.2)


@dataclass(slots=True)
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0
    #: when the next held row (digest, quiet hours) is due to be released
    next_release: datetime | None = None


#: How each logical channel takes its alerts (digests, quiet hours); read at each use, so a
#: reload applies to what is queued next.
RulesSource = Callable[[], Mapping[ChannelName, ChannelRules]]

Group = tuple[str, str]


class Claims(Protocol):
    """Replicas sharing one outbox (``bot.cluster.Cluster``): which channels this one
    delivers, under which leases, and whether it still holds them."""

    def valid(self) -> bool: ...

    async def take_channels(self, groups: Sequence[Group]) -> dict[Group, dict[str, int]]: ...

    def planner_fences(self) -> dict[str, int] | None: ...

    def lost(self, names: Iterable[str]) -> None: ...


class Outbox:
    def __init__(
        self,
        store: AsyncStore,
        transports: Mapping[str, Transport],
        clock: Clock,
        metrics: Metrics | None = None,
        on_permanent: PermanentFailureHook | None = None,
        rules: RulesSource | None = None,
        tz: Callable[[], ZoneInfo] | None = None,
        claims: Claims | None = None,
    ) -> None:
        #: with replicas: each delivers the channels it holds the lease of (``None``: all)
        self.claims = claims
        self.rules = rules or dict
        self.tz = tz or (lambda: ZoneInfo("UTC"))
        self.on_permanent = on_permanent
        self.metrics = metrics or Metrics()
        self.depth = 0
        self.store = store
        self.transports = dict(transports)
        self.clock = clock
        self._lock = asyncio.Lock()
        self.warned_unreachable: set[str] = set()

    def rows_for(self, alerts: Iterable[Alert]) -> list[Delivery]:
        """One outbox row per alert, channel and transport that reaches that channel; a row
        that waits for its channel's digest or the end of its quiet hours is ``held``."""
        rows = []
        rules = self.rules()
        now = self.clock.now()
        for alert in alerts:
            for channel in alert.channels:
                reached = False
                hold = hold_for(alert, channel, rules.get(channel, NO_RULES), now)
                for name, transport in self.transports.items():
                    if not transport.reaches(channel):
                        continue
                    reached = True
                    key = f"{alert.id}|{channel}|{name}"
                    if self.store.has_delivery(key):
                        continue
                    row = Delivery(key, self.store.next_seq(), alert, ChannelName(channel), name)
                    if hold is not None:
                        row = replace(row, state="held", next_try=hold.until, held_for=hold.reason)
                    rows.append(row)
                if not reached and channel not in self.warned_unreachable:
                    self.warned_unreachable.add(channel)
                    log.warning(
                        "channel=%s has no address on any running transport; "
                        "its alerts are not posted",
                        channel,
                    )
        return rows

    def rows_for_people(
        self, alerts: Iterable[Alert], follows: Mapping[Person, Sequence[Follow]]
    ) -> list[Delivery]:
        """One outbox row per alert and person who follows something it is about: sent to
        that person directly (channel ``dm:USER``) through their platform's transport, never
        held. The key ``alert|dm:USER|platform`` makes it once per alert and person, ever."""
        rows: list[Delivery] = []
        if not follows:
            return rows
        made: set[str] = set()
        for alert in alerts:
            for person in followers(alert, follows):
                transport = self.transports.get(person.platform)
                channel = person.channel
                if transport is None or not transport.reaches(channel):
                    continue
                key = f"{alert.id}|{channel}|{person.platform}"
                if key in made or self.store.has_delivery(key):
                    continue
                made.add(key)
                rows.append(Delivery(key, self.store.next_seq(), alert, channel, person.platform))
        return rows

    async def retry_failed(self) -> int:
        """Give rows that failed permanently one more chance (after a restart or a reload,
        when the cause may have been fixed)."""
        failed = await self.store.deliveries(("failed",))
        if failed:
            now = self.clock.now()
            await self.store.commit(
                Changes(deliveries=[DeliveryUpdate(r.key, "pending", now) for r in failed])
            )
        return len(failed)

    async def release_held(self) -> datetime | None:
        """Turn the held rows that are due into their channel's grouped message(s), in one
        commit (a crash leaves either the held rows or the grouped ones, never neither);
        return when the next held row is due."""
        fences: dict[str, int] = {}
        if self.claims is not None:  # the planning replica releases what was held
            planner = self.claims.planner_fences()
            if planner is None:
                return None
            fences = planner
        now = self.clock.now()
        rules = self.rules()
        due: dict[tuple[str, ChannelName, HoldReason], list[Delivery]] = {}
        later: datetime | None = None
        for row in await self.store.deliveries(("held",)):
            reason: HoldReason = row.held_for or "quiet"
            still = rules.get(row.channel, NO_RULES)
            kept = still.digest is not None if reason == "digest" else still.quiet is not None
            if kept and row.next_try is not None and row.next_try > now:
                later = row.next_try if later is None else min(later, row.next_try)
                continue
            due.setdefault((row.transport, row.channel, reason), []).append(row)
        if not due:
            return later
        changes = Changes(fences=fences)
        for (transport, channel, reason), rows in due.items():
            for alert in grouped_alerts(reason, channel, [r.alert for r in rows], now, self.tz()):
                key = f"{alert.id}|{channel}|{transport}"
                if not self.store.has_delivery(key):
                    changes.enqueue.append(
                        Delivery(key, self.store.next_seq(), alert, channel, transport)
                    )
            changes.deliveries.extend(DeliveryUpdate(r.key, "grouped", now) for r in rows)
            log.info(
                "releasing held alerts channel=%s transport=%s reason=%s count=%d",
                channel,
                transport,
                reason,
                len(rows),
            )
        try:
            await self.store.commit(changes)
        except LeaseLost as err:
            if self.claims is not None:
                self.claims.lost(err.lost)
            return later
        return later

    async def deliver_due(self) -> DeliveryReport:
        """Release what was held and is due, then send every row that is due."""
        async with self._lock:
            next_release = await self.release_held()
            now = self.clock.now()
            waiting = await self.store.deliveries(("pending", "sending"))
            groups: dict[tuple[str, str], list[Delivery]] = {}
            blocked: set[tuple[str, str]] = set()
            for row in waiting:
                group = (row.transport, row.channel)
                if group in blocked:
                    continue
                if row.next_try is not None and row.next_try > now:
                    blocked.add(group)  # later rows of this channel wait for this one
                    continue
                groups.setdefault(group, []).append(row)
            fences: dict[Group, dict[str, int]] = {group: {} for group in groups}
            if self.claims is not None:
                fences = await self.claims.take_channels(list(groups))
            reports = await asyncio.gather(
                *(
                    self._deliver_group(rows, fences[group])
                    for group, rows in groups.items()
                    if group in fences
                )
            )
            total = DeliveryReport()
            for r in reports:
                total.sent += r.sent
                total.retrying += r.retrying
                total.failed += r.failed
            self.depth = len(waiting) - total.sent - total.failed
            self.metrics.outbox_depth.set(self.depth)
            total.next_release = next_release
            return total

    async def _deliver_group(
        self, rows: Sequence[Delivery], fences: dict[str, int] | None = None
    ) -> DeliveryReport:
        """Send one channel's due rows in order, with two commits for the whole group: every
        row is marked ``sending`` first, and the rows sent are marked together at the end.

        A crash in between leaves rows in ``sending``; those are reconciled through
        ``was_delivered`` before anything is sent again, so batching never posts twice.
        With replicas, both commits are made under the channel's lease (``fences``), and no
        row is sent once this replica's leases may have run out.
        """
        report = DeliveryReport()
        transport = self.transports.get(rows[0].transport)  # a group is never empty
        if transport is None:
            return report  # a transport that is not running now; kept for when it is
        fences = fences or {}
        fresh = {r.key for r in rows if r.state == "pending"}
        now = self.clock.now()
        try:
            await self.store.commit(
                Changes(
                    deliveries=[DeliveryUpdate(k, "sending", now) for k in sorted(fresh)],
                    fences=fences,
                )
            )
        except LeaseLost as err:
            if self.claims is not None:
                self.claims.lost(err.lost)
            return report
        done: list[DeliveryUpdate] = []
        try:
            for row in rows:
                if self.claims is not None and not self.claims.valid():
                    break  # the rows left go to whoever holds the channel next
                if row.key not in fresh:  # left in "sending" by a crash or a failed attempt
                    delivered = await transport.was_delivered(row.channel, row.alert, row.key)
                    log.info(
                        "interrupted row checked key=%s transport=%s already_delivered=%s",
                        row.key,
                        row.transport,
                        delivered,
                    )
                    if delivered:
                        done.append(DeliveryUpdate(row.key, "sent", self.clock.now()))
                        report.sent += 1
                        continue
                try:
                    await transport.send(row.channel, row.alert, row.key)
                except DeliveryError as err:
                    await self._failed(row, err, done, report, fences)
                    if not err.permanent:
                        break  # keep this channel in order: later rows wait for this one
                    continue
                done.append(DeliveryUpdate(row.key, "sent", self.clock.now()))
                report.sent += 1
                self.metrics.alerts_sent.labels(transport=row.transport).inc()
                latency = (self.clock.now() - row.alert.at).total_seconds()
                self.metrics.delivery_latency.labels(transport=row.transport).observe(
                    max(latency, 0)
                )
        finally:
            if done:
                await self._commit_done(done, fences)
        return report

    async def _commit_done(self, done: list[DeliveryUpdate], fences: dict[str, int]) -> None:
        """Mark what went out. Refused because the channel's lease moved on, the rows stay in
        ``sending`` and their next holder asks the platform before sending them again."""
        try:
            await self.store.commit(Changes(deliveries=done, fences=fences))
        except LeaseLost as err:
            if self.claims is not None:
                self.claims.lost(err.lost)

    async def _failed(
        self,
        row: Delivery,
        err: DeliveryError,
        done: list[DeliveryUpdate],
        report: DeliveryReport,
        fences: dict[str, int] | None = None,
    ) -> None:
        if err.permanent:
            log.error(
                "delivery failed permanently key=%s transport=%s channel=%s error=%s",
                row.key,
                row.transport,
                row.channel,
                err,
            )
            done.append(DeliveryUpdate(row.key, "failed", self.clock.now(), str(err), None, True))
            await self._commit_done(list(done), fences or {})
            done.clear()
            self.metrics.alerts_failed.labels(row.transport, "true").inc()
            report.failed += 1
            if self.on_permanent is not None:
                await self.on_permanent(row, err)
            return
        delay = retry_delay(row.attempts + 1)
        log.warning(
            "delivery will be retried key=%s transport=%s channel=%s in_seconds=%.0f error=%s",
            row.key,
            row.transport,
            row.channel,
            delay.total_seconds(),
            err,
        )
        # kept in "sending": a failed post may still have reached the platform, so the
        # transport is asked (was_delivered) before the next attempt, even after a restart
        done.append(
            DeliveryUpdate(
                row.key, "sending", self.clock.now(), str(err), self.clock.now() + delay, True
            )
        )
        self.metrics.alerts_failed.labels(row.transport, "false").inc()
        report.retrying += 1
