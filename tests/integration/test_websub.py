"""WebSub push end to end: the bot's web server on loopback, a hub written from the
specification, a feed that names the hub, and a clock that only moves when a test moves it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from bot.app import App
from bot.clock import FixedClock
from bot.configuration import load_config
from bot.configuration.models import FeedConfig
from bot.domain.text import render_plain
from bot.web import WebServer
from bot.websub import CALLBACK_PATH
from tests.conftest import ConfigFactory
from tests.integration.feedserver import FeedServer
from tests.integration.websubhub import WebSubHub

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
PATH = "/feed.xml"


def rss(hub: str, self_url: str, *guids: str) -> bytes:
    items = "".join(
        f"<item><guid>{g}</guid><title>Cybercrime update {g}</title>"
        f"<link>https://example.org/{g}</link></item>"
        for g in guids
    )
    return (
        '<?xml version="1.0"?><rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">'
        f'<channel><title>T</title><atom:link rel="hub" href="{hub}"/>'
        f'<atom:link rel="self" href="{self_url}"/>{items}</channel></rss>'
    ).encode()


@dataclass
class Rig:
    app: App
    hub: WebSubHub
    server: FeedServer
    web: WebServer
    clock: FixedClock
    stream: io.StringIO
    session: aiohttp.ClientSession
    directory: Path

    @property
    def feed(self) -> FeedConfig:
        return self.app.config.feeds[0]

    @property
    def topic(self) -> str:
        return self.server.url(PATH)

    @property
    def callback(self) -> str:
        return f"http://127.0.0.1:{self.web.bound_port}{CALLBACK_PATH}{self.feed.id}"

    def body(self, *guids: str) -> bytes:
        return rss(self.hub.url, self.topic, *guids)

    async def reload(self) -> None:
        """Apply the configuration files again (bot.yaml's public_url is a placeholder: the
        server's real address is put back)."""
        url = self.app.websub.public_url
        assert await self.app.reload() == []
        self.app.websub.public_url = url

    async def subscribe(self) -> None:
        await self.app.poller.job(self.feed)
        await self.app.websub.run_due()
        await self.hub.wait_until(lambda: self.hub.subscribed(self.topic) is not None)

    def posted(self) -> list[str]:
        """The titles posted so far (the console's JSON lines)."""
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines() if line]
        return [line["title"] for line in lines if line.get("source") == "unodc"]

    async def deliver(self) -> list[str]:
        assert self.app.outbox is not None
        await self.app.outbox.deliver_due()
        return self.posted()

    async def get(self, url: str) -> tuple[int, str]:
        async with self.session.get(url) as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def rig(config_dir: ConfigFactory, tmp_path: Path) -> AsyncIterator[Rig]:
    async with FeedServer() as server, WebSubHub() as hub, aiohttp.ClientSession() as session:
        directory = config_dir(
            bot=f"""
            timezone: Europe/Vienna
            storage: {tmp_path / "state.json"}
            channels:
              alerts: {{}}
              ops: {{}}
            http: {{port: 0, public_url: "http://127.0.0.1:1"}}
            """,
            feeds=f"""
            feeds:
              - {{id: unodc, url: "{server.url(PATH)}", every: 30m, every_max: 6h,
                  channels: [alerts]}}
            """,
        )
        server.serve(PATH, rss(hub.url, server.url(PATH), "a"))
        clock = FixedClock(NOW)
        stream = io.StringIO()
        config = load_config(directory)
        async with App(config, clock=clock, fmt="jsonl", stream=stream) as app:
            web = WebServer("127.0.0.1", 0, app.metrics, app.health_problems)
            web.serve_websub(CALLBACK_PATH, app.websub, config.bot.fetch.max_bytes)
            await web.start()
            app.websub.public_url = f"http://127.0.0.1:{web.bound_port}"
            try:
                yield Rig(app, hub, server, web, clock, stream, session, directory)
            finally:
                await web.stop()


