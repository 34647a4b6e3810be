"""The composition root's own duties: ops alerts for transport and delivery trouble."""

from __future__ import annotations

import pytest

from bot.app import App
from bot.configuration import load_config
from bot.domain.model import Alert, ChannelName
from bot.errors import DeliveryError
from bot.transports.base import Capabilities, CommandHandler
from tests.conftest import ConfigFactory


class Troubled:
    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    def __init__(self) -> None:
        self.trouble: str | None = None
        self.posted: list[tuple[str, str]] = []
        self.refuse: set[str] = set()

    async def start(self, on_command: CommandHandler) -> None:
        pass

    async def stop(self) -> None:
        pass

    def problem(self) -> str | None:
        return self.trouble

    def reaches(self, channel: ChannelName) -> bool:
        return True

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        if channel in self.refuse:
            raise DeliveryError(f"channel_not_found: invite the bot to #{channel}", permanent=True)
        self.posted.append((channel, alert.title))

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return False


async def test_a_transport_problem_is_told_to_ops_once(config_dir: ConfigFactory) -> None:
    fake = Troubled()
    async with App(load_config(config_dir()), transports={"fake": fake}) as app:
        assert app.outbox is not None
        await app._transports_job()
        fake.trouble = "the crypto store data/matrix/crypto was lost; restore it from a backup"
        await app._transports_job()
        await app._transports_job()  # the same problem again: nothing new
        await app.outbox.deliver_due()
        assert [c for c, _ in fake.posted] == ["ops"]
        fake.trouble = None
        await app._transports_job()
        fake.trouble = "cannot reach the homeserver"
        await app._transports_job()
        await app.outbox.deliver_due()
        assert [t for _, t in fake.posted] == ["Fake needs attention", "Fake needs attention"]


async def test_a_channel_that_refuses_posts_is_told_to_ops(config_dir: ConfigFactory) -> None:
    fake = Troubled()
    fake.refuse.add(ChannelName("alerts"))
    directory = config_dir(
        clauses="clauses:\n  - {id: art-4, article: '4', title: Scope, status: open}\n"
    )
    async with App(load_config(directory), transports={"fake": fake}) as app:
        assert app.outbox is not None
        await app.evaluate()  # first look: remembers the clause
        (directory / "clauses.yaml").write_text(
            "clauses:\n  - {id: art-4, article: '4', title: Scope, status: contested}\n"
        )
        assert await app.reload() == []
        await app.outbox.deliver_due()
        await app.outbox.deliver_due()
        assert fake.posted == [("ops", "Cannot post to #alerts on Fake")]


async def test_admins_per_platform(config_dir: ConfigFactory) -> None:
    from bot.transports.base import Inbound

    directory = config_dir(
        bot="channels: {alerts: {}}\nhttp: {port: 0}\n"
        "admins: {slack: [U0ADMIN], matrix: ['@alice:example.org']}\n"
    )
    async with App(load_config(directory), transports={"fake": Troubled()}) as app:

        def asks(platform: str, user: str) -> Inbound:
            return Inbound(platform, user, None, "status")

        assert app.is_admin(asks("slack", "U0ADMIN"))
        assert not app.is_admin(asks("slack", "U0OTHER"))
        assert not app.is_admin(asks("slack", "@alice:example.org"))
        assert app.is_admin(asks("matrix", "@alice:example.org"))
        assert not app.is_admin(asks("matrix", "@mallory:example.org"))
        refused = await app.answer(asks("slack", "U0OTHER"))
        allowed = await app.answer(asks("slack", "U0ADMIN"))
        assert "admin" in refused.title.lower() and "admin" not in allowed.title.lower()


async def test_only_the_commands_about_sources_describe_every_source(
    config_dir: ConfigFactory,
) -> None:
    """With thousands of sources, describing each one is what a command's view costs: it is
    built for ``feeds`` and ``status`` alone."""
    directory = config_dir(feeds="feeds:\n  - {id: a, name: Alpha, url: 'https://e.org/a'}\n")
    async with App(load_config(directory), transports={"fake": Troubled()}) as app:
        real, reads = app.store.healths, []

        async def healths() -> object:
            reads.append(1)
            return await real()

        app.store.healths = healths  # type: ignore[method-assign]
        for command in ("next-session", "sessions", "clauses", "news", "help", "following"):
            await app.ask(command)
        assert reads == []
        assert "Alpha" in str((await app.ask("feeds")).body)
        assert "Alpha" in str((await app.ask("status")).body)
        assert len(reads) == 2


