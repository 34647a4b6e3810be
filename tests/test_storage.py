"""Choosing the store (bot.yaml's ``storage``, ``TREATY_BOT_DATABASE_URL``), the bot on
PostgreSQL, and ``treaty-bot migrate`` between the two stores, on a real PostgreSQL."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.app import App
from bot.configuration import load_config
from bot.domain.model import ChannelName
from bot.errors import StoreError
from bot.storage import read_all, state_location
from bot.store.base import Changes
from bot.store.postgres_store import PostgresStore
from bot.store.tinydb_store import TinyDBStore
from tests.conftest import REPO, ConfigFactory
from tests.postgres import PostgresServer, with_password
from tests.test_app import Troubled
from tests.unit.test_store_contract import assert_holds, every_kind, source

SECRET = "s3cr3t-Pa55"


@pytest.fixture
def secret_url(postgres: PostgresServer, postgres_url: str) -> str:
    """The test database's URL with a password in it (the embedded server trusts any)."""
    if not postgres.embedded:
        pytest.skip("the server in TREATY_BOT_TEST_DATABASE_URL may check passwords")
    return with_password(postgres_url, SECRET)


def treaty_bot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def bot_yaml(storage: str) -> str:
    return f"timezone: Europe/Vienna\nstorage: '{storage}'\nchannels: {{alerts: {{}}}}\n"


# -- choosing the store ---------------------------------------------------------------------


def test_the_environment_wins_over_bot_yaml() -> None:
    url = "postgresql://bot:pw@db/treaty"
    assert state_location("data/s.json", {}).target == "data/s.json"
    assert not state_location("data/s.json", {}).is_database
    chosen = state_location("var/s.json", {"TREATY_BOT_DATABASE_URL": url})
    assert chosen.target == url and chosen.is_database
    assert chosen.files == Path("var") and chosen.shown == "postgresql://bot:***@db/treaty"
    assert "pw" not in repr(chosen) and "pw" not in str(chosen)
    from_yaml = state_location("postgres://bot:pw@db/treaty", {})
    assert from_yaml.is_database and from_yaml.files == Path("data")
    assert from_yaml.console_journal == str(Path("data") / "treaty-bot.console")
    with pytest.raises(StoreError) as info:
        state_location("data/s.json", {"TREATY_BOT_DATABASE_URL": "hunter2-not-a-url"})
    assert "TREATY_BOT_DATABASE_URL" in str(info.value) and "hunter2" not in str(info.value)