def metric(app: App, outcome: str, source: str = "unodc") -> float:
    value = app.metrics.registry.get_sample_value(
        "treatybot_websub_deliveries_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


async def test_a_pushed_item_is_posted_once_and_not_again_by_poll_or_replay(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await rig.subscribe()
    form = rig.hub.requests[0]
    assert form["hub.mode"] == "subscribe"
    assert form["hub.topic"] == rig.topic
    assert form["hub.callback"] == rig.callback
    assert int(form["hub.lease_seconds"]) > 0
    secret = form["hub.secret"]
    assert 0 < len(secret.encode()) < 200
    assert rig.app.websub.pushed("unodc")
    assert rig.app.metrics.registry.get_sample_value("treatybot_websub_subscriptions") == 1

    body = rig.body("a", "b")
    assert await rig.hub.publish(rig.topic, body) == [202]
    assert await rig.deliver() == ["Cybercrime update b"]
    assert metric(rig.app, "accepted") == 1

    assert await rig.hub.publish(rig.topic, body) == [202]  # a replay posts nothing
    rig.server.serve(PATH, body)
    delay = await rig.app.poller.job(rig.feed)  # nor does the next poll
    assert await rig.deliver() == ["Cybercrime update b"]
    assert delay == rig.feed.ceiling  # pushed: polled only as a safety net

    answer = render_plain((await rig.app.ask("feeds")).body)
    assert "pushed by its hub" in answer
    assert all(secret not in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
async def test_every_signature_method_is_accepted(rig: Rig, method: str) -> None:
    await rig.subscribe()
    assert await rig.hub.publish(rig.topic, rig.body("a", method), method=method) == [202]
    assert await rig.deliver() == [f"Cybercrime update {method}"]
    assert metric(rig.app, "accepted") == 1


async def test_forged_and_missing_signatures_are_answered_2xx_and_ignored(rig: Rig) -> None:
    await rig.subscribe()
    body = rig.body("a", "forged")
    wrong = "sha256=" + "0" * 64
    assert await rig.hub.publish(rig.topic, body, signature=wrong) == [202]
    assert await rig.hub.publish(rig.topic, body, signature="md5=" + "0" * 32) == [202]
    assert await rig.hub.publish(rig.topic, body, signature="garbage") == [202]
    assert await rig.hub.publish(rig.topic, body, sign=False) == [202]
    sub = rig.hub.subscribed(rig.topic)
    assert sub is not None
    sub.secret = "not-the-secret"  # signed, with another secret
    assert await rig.hub.publish(rig.topic, body) == [202]
    assert await rig.deliver() == []
    assert metric(rig.app, "bad_signature") == 5
    assert metric(rig.app, "accepted") == 0


async def test_content_for_no_subscription_and_too_large_content(rig: Rig) -> None:
    await rig.subscribe()
    async with rig.session.post(rig.callback.replace("unodc", "nobody"), data=b"<rss/>") as resp:
        assert resp.status == 202
    assert metric(rig.app, "unknown", source="-") == 1
    huge = b"x" * (rig.app.config.bot.fetch.max_bytes + 1)
    async with rig.session.post(rig.callback, data=io.BytesIO(huge)) as resp:
        assert resp.status == 413
    assert metric(rig.app, "too_large") == 1
    assert await rig.deliver() == []


async def test_verifications_not_asked_for_are_refused(rig: Rig) -> None:
    # before any request: nothing is waited on
    status, confirmed = await rig.hub.verify_intent(rig.callback, "subscribe", rig.topic)
    assert (status, confirmed) == (404, False)
    await rig.subscribe()
    hub = rig.hub
    for callback, mode, topic in [
        (rig.callback, "subscribe", rig.topic),  # verified already: not waited on any more
        (rig.callback, "unsubscribe", rig.topic),  # never asked for
        (rig.callback, "subscribe", "https://elsewhere.example/feed"),
        (rig.callback.replace("unodc", "nobody"), "subscribe", rig.topic),
        (rig.callback, "bogus", rig.topic),
    ]:
        assert await hub.verify_intent(callback, mode, topic) == (404, False), (mode, topic)
    assert rig.app.websub.pushed("unodc")


async def test_a_lease_near_its_end_and_an_expired_one_are_renewed(rig: Rig) -> None:
    await rig.subscribe()
    first = rig.hub.requests[0]["hub.secret"]
    assert await rig.app.websub.run_due() <= timedelta(minutes=1)  # nothing due yet
    assert len(rig.hub.requests) == 1

    rig.clock.set(NOW + timedelta(seconds=rig.hub.lease_seconds) - timedelta(minutes=4))
    await rig.app.websub.run_due()
    await rig.hub.wait_until(lambda: len(rig.hub.verifications) == 2)
    renewal = rig.hub.requests[1]
    assert renewal["hub.mode"] == "subscribe" and renewal["hub.secret"] != first
    assert await rig.hub.publish(rig.topic, rig.body("a", "renewed")) == [202]
    assert await rig.deliver() == ["Cybercrime update renewed"]

    # the hub forgets; the lease runs out: the feed is polled again, and subscribed again
    rig.clock.set(rig.clock.now() + timedelta(hours=2))
    assert not rig.app.websub.pushed("unodc")
    await rig.app.websub.run_due()
    await rig.hub.wait_until(lambda: len(rig.hub.verifications) == 3)
    assert rig.app.websub.pushed("unodc")


async def test_a_hub_that_is_down_is_retried_while_polling_goes_on(rig: Rig) -> None:
    rig.hub.refuse = 503
    await rig.app.poller.job(rig.feed)
    await rig.app.websub.run_due()
    assert len(rig.hub.requests) == 1
    assert not rig.app.websub.pushed("unodc")
    rig.server.serve(PATH, rig.body("a", "polled"))
    delay = await rig.app.poller.job(rig.feed)
    assert delay < rig.feed.ceiling  # polled as usual
    assert await rig.deliver() == ["Cybercrime update polled"]

    await rig.app.websub.run_due()  # not before its retry time
    assert len(rig.hub.requests) == 1
    rig.clock.set(NOW + timedelta(minutes=1))
    await rig.app.websub.run_due()  # still down: the wait doubles
    assert len(rig.hub.requests) == 2
    rig.clock.set(NOW + timedelta(minutes=2))
    await rig.app.websub.run_due()
    assert len(rig.hub.requests) == 2

    rig.hub.refuse = None
    rig.clock.set(NOW + timedelta(minutes=3))
    await rig.app.websub.run_due()
    await rig.hub.wait_until(lambda: rig.hub.subscribed(rig.topic) is not None)
    assert rig.app.websub.pushed("unodc")


async def test_a_feed_removed_by_a_reload_is_unsubscribed(rig: Rig) -> None:
    await rig.subscribe()
    feeds = rig.directory / "feeds.yaml"
    original = feeds.read_text()
    feeds.write_text(original + "  - {id: other, url: 'https://example.org/x.xml'}\n")
    await rig.reload()
    await rig.app.websub.run_due()
    assert [r["hub.mode"] for r in rig.hub.requests] == ["subscribe"]  # kept

    feeds.write_text("feeds:\n  - {id: other, url: 'https://example.org/x.xml'}\n")
    await rig.reload()
    await rig.app.websub.run_due()
    await rig.hub.wait_until(lambda: rig.hub.subscribed(rig.topic) is None)
    last = rig.hub.requests[-1]
    assert last["hub.mode"] == "unsubscribe" and last["hub.topic"] == rig.topic
    assert "hub.secret" not in last
    assert rig.hub.verifications[-1].confirmed
    assert rig.app.websub.subscriptions == {}
