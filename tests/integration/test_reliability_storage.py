"""A full disk while the bot runs (reliability 2): the app keeps going and nothing is lost.

The store's own contract (a failed write leaves the previous file, in memory too) is tested in
``tests/unit/test_store.py``; here the ``App`` meets it: a poll whose commit fails is logged and
repeated at the next poll, and a post whose "sent" mark cannot be written is reconciled, not
posted again, once the disk has room.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.app import App
from bot.configuration import load_config
from bot.domain.model import Alert, ChannelName
from bot.errors import StoreError
from bot.transports.base import Capabilities, CommandHandler
from tests.conftest import ConfigFactory
from tests.integration.feedserver import FeedServer
from tests.integration.test_feed_polling import item, rss

OLD = item("o1", "Cybercrime convention opens for signature")
NEW = item("n1", "Cybercrime protocol adopted", link="https://e.org/n1")


class Platform:
    """Keeps what was posted, by outbox key, and can make the disk full right after a post."""

    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.after_post: Callable[[], None] | None = None

    async def start(self, on_command: CommandHandler) -> None:
        pass

    async def stop(self) -> None:
        pass

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return True

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        self.posted.append((key, alert.title))
        if self.after_post is not None:
            self.after_post()

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return any(k == key for k, _ in self.posted)


class Disk:
    """``os.replace`` (the last step of every atomic write) failing with ENOSPC while full."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        self.refused = 0
        real = os.replace

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            if self.full:
                self.refused += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            real(src, dst)

        monkeypatch.setattr(os, "replace", replace)


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


async def test_a_poll_that_cannot_be_written_is_repeated_and_alerts_once(
    config_dir: ConfigFactory,
    server: FeedServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    server.serve("/feed.xml", rss(OLD))
    directory = config_dir(
        feeds=f'feeds:\n  - {{id: news, url: "{server.url("/feed.xml")}", match: [cybercrime]}}\n'
    )
    config = load_config(directory)
    (feed,) = config.feeds
    platform = Platform()
    disk = Disk(monkeypatch)
    state = tmp_path / "state.json"
    async with App(config, transports={"fake": platform}) as app:
        await app.once()  # the first poll remembers what exists
        assert app.outbox is not None
        on_disk = state.read_bytes()
        server.serve("/feed.xml", rss(NEW, OLD))

        disk.full = True
        with caplog.at_level(logging.ERROR, logger="bot.app"):
            await app.poller.job(feed)  # the scheduler's job: it must not raise
        assert disk.refused >= 1
        assert "could not record a poll" in caplog.text
        assert state.read_bytes() == on_disk  # the previous state, whole
        await app.outbox.deliver_due()
        assert platform.posted == []  # nothing queued that is not on disk

        disk.full = False
        await app.poller.job(feed)  # the next turn of the job
        await app.outbox.deliver_due()
        await app.poller.job(feed)
        await app.outbox.deliver_due()

    assert [title for _, title in platform.posted] == ["Cybercrime protocol adopted"]


async def test_a_sent_mark_that_cannot_be_written_is_reconciled_not_posted_again(
    config_dir: ConfigFactory, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.serve("/feed.xml", rss(OLD))
    directory = config_dir(
        feeds=f'feeds:\n  - {{id: news, url: "{server.url("/feed.xml")}", match: [cybercrime]}}\n'
    )
    config = load_config(directory)
    platform = Platform()
    disk = Disk(monkeypatch)
    async with App(config, transports={"fake": platform}) as app:
        await app.once()
        assert app.outbox is not None and app.store is not None
        server.serve("/feed.xml", rss(NEW, OLD))

        def fill_the_disk() -> None:
            disk.full = True

        platform.after_post = fill_the_disk  # the post succeeds, writing "sent" does not
        # `once` may give up on the round (StoreError); what matters is what happens next
        with contextlib.suppress(StoreError):
            await app.once()
        assert len(platform.posted) == 1
        assert disk.refused == 1
        platform.after_post = None
        disk.full = False
        await app.outbox.deliver_due()  # as the delivery loop would, a little later
        await app.once()
        assert await app.store.deliveries() == []

    assert [title for _, title in platform.posted] == ["Cybercrime protocol adopted"]
    async with App(config, transports={"fake": platform}) as restarted:
        await restarted.once()  # and after a restart
    assert len(platform.posted) == 1