def test_check_accepts_a_database_url_and_never_prints_its_password(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    for storage in (f"postgresql://bot:{SECRET}@db/treaty", f"postgres://bot:{SECRET}@db/t"):
        (config / "bot.yaml").write_text(bot_yaml(storage))
        done = treaty_bot("check", "--config", str(config))
        assert done.returncode == 0, done.stderr
        assert SECRET not in done.stdout + done.stderr
        assert SECRET not in repr(load_config(config).bot)
    (config / "bot.yaml").write_text(bot_yaml(f"mysql://bot:{SECRET}@db/treaty"))
    done = treaty_bot("check", "--config", str(config))
    assert done.returncode == 1
    assert "storage: unknown kind of storage 'mysql://'" in done.stderr
    assert SECRET not in done.stdout + done.stderr


# -- the bot on PostgreSQL ------------------------------------------------------------------

CLAUSE = "clauses:\n  - {{id: art-4, article: '4', title: Scope, status: {}}}\n"


async def test_the_bot_keeps_its_state_in_postgresql_and_never_shows_the_password(
    config_dir: ConfigFactory,
    secret_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    directory = config_dir(clauses=CLAUSE.format("open"))
    env = {"TREATY_BOT_DATABASE_URL": secret_url}
    fake = Troubled()
    async with App(load_config(directory), environ=env, transports={"fake": fake}) as app:
        assert app.outbox is not None and app.state.is_database
        await app.once()  # the first look remembers the clause
        (directory / "clauses.yaml").write_text(CLAUSE.format("contested"))
        assert await app.reload() == []
        await app.outbox.deliver_due()
        status = await app.ask("status")
        metrics = app.metrics.render().decode()
        app.request_stop()
        await app.run()  # logs where the state lives
    assert [c for c, _ in fake.posted] == [ChannelName("alerts")]
    # another process on the same database: nothing new, nothing posted twice
    again = Troubled()
    async with App(load_config(directory), environ=env, transports={"fake": again}) as app:
        assert app.outbox is not None
        await app.once()
        await app.outbox.deliver_due()
    assert again.posted == []
    assert not (tmp_path / "state.json").exists()  # bot.yaml's file is not used
    assert "postgresql://postgres:***@" in caplog.text
    for shown in (caplog.text, repr(status), metrics):
        assert SECRET not in shown


# -- treaty-bot migrate ---------------------------------------------------------------------


def tinydb_state(path: Path) -> Changes:
    store = TinyDBStore(path)
    changes = every_kind(store)
    store.commit(changes)
    store.close()
    return changes


def test_migrate_round_trip_keeps_every_record(
    tmp_path: Path, postgres_url: str, config_dir: ConfigFactory
) -> None:
    state = tmp_path / "state.json"
    written = tinydb_state(state)
    config = config_dir()
    there = treaty_bot("migrate", "--config", str(config), "--to", postgres_url)
    assert there.returncode == 0, there.stderr
    assert "copied 3 sources, 7 outbox rows, 3 news, 2 event listings" in there.stdout
    store = PostgresStore(postgres_url)
    assert_holds(store, written)
    store.close()
    back = tmp_path / "back" / "state.json"
    env = {"TREATY_BOT_DATABASE_URL": postgres_url}
    home = treaty_bot("migrate", "--config", str(config), "--to", str(back), env=env)
    assert home.returncode == 0, home.stderr
    assert f"to {back}" in home.stdout
    original, copy = TinyDBStore(state, read_only=True), TinyDBStore(back, read_only=True)
    assert read_all(copy) == read_all(original)
    assert_holds(copy, written)


def test_migrate_refuses_a_target_with_a_state_unless_forced(
    tmp_path: Path, postgres_url: str, config_dir: ConfigFactory
) -> None:
    tinydb_state(tmp_path / "state.json")
    config = config_dir()
    other = PostgresStore(postgres_url)
    other.commit(Changes(sources=[source(9)]))
    other.close()
    refused = treaty_bot("migrate", "--config", str(config), "--to", postgres_url)
    assert refused.returncode == 1 and "give --force" in refused.stderr
    forced = treaty_bot("migrate", "--config", str(config), "--to", postgres_url, "--force")
    assert forced.returncode == 0, forced.stderr
    store = PostgresStore(postgres_url)
    assert sorted(store.sources()) == ["feed-1", "feed-2", "feed-3"]  # feed-9 is gone
    store.close()
    file = tmp_path / "other.json"
    kept = TinyDBStore(file)
    kept.commit(Changes(sources=[source(9)]))
    kept.close()
    refused = treaty_bot("migrate", "--config", str(config), "--to", str(file))
    assert refused.returncode == 1 and "give --force" in refused.stderr
    forced = treaty_bot("migrate", "--config", str(config), "--to", str(file), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(TinyDBStore(file, read_only=True).sources()) == ["feed-1", "feed-2", "feed-3"]


def test_migrate_refuses_a_file_in_use_an_empty_state_and_itself(
    tmp_path: Path, postgres_url: str, config_dir: ConfigFactory
) -> None:
    config = config_dir()
    empty = treaty_bot("migrate", "--config", str(config), "--to", postgres_url)
    assert empty.returncode == 1 and "nothing to copy" in empty.stderr
    tinydb_state(tmp_path / "state.json")
    itself = treaty_bot("migrate", "--config", str(config), "--to", str(tmp_path / "state.json"))
    assert itself.returncode == 1 and "already there" in itself.stderr
    running = TinyDBStore(tmp_path / "state.json")  # a bot holds the file
    busy = treaty_bot("migrate", "--config", str(config), "--to", postgres_url)
    running.close()
    assert busy.returncode == 1 and "in use" in busy.stderr


def test_migrate_never_prints_the_password(
    tmp_path: Path, secret_url: str, config_dir: ConfigFactory
) -> None:
    tinydb_state(tmp_path / "state.json")
    done = treaty_bot("migrate", "--config", str(config_dir()), "--to", secret_url)
    assert done.returncode == 0, done.stderr
    assert "postgresql://postgres:***@" in done.stdout
    again = treaty_bot("migrate", "--config", str(config_dir()), "--to", secret_url)
    assert again.returncode == 1 and "postgresql://postgres:***@" in again.stderr
    for shown in (done.stdout, done.stderr, again.stdout, again.stderr):
        assert SECRET not in shown


async def test_replicas_share_a_database_and_once_waits_for_them(
    config_dir: ConfigFactory, secret_url: str
) -> None:
    from bot.errors import StoreLocked

    directory = config_dir()
    env = {"TREATY_BOT_DATABASE_URL": secret_url}

    def bot(**kw: bool) -> App:
        return App(load_config(directory), environ=env, transports={"fake": Troubled()}, **kw)

    async with bot(replica=True) as first, bot(replica=True) as second:
        assert first.cluster is not None and second.cluster is not None
        assert first.cluster.id != second.cluster.id
        with pytest.raises(StoreLocked) as refused:
            async with bot():  # treaty-bot once writes without leases
                pass
        assert "replicas run on this database" in str(refused.value)
        assert SECRET not in str(refused.value)
        # answering in the terminal and previews only read: they may run meanwhile
        async with App(load_config(directory), environ=env, dry_run=True) as preview:
            assert preview.cluster is None
            await preview.ask("help")
    # the replicas gone, once may write
    async with bot() as alone:
        assert alone.cluster is None


async def test_a_replica_answers_for_the_health_of_the_sources_it_holds(
    config_dir: ConfigFactory, postgres_url: str
) -> None:
    """A replica that holds none of the shards with sources is healthy without polling; one
    that holds them is not when they fail; one that cannot reach the database says so."""
    from datetime import UTC, datetime, timedelta

    from bot.clock import FixedClock

    directory = config_dir(feeds="feeds:\n  - {id: a, url: 'https://e.org/a', every: 10m}\n")
    env = {"TREATY_BOT_DATABASE_URL": postgres_url}
    clock = FixedClock(datetime(2026, 12, 3, 9, 0, tzinfo=UTC))

    def bot() -> App:
        config = load_config(directory)
        return App(config, environ=env, transports={"fake": Troubled()}, replica=True, clock=clock)

    async with bot() as first, bot() as second:
        assert first.cluster is not None and second.cluster is not None
        for app in (first, second, first, second):  # two heartbeats each: the shards shared
            await app.cluster.beat()
            app.supervisor.spawn("idle", app.stop_event.wait())
        owner, other = (first, second) if first.cluster.owns("a") else (second, first)
        assert owner.cluster is not None and owner.cluster.owns("a")
        clock.set(clock.now() + timedelta(minutes=31))
        assert owner.health_problems() == ["no source polled successfully in the last 3 intervals"]
        assert other.health_problems() == []
        assert other.cluster is not None
        other.cluster.failures = 3  # its heartbeats fail, and its leases ran out
        other.cluster.held = {}
        other.cluster._valid_until = 0.0
        assert other.health_problems() == [
            "cannot reach the state database (3 heartbeats failed); this replica holds no leases"
        ]


async def test_a_replica_that_does_not_plan_still_polls_faster_in_session_weeks(
    config_dir: ConfigFactory, postgres_url: str
) -> None:
    """``during_sessions`` needs the timeline's session weeks: the replica that holds a feed's
    shard is not always the one that plans, and must know them all the same."""
    from datetime import UTC, datetime, timedelta

    from bot.clock import FixedClock
    from bot.domain.model import SourceRecord
    from bot.polling import PollOutcome

    directory = config_dir(
        feeds="feeds:\n  - {id: a, url: 'https://e.org/a', every: 30m, during_sessions: 5m}\n",
        sessions="""
        sessions:
          - {id: cop-1, title: First Conference, kind: session, start: 2026-12-10, end: 2026-12-11}
        """,
    )
    env = {"TREATY_BOT_DATABASE_URL": postgres_url}
    clock = FixedClock(datetime(2026, 12, 9, 9, 0, tzinfo=UTC))  # the day before it starts

    def bot() -> App:
        config = load_config(directory)
        return App(config, environ=env, transports={"fake": Troubled()}, replica=True, clock=clock)

    async with bot() as first, bot() as second:
        assert first.cluster is not None and second.cluster is not None
        for app in (first, second):
            await app.cluster.beat()
        planner, other = (first, second) if first.cluster.planner_fences() else (second, first)
        assert other.cluster is not None and other.cluster.planner_fences() is None
        await planner.evaluate()
        assert await other.evaluate() == []  # the planner planned
        feed = other.config.feeds[0]
        unchanged = PollOutcome(feed.id, SourceRecord(feed.id), (), (), False, "not_modified")
        assert other.poller.next_delay(feed, unchanged) == timedelta(minutes=5)
        clock.set(datetime(2026, 12, 14, 9, 0, tzinfo=UTC))  # the session is over
        await other.evaluate()
        assert other.poller.next_delay(feed, unchanged) > timedelta(minutes=5)


async def test_replicas_poll_rather_than_subscribe_at_hubs(
    config_dir: ConfigFactory, postgres_url: str, tmp_path: Path
) -> None:
    """A hub calls the one public address, which may lead to any replica: replicas do not
    subscribe (their feeds are polled on schedule); one bot on its state file does."""
    directory = config_dir(
        bot=f"""
        timezone: Europe/Vienna
        storage: {tmp_path / "state.json"}
        channels: {{alerts: {{}}}}
        http: {{port: 8080, public_url: "https://bot.example.org"}}
        """
    )
    env = {"TREATY_BOT_DATABASE_URL": postgres_url}
    config = load_config(directory)
    async with App(config, environ=env, transports={"fake": Troubled()}, replica=True) as app:
        assert app.cluster is not None and not app.websub.enabled
        await app.reload()
        assert not app.websub.enabled
    async with App(config, transports={"fake": Troubled()}, replica=True) as alone:
        assert alone.cluster is None and alone.websub.enabled
