"""Replicas on one PostgreSQL database: heartbeats, shard leases with fencing tokens, job and
channel leases, command claims, and the writers' lock (a real server, see tests/postgres.py).

Expiry is made to happen by moving a lease's expiry into the past in the database, as the
database's clock would: no test waits for a lease to run out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest

from bot.domain.model import SourceRecord, Validators
from bot.errors import LeaseLost, StoreLocked
from bot.store.base import Changes
from bot.store.leases import shard_key, shard_lease
from bot.store.postgres_store import PostgresStore
from tests.postgres import PostgresServer
from tests.unit.test_store_contract import row

SHARDS = 4
LEASE = 15.0
JOBS = ("job:planner",)


@pytest.fixture
def replicas(postgres_url: str) -> Iterator[list[PostgresStore]]:
    stores = [PostgresStore(postgres_url, replica=True) for _ in range(3)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


def beat(store: PostgresStore, held: dict[str, int] | None = None) -> dict[str, int]:
    return store.beat(held=held or {}, shards=SHARDS, jobs=JOBS, lease=LEASE, version="t").held


def expire(postgres: PostgresServer, url: str, holder: str) -> None:
    """Every lease ``holder`` has runs out now (by the database's clock)."""
    postgres.execute(
        url,
        "UPDATE treaty_bot.leases SET expires_at = now() - interval '1 second'"
        f" WHERE holder = '{holder}'",
    )
    postgres.execute(
        url,
        "UPDATE treaty_bot.replicas SET heartbeat_at = now() - interval '1 hour'"
        f" WHERE id = '{holder}'",
    )


@contextlib.contextmanager
def begun_before_expiry(store: PostgresStore, postgres: PostgresServer, url: str) -> Iterator[None]:
    """Within the block, the store's transactions are one that began before its writer's
    leases expired, and whose statements reach the database after they did: what a network
    that held the bytes of a transaction under way delivers once it is back. That
    transaction's ``now()`` stays at its start, before the expiry."""
    with psycopg.connect(url) as conn:  # not autocommit: the first statement begins it
        [(began,)] = conn.execute("SELECT now()").fetchall()
        assert isinstance(began, datetime)
        expiry = f"'{began.isoformat()}'::timestamptz + interval '1 millisecond'"
        postgres.execute(
            url,
            f"UPDATE treaty_bot.leases SET expires_at = {expiry} WHERE holder = '{store.writer}'",
        )
        for _ in range(1000):  # until the database's clock passes the expiry (a millisecond)
            [(past,)] = postgres.execute(url, f"SELECT clock_timestamp() > {expiry}")
            if past:
                break

        @contextlib.contextmanager
        def session() -> Iterator[psycopg.Connection[Any]]:
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.commit()

        store._session = session  # type: ignore[method-assign]
        try:
            yield
        finally:
            del store._session


def record(source_id: str, etag: str) -> SourceRecord:
    return SourceRecord(source_id, Validators(etag))


def shards_of(held: dict[str, int]) -> set[str]:
    return {n for n in held if n.startswith("shard:")}


def test_the_shards_are_shared_out_and_each_lease_has_one_holder(
    replicas: list[PostgresStore],
) -> None:
    a, b, c = replicas
    first = beat(a)
    assert shards_of(first) == {shard_lease(n) for n in range(SHARDS)}
    assert "job:planner" in first  # the first replica plans
    assert shards_of(beat(b)) == set()  # nothing free: a holds every shard, not expired
    second = beat(a, first)  # two replicas alive now: a keeps its share and gives back the rest
    assert len(shards_of(second)) == 2 and "job:planner" in second
    taken = beat(b)
    assert shards_of(taken) == shards_of(first) - shards_of(second)
    assert "job:planner" not in taken
    # a third replica: each keeps ceil(4 / 3) = 2 at most; c gets what is given back
    assert beat(c) == {}
    assert len(shards_of(beat(a, second))) == 2
    assert len(shards_of(beat(b, taken))) == 2
    holders = [shards_of(h) for h in (second, taken)]
    assert holders[0].isdisjoint(holders[1])


def test_a_dead_replicas_shards_go_to_the_others_with_a_new_fence(
    replicas: list[PostgresStore], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b, _ = replicas
    held_a = beat(a)
    held_b = beat(b)
    held_a = beat(a, held_a)
    held_b = beat(b, held_b)
    assert len(shards_of(held_a)) == len(shards_of(held_b)) == 2
    expire(postgres, postgres_url, a.writer)  # a was killed: no heartbeat since
    after = beat(b, held_b)
    assert shards_of(after) == shards_of(held_a) | shards_of(held_b)
    assert "job:planner" in after
    for name in shards_of(held_a):
        assert after[name] == held_a[name] + 1  # a new holder, a new token
    for name in shards_of(held_b):
        assert after[name] == held_b[name]  # renewed, unchanged
    # a comes back (a stall, a network cut): its beat renews nothing it lost
    assert shards_of(beat(a, held_a)) == set()


def test_the_database_refuses_a_commit_under_a_lease_that_moved_on(
    replicas: list[PostgresStore], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b, _ = replicas
    held = beat(a)
    source_id = next(f"feed-{n}" for n in range(100) if shard_key(f"feed-{n}") % SHARDS == 0)
    name = shard_lease(0)
    a.commit(Changes(sources=[record(source_id, "one")], fences={name: held[name]}))
    assert b.source(source_id).validators.etag == "one"
    expire(postgres, postgres_url, a.writer)
    taken = beat(b)
    assert taken[name] == held[name] + 1
    with pytest.raises(LeaseLost) as refused:
        a.commit(
            Changes(
                sources=[record(source_id, "late")],
                enqueue=[row(a, 1)],
                fences={name: held[name]},
            )
        )
    assert refused.value.lost == frozenset({name})
    assert name in str(refused.value)
    # nothing of the refused commit was written
    assert b.source(source_id).validators.etag == "one"
    assert b.deliveries() == []
    # the new holder writes under its own token
    b.commit(Changes(sources=[record(source_id, "two")], fences={name: taken[name]}))
    assert a.source(source_id).validators.etag == "two"


def test_a_commit_under_an_expired_lease_is_refused_even_before_another_takes_it(
    replicas: list[PostgresStore], postgres: PostgresServer, postgres_url: str
) -> None:
    a = replicas[0]
    held = beat(a)
    expire(postgres, postgres_url, a.writer)
    with pytest.raises(LeaseLost):
        a.commit(Changes(enqueue=[row(a, 1)], fences={"job:planner": held["job:planner"]}))
    assert a.deliveries() == []


def test_a_lease_is_judged_when_the_statement_runs_not_when_its_transaction_began(
    replicas: list[PostgresStore], postgres: PostgresServer, postgres_url: str
) -> None:
    """A heartbeat, a commit or a channel's take whose transaction began while the lease was
    held, but whose statements arrive after it expired, neither renews it with its old token
    nor writes under it: the lease lapsed, and whatever follows is a new holding."""
    a = replicas[0]
    held = beat(a)
    channels = a.take(["out:slack:news"], held={}, lease=LEASE)
    held = beat(a, {**held, **channels})
    assert set(held) >= {"job:planner", "out:slack:news"} and shards_of(held)
    with begun_before_expiry(a, postgres, postgres_url):
        after = beat(a, held)
    renewed = {name for name, fence in held.items() if after.get(name) == fence}
    assert renewed == set(), "renewed with the token of a lapsed lease"
    assert shards_of(after) == shards_of(held)  # free again: taken anew, with new tokens

    held = beat(a, after)
    with begun_before_expiry(a, postgres, postgres_url), pytest.raises(LeaseLost):
        a.commit(Changes(enqueue=[row(a, 1)], fences={"job:planner": held["job:planner"]}))
    assert a.deliveries() == []

    channels = a.take(["out:slack:news"], held={}, lease=LEASE)
    with begun_before_expiry(a, postgres, postgres_url):
        again = a.take(["out:slack:news"], held=channels, lease=LEASE)
    assert again["out:slack:news"] == channels["out:slack:news"] + 1


def test_channels_are_delivered_by_one_replica_at_a_time(
    replicas: list[PostgresStore], postgres: PostgresServer, postgres_url: str
) -> None:
    a, b, _ = replicas
    names = ["out:slack:news", "out:matrix:news"]
    got = a.take(names, held={}, lease=LEASE)
    assert set(got) == set(names)
    assert b.take(names, held={}, lease=LEASE) == {}
    assert a.take(names, held=got, lease=LEASE) == got  # still a's, same tokens
    a.release(["out:slack:news"])
    assert set(b.take(names, held={}, lease=LEASE)) == {"out:slack:news"}
    expire(postgres, postgres_url, a.writer)
    again = b.take(names, held={}, lease=LEASE)
    assert again["out:matrix:news"] == got["out:matrix:news"] + 1


def test_a_command_is_claimed_once(replicas: list[PostgresStore]) -> None:
    a, b, c = replicas
    assert [s.claim_once("matrix:$event1") for s in (b, a, c)] == [True, False, False]
    assert a.claim_once("matrix:$event2")


def test_replicas_are_listed_with_their_leases_and_a_clean_stop_frees_them(
    replicas: list[PostgresStore],
) -> None:
    a, b, _ = replicas
    held_a = beat(a)
    beat(b)
    listed = {r.id: r for r in a.replicas()}
    assert set(listed) == {a.writer, b.writer}
    assert set(listed[a.writer].leases) == set(held_a)
    assert listed[b.writer].leases == ()
    assert listed[a.writer].stopped_at is None
    a.leave()
    listed = {r.id: r for r in b.replicas()}
    assert listed[a.writer].stopped_at is not None and listed[a.writer].leases == ()
    # b is alone now: everything is free, so its next beat takes it all at once
    assert shards_of(beat(b)) == {shard_lease(n) for n in range(SHARDS)}


def test_fewer_shards_configured_frees_the_ones_beyond(replicas: list[PostgresStore]) -> None:
    a = replicas[0]
    held = beat(a)
    fewer = a.beat(held=held, shards=2, jobs=JOBS, lease=LEASE, version="t").held
    assert shards_of(fewer) == {shard_lease(0), shard_lease(1)}


def test_once_and_replicas_do_not_write_at_the_same_time(postgres_url: str) -> None:
    replica = PostgresStore(postgres_url, replica=True)
    try:
        other = PostgresStore(postgres_url, replica=True)  # replicas share the database
        other.close()
        with pytest.raises(StoreLocked) as refused:
            PostgresStore(postgres_url, sole_writer=True)
        assert "replicas run on this database" in str(refused.value)
    finally:
        replica.close()
    once = PostgresStore(postgres_url, sole_writer=True)
    try:
        with pytest.raises(StoreLocked) as waiting:
            PostgresStore(postgres_url, replica=True)
        assert "`treaty-bot once` or `migrate`" in str(waiting.value)
    finally:
        once.close()