async def test_polls_are_counted_per_source_up_to_a_thousand_sources(
    config_dir: ConfigFactory,
) -> None:
    from bot.metrics import PER_SOURCE_LIMIT

    def feeds(count: int) -> str:
        return "feeds:\n" + "".join(
            f"  - {{id: f{i}, url: 'https://e.org/{i}'}}\n" for i in range(count)
        )

    directory = config_dir(feeds=feeds(PER_SOURCE_LIMIT))
    async with App(load_config(directory), transports={"fake": Troubled()}) as app:
        sample = app.metrics.registry.get_sample_value
        app.metrics.record_poll("f1", "ok", 3)
        assert sample("treatybot_polls_total", {"source": "f1", "outcome": "ok"}) == 1
        (directory / "feeds.yaml").write_text(feeds(PER_SOURCE_LIMIT + 1))
        assert await app.reload() == []
        app.metrics.record_poll("f1", "ok", 3)
        app.metrics.record_poll("f2", "ok", 2)
        assert sample("treatybot_polls_total", {"source": "*", "outcome": "ok"}) == 2
        assert sample("treatybot_items_seen_total", {"source": "*"}) == 5
        assert sample("treatybot_polls_total", {"source": "f2", "outcome": "ok"}) is None


async def test_thousands_of_sources_are_counted_and_only_the_listed_ones_described(
    config_dir: ConfigFactory,
) -> None:
    """``feeds`` and ``status`` at 2,000 sources: every source counted, the failing ones
    listed first, and no more sources described than a message lists."""
    from bot.domain.model import SourceHealth, SourceRecord
    from bot.domain.replies import FEEDS_SHOWN
    from bot.domain.text import render_plain
    from bot.store.base import Changes

    count = 2000
    directory = config_dir(
        feeds="feeds:\n"
        + "".join(
            f"  - {{id: f{i}, name: Feed {i}, url: 'https://e.org/{i}'}}\n" for i in range(count)
        )
    )
    async with App(load_config(directory), transports={"fake": Troubled()}) as app:
        broken = SourceHealth(failures=3, last_error="HTTP 500")
        await app.store.commit(
            Changes(
                sources=[SourceRecord("f1500", health=broken), SourceRecord("f7", health=broken)]
            )
        )
        described: list[str] = []
        real = app.websub.pushed

        def pushed(source_id: str) -> bool:
            described.append(source_id)
            return real(source_id)

        app.websub.pushed = pushed  # type: ignore[method-assign,assignment]
        feeds = render_plain((await app.ask("feeds")).body)
        assert f"{count} sources: {count - 2} ok, 2 failing." in feeds
        assert feeds.index("Feed 7 ") < feeds.index("Feed 1500 ") < feeds.index("Feed 0 ")
        assert f"and {count - FEEDS_SHOWN} more sources, failing ones listed first" in feeds
        assert len(described) == FEEDS_SHOWN
        status = render_plain((await app.ask("status")).body)
        assert f"Sources ({count}, 2 failing):" in status
        assert status.index("Feed 7 <") < status.index("Feed 1500 <") < status.index("Feed 0 <")
        assert "Feed 1999 <" not in status
        assert f"and {count - FEEDS_SHOWN} more sources" in status
        assert len(described) == 2 * FEEDS_SHOWN


async def test_run_stops_parser_workers_that_have_little_to_parse(
    config_dir: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The job ``run`` repeats every minute: workers that just started keep a whole period;
    then, having parsed fewer than QUIET_BELOW bodies, they stop and say so."""
    import os

    from bot.app import PARSERS_CHECK
    from bot.sources.parsing import QUIET_BELOW, THREAD_AT_MOST

    async with App(load_config(config_dir()), transports={"fake": Troubled()}) as app:
        parsers = app.ctx.parsers
        parsers.warm_up()
        assert await parsers.run(THREAD_AT_MOST + 1, os.getpid) != os.getpid()
        with caplog.at_level("INFO", logger="bot.app"):
            assert await app._parsers_job() == PARSERS_CHECK
            assert not [r for r in caplog.records if "parser processes" in r.getMessage()]
            assert await app._parsers_job() == PARSERS_CHECK
        stopped = [r.getMessage() for r in caplog.records if "parser processes" in r.getMessage()]
        assert stopped == [
            f"parser processes stopped: fewer than {QUIET_BELOW} large bodies in the last "
            f"{PARSERS_CHECK}; parsing in a thread until many arrive at once"
        ]
        assert await parsers.run(THREAD_AT_MOST - 1, os.getpid) == os.getpid()
