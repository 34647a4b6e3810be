"""What replicas sharing one database ask of it: heartbeats, leases with fencing tokens, and
claims (``bot.cluster`` uses them; ``bot.store.postgres_store`` keeps them; docs/scaling.md
says how they work together)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


def shard_key(source_id: str) -> int:
    """A stable 31-bit hash of a source id: shards will be ``shard_key % shards``."""
    return int.from_bytes(hashlib.sha256(source_id.encode()).digest()[:4], "big") & 0x7FFFFFFF


def shard_lease(shard: int) -> str:
    """The name of the lease on one shard of the sources."""
    return f"shard:{shard}"


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat found: the leases this replica holds now (name: fencing token),
    how many replicas are alive, and when the next lease held by another replica expires."""

    held: dict[str, int]
    live: int
    next_expiry: datetime | None


@dataclass(frozen=True, slots=True)
class ReplicaRow:
    """One replica as the database knows it."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    leases: tuple[str, ...]
    now: datetime


class LeaseStore(Protocol):
    """A store that replicas share (PostgreSQL)."""

    #: who this replica is: every lease and row it writes is in this name
    writer: str

    def beat(
        self,
        *,
        held: Mapping[str, int],
        shards: int,
        jobs: Sequence[str],
        lease: float,
        version: str,
    ) -> Beat:
        """Say this replica is alive, renew its leases, take its share of the shards and the
        free jobs, give back what is beyond its share (one transaction)."""
        ...

    def take(
        self, names: Sequence[str], *, held: Mapping[str, int], lease: float
    ) -> dict[str, int]:
        """Of the leases ``names``, those this replica holds now (kept or newly taken)."""
        ...

    def release(self, names: Sequence[str]) -> None:
        """Give leases back at once."""
        ...

    def leave(self) -> None:
        """Give every lease back and say this replica stopped."""
        ...

    def claim_once(self, key: str) -> bool:
        """Whether this replica is the first to claim ``key``."""
        ...

    def replicas(self) -> list[ReplicaRow]:
        """Every replica the database knows, with the leases it holds."""
        ...
