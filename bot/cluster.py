"""Replicas: several ``treaty-bot run`` processes sharing one PostgreSQL database.

Each replica beats every third of the lease time (``bot.yaml`` ``replicas.lease``, 15 s by
default): in one transaction it says it is alive, renews the leases it holds, takes its share
of the shards of the sources (``ceil(shards / live replicas)``), gives back what it holds
beyond it, and takes the planning job if no one holds it. A lease is a row with a holder, an
expiry by the database's clock (judged when each statement runs, not when its transaction
began), and a fencing token raised at every change of holder; every commit a replica makes
under a lease names it (``Changes.fences``) and the database refuses the commit if the lease
has moved on (``LeaseLost``). So a replica that stalls, or loses the
database, cannot write over the one that took its shards, whatever its own clock says.

The replica's own clock only makes it stop early: a lease counts as held until the start of
the beat that renewed it plus the lease time, less a margin; past that, without a new beat,
the replica stops polling and delivering (``valid``), before the database hands its leases to
another replica.

What a lease covers:

- ``shard:N``: polling the sources whose ``shard_key`` falls in shard N, and recording what
  those polls found (``poller.py``).
- ``job:planner``: sessions, clauses, computed dates, reminders and releasing held alerts
  (quiet hours, digests).
- ``out:TRANSPORT:CHANNEL``: delivering one channel's rows, in order (taken by the outbox for
  the channels that have rows due, ``FOR UPDATE SKIP LOCKED``; given back when nothing is due).
- commands: each inbound event is claimed by its id; only the first replica answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot import __version__
from bot.errors import StoreError
from bot.store.leases import Beat, LeaseStore, ReplicaRow, shard_key, shard_lease
from bot.store.runner import AsyncStore

log = logging.getLogger(__name__)

PLANNER = "job:planner"
JOBS = (PLANNER,)


def channel_lease(transport: str, channel: str) -> str:
    """The name of the lease on delivering one channel's rows."""
    return f"out:{transport}:{channel}"


