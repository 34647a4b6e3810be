"""What only the PostgreSQL store does: several processes on one database, a connection that
comes back, and a URL whose password is never shown. The contract both stores keep is tested
in test_store_contract.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from bot.domain.model import FeedState, SourceHealth, SourceRecord
from bot.errors import StoreError
from bot.store import postgres_store
from bot.store.base import Changes, DeliveryUpdate
from bot.store.postgres_store import PostgresStore, shard_key
from bot.store.urls import is_database_url, masked, scrub
from tests.postgres import PostgresServer, with_database, with_password
from tests.unit.test_store_contract import row, source

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://bot:pw@db.example.org/treaty", "postgresql://bot:***@db.example.org/treaty"),
        ("postgres://bot:p%40ss@db:5433/t?sslmode=require", "postgres://bot:***@db:5433/t?sslmode=require"),
        ("postgresql://bot@db/t", "postgresql://bot@db/t"),
        ("postgresql://bot:@/t?host=/tmp/s", "postgresql://bot:@/t?host=/tmp/s"),
        ("postgresql:///t?user=bot&password=pw&host=/tmp", "postgresql:///t?user=bot&password=***&host=/tmp"),
        ("postgresql://b:pw@h1:5432,h2:5433/t?PassWord=x", "postgresql://b:***@h1:5432,h2:5433/t?PassWord=***"),
        ("data/treaty-bot.json", "data/treaty-bot.json"),
    ],
)  # fmt: skip
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    assert masked(url) == shown
    assert is_database_url(url) == (not url.startswith("data/"))


def test_scrub_removes_the_password_however_it_is_written() -> None:
    url = "postgresql://bot:p%40ss@db/t"
    text = f"invalid dsn: {url} (password p@ss, p%40ss)"
    assert scrub(text, url) == "invalid dsn: postgresql://bot:***@db/t (password ***, ***)"


@pytest.fixture
def secret_url(postgres: PostgresServer, postgres_url: str) -> str:
    """The test database's URL with a password in it (the embedded server trusts any)."""
    if SECRET in postgres_url:
        return postgres_url
    if not postgres.embedded:
        pytest.skip("the server in TREATY_BOT_TEST_DATABASE_URL may check passwords")
    return with_password(postgres_url, SECRET)


@pytest.fixture
def stores() -> Iterator[list[PostgresStore]]:
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        store.close()


def test_the_password_reaches_no_log_line_message_or_name(
    secret_url: str, stores: list[PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = PostgresStore(secret_url)
    stores.append(store)
    store.commit(Changes(sources=[source(1)], enqueue=[row(store, 1)]))
    assert store.source("feed-1") == source(1)
    assert SECRET not in store.location and "***" in store.location
    assert SECRET not in repr(store)
    with pytest.raises(StoreError) as info:
        PostgresStore(with_database(secret_url, "no_such_database"))
    assert SECRET not in str(info.value) and "no_such_database" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(StoreError) as info:
        PostgresStore(f"postgresql://bot:{SECRET}@/t?host=/nonexistent&connect_timeout=2")
    assert SECRET not in str(info.value) and "cannot connect" in str(info.value)
    assert "migrated" in caplog.text  # the store did log, and named where
    for record in caplog.records:
        assert SECRET not in record.getMessage()


def test_processes_sharing_a_database_enqueue_a_key_once(
    postgres_url: str, stores: list[PostgresStore]
) -> None:
    one, two = PostgresStore(postgres_url), PostgresStore(postgres_url)
    stores += [one, two]
    first = row(one, 1)
    one.commit(Changes(enqueue=[first]))
    assert not two.has_delivery(first.key)  # it learns of rows it did not write when enqueued
    two.commit(Changes(enqueue=[replace(first, seq=two.next_seq(), attempts=7)]))
    assert two.has_delivery(first.key)
    assert one.deliveries() == two.deliveries() == [first]
    two.commit(Changes(deliveries=[DeliveryUpdate(first.key, "sent", NOW)]))
    [sent] = one.deliveries(("sent",))
    assert sent.key == first.key and sent.sent_at == NOW
    one.commit(Changes(sources=[source(1)]))
    assert two.source("feed-1") == source(1)
    three = PostgresStore(postgres_url)
    stores.append(three)
    assert three.next_seq() > first.seq


def test_seen_items_replaced_meanwhile_fail_that_read_alone(
    postgres_url: str, stores: list[PostgresStore]
) -> None:
    one, two = PostgresStore(postgres_url), PostgresStore(postgres_url)
    stores += [one, two]
    one.commit(Changes(sources=[source(1, seen=4), source(2)]))
    stale = two.source("feed-1")  # its keys not read yet
    one.commit(Changes(sources=[source(1, seen=6)]))
    with pytest.raises(StoreError, match="changed since its record was read"):
        dict(stale.feed.seen)
    assert two.source("feed-1") == source(1, seen=6)
    assert two.source("feed-2") == source(2)


def test_a_lost_connection_is_replaced(
    postgres: PostgresServer, postgres_url: str, stores: list[PostgresStore]
) -> None:
    store = PostgresStore(postgres_url)
    stores.append(store)
    store.commit(Changes(sources=[source(1)]))
    # the server ends every connection of this database (a restart, a failover)
    postgres.execute(
        postgres_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    store.commit(Changes(sources=[replace(source(1), health=SourceHealth(failures=1))]))
    assert store.source("feed-1").health.failures == 1


def test_a_preview_of_a_database_never_used_leaves_it_empty(
    postgres: PostgresServer, postgres_url: str
) -> None:
    preview = PostgresStore(postgres_url, read_only=True)
    preview.commit(Changes(sources=[SourceRecord("feed-1", feed=FeedState(True))]))
    assert preview.source("feed-1").feed.initialized
    preview.close()
    preview.close()  # idempotent
    assert postgres.execute(postgres_url, "SELECT to_regnamespace('treaty_bot')") == [(None,)]


def test_rows_carry_what_leases_will_need(
    postgres: PostgresServer, postgres_url: str, stores: list[PostgresStore]
) -> None:
    store = PostgresStore(postgres_url)
    stores.append(store)
    store.commit(Changes(sources=[source(1)], enqueue=[row(store, 1)]))
    [(shard, fence, writer)] = postgres.execute(
        postgres_url, "SELECT shard_key, fence, written_by FROM treaty_bot.sources"
    )
    assert shard == shard_key("feed-1") == shard_key("feed-1") and 0 <= shard < 2**31
    assert (fence, writer) == (0, store.writer)
    assert postgres.execute(postgres_url, "SELECT fence, written_by FROM treaty_bot.outbox") == [
        (0, store.writer)
    ]
    versions = postgres.execute(postgres_url, "SELECT version FROM treaty_bot.schema_version")
    assert versions == [(v,) for v in range(1, postgres_store.SCHEMA + 1)]