class Cluster:
    """This replica's leases, kept by a heartbeat (``run``); see the module doc."""

    def __init__(
        self,
        store: AsyncStore,
        raw: LeaseStore,
        *,
        shards: int,
        lease: float,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.raw = raw
        self.shards = shards
        self.lease = lease
        self.on_change = on_change
        self.held: dict[str, int] = {}
        self.live = 1
        #: beats that failed in a row (the database unreachable)
        self.failures = 0
        self._valid_until = 0.0
        self._next_expiry: datetime | None = None
        self._wake = asyncio.Event()

    @property
    def id(self) -> str:
        return self.raw.writer

    @property
    def margin(self) -> float:
        """How long before the database could hand a lease on that this replica stops."""
        return min(2.0, self.lease / 5)

    @property
    def beat_every(self) -> float:
        return self.lease / 3

    def valid(self) -> bool:
        """Whether the leases held are still this replica's by its own (cautious) clock."""
        return time.monotonic() < self._valid_until

    # -- what the leases cover ---------------------------------------------------------------

    def shard_of(self, source_id: str) -> str:
        return shard_lease(shard_key(source_id) % self.shards)

    def owns(self, source_id: str) -> bool:
        return self.valid() and self.shard_of(source_id) in self.held

    def fences_for(self, source_ids: Iterable[str]) -> dict[str, int] | None:
        """The fences that recording these sources' polls needs, or ``None`` if this replica
        does not hold one of them now."""
        if not self.valid():
            return None
        fences: dict[str, int] = {}
        for source_id in source_ids:
            name = self.shard_of(source_id)
            if name not in self.held:
                return None
            fences[name] = self.held[name]
        return fences

    def planner_fences(self) -> dict[str, int] | None:
        """The planning job's fence, if this replica holds it now."""
        if self.valid() and PLANNER in self.held:
            return {PLANNER: self.held[PLANNER]}
        return None

    async def take_channels(
        self, groups: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], dict[str, int]]:
        """Of these (transport, channel) groups, those this replica delivers now, each with
        the fence its commits need; the channels' leases no longer needed are given back."""
        if not self.valid():
            return {}
        names = {channel_lease(t, c): (t, c) for t, c in groups}
        held_channels = {n: f for n, f in self.held.items() if n.startswith("out:")}
        try:
            got = await self.store.call(
                self.raw.take, list(names), held=held_channels, lease=self.lease
            )
            idle = sorted(set(held_channels) - set(names))
            if idle:
                await self.store.call(self.raw.release, idle)
        except StoreError as err:
            log.warning("cannot take channels to deliver: %s", err)
            return {}
        for name in set(held_channels) - set(got):
            self.held.pop(name, None)
        self.held.update(got)
        return {names[n]: {n: f} for n, f in got.items()}

    async def claim(self, key: str) -> bool:
        """Whether this replica answers the inbound event ``key`` (the first to claim it)."""
        try:
            return await self.store.call(self.raw.claim_once, key)
        except StoreError as err:
            log.warning("cannot claim a command; not answering it here: %s", err)
            return False

    async def replicas(self) -> list[ReplicaRow]:
        return await self.store.call(self.raw.replicas)

    def lost(self, names: Iterable[str]) -> None:
        """The database refused a commit under these leases: they are another's now."""
        dropped = [n for n in names if self.held.pop(n, None) is not None]
        if dropped:
            log.warning("leases lost replica=%s leases=%s", self.id, ",".join(sorted(dropped)))
            self.on_change()
            self._wake.set()

    # -- the heartbeat -----------------------------------------------------------------------

    async def beat(self) -> None:
        """One heartbeat; see the module doc."""
        started = time.monotonic()
        before = dict(self.held)
        try:
            result: Beat = await self.store.call(
                self.raw.beat,
                held=dict(self.held),
                shards=self.shards,
                jobs=JOBS,
                lease=self.lease,
                version=__version__,
            )
        except StoreError as err:
            self.failures += 1
            if self.failures == 1:
                log.warning("replica heartbeat failed; retrying: %s", err)
            self._expire_if_due()
            return
        if self.failures:
            log.info("replica heartbeat back after %d failures", self.failures)
        self.failures = 0
        # channels taken by the outbox while the beat was on its way are held too
        taken = {n: f for n, f in self.held.items() if n not in before and n.startswith("out:")}
        self.held = {**result.held, **taken}
        self.live = result.live
        self._next_expiry = result.next_expiry
        self._valid_until = started + self.lease - self.margin
        if set(before) != set(self.held) or any(before[n] != self.held[n] for n in before):
            shards = sorted(int(n[6:]) for n in self.held if n.startswith("shard:"))
            log.info(
                "replica leases replica=%s live=%d shards=%s jobs=%s",
                self.id,
                self.live,
                ",".join(map(str, shards)) or "-",
                ",".join(n for n in self.held if n.startswith("job:")) or "-",
            )
            self.on_change()

    def _expire_if_due(self) -> None:
        """Past the leases' validity without a heartbeat: hold nothing, do nothing."""
        if not self.valid() and self.held:
            log.warning(
                "leases expired without a heartbeat: polling and delivery stop replica=%s",
                self.id,
            )
            self.held = {}
            self.on_change()

    def _sleep_for(self) -> float:
        """Until the next beat: a third of the lease, or just after the next lease another
        replica holds expires (so a dead replica's shards are taken at once)."""
        wait = self.beat_every
        if self.failures:
            wait = min(wait, 1.0)
        if self._next_expiry is not None:
            until = (self._next_expiry - datetime.now(UTC)).total_seconds() + 0.05
            wait = min(wait, max(until, 0.05))
        return wait

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            beat = asyncio.ensure_future(self.beat())
            # a database that stops answering (a cut network holds requests, it does not
            # refuse them) must not keep this replica working past its leases' validity
            try:
                while not beat.done():
                    left = self._valid_until - time.monotonic() if self.held else None
                    await asyncio.wait({beat}, timeout=None if left is None else max(left, 0.0))
                    if not beat.done():
                        self._expire_if_due()
                await beat
            finally:
                beat.cancel()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._sleep_for()):
                    await self._wake.wait()

    async def leave(self) -> None:
        """Give every lease back and say this replica stopped (a clean shutdown)."""
        self.held = {}
        self._valid_until = 0.0
        try:
            await self.store.call(self.raw.leave)
        except StoreError as err:
            log.warning("could not give the leases back; they expire by themselves: %s", err)


def describe(rows: Sequence[ReplicaRow], me: str, lease: float) -> list[dict[str, Any]]:
    """The replicas as ``status`` shows them (``ReplicaInfo``'s fields)."""
    return [
        {
            "name": f"{row.host}:{row.pid}",
            "me": row.id == me,
            "heartbeat_age": max(0.0, (row.now - row.heartbeat_at).total_seconds()),
            "shards": tuple(sorted(int(n[6:]) for n in row.leases if n.startswith("shard:"))),
            "jobs": tuple(n for n in row.leases if n.startswith("job:")),
            "stopped": row.stopped_at is not None,
            "silent": (row.now - row.heartbeat_at).total_seconds() > lease,
        }
        for row in rows
    ]
