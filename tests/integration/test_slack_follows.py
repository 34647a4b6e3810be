"""Follows and the App Home tab on Slack: the real app, slack-bolt and slack_sdk against the
stand-in, in Socket Mode and in HTTP mode (every request signed as Slack signs it).

A person follows a clause with ``/treaty follow``; the clause changes; the alert reaches the
channel and, once, that person's direct messages (``conversations.open``). Opening the Home tab
publishes the next three dates and their follows; the Unfollow button removes one and
publishes the page again.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import App
from bot.configuration import load_config
from bot.domain.follows import Follow, Person
from bot.domain.model import ChannelName
from bot.errors import DeliveryError
from bot.transports.slack import SlackTransport
from tests.integration.slack_standin import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    SignedReply,
    SlackStandIn,
    post_signed,
)
from tests.integration.test_slack import FAST, make_alert

ANN = "U0ANN"
CLAUSE = "clauses:\n  - {{id: art-24, article: '24', title: Safeguards, status: {status}}}\n"
SESSIONS = "sessions:\n" + "".join(
    f"  - {{id: s{n}, title: Session number {n}, start: 2036-0{n}-10T10:00,"
    " timezone: Europe/Vienna}\n"
    for n in range(1, 5)
)


class Slack:
    """The app as Slack reaches it: events and interactions over Socket Mode, or signed HTTP."""

    def __init__(self, standin: SlackStandIn, url: str | None) -> None:
        self.standin = standin
        self.url = url

    async def event(self, payload: dict[str, Any]) -> None:
        if self.url is None:
            await self.standin.send_envelope("events_api", payload)
            return
        async with aiohttp.ClientSession() as session:
            reply = await post_signed(session, self.url, json_body=payload)
        assert reply.status == 200, reply.text

    async def interaction(self, payload: dict[str, Any], **signing: Any) -> SignedReply | None:
        if self.url is None:
            await self.standin.send_envelope("interactive", payload)
            return None
        async with aiohttp.ClientSession() as session:
            return await post_signed(
                session, self.url, form={"payload": json.dumps(payload)}, **signing
            )

    async def command(self, text: str, user: str = ANN) -> dict[str, Any]:
        command = self.standin.slash_command(text, user=user)
        if self.url is None:
            await self.standin.send_command(command)
        else:
            async with aiohttp.ClientSession() as session:
                reply = await post_signed(session, self.url, form=command.payload)
            assert reply.status == 200
        return await self.standin.wait_response(command.response)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    (directory / "bot.yaml").write_text(
        textwrap.dedent(
            f"""
            timezone: Europe/Vienna
            storage: {tmp_path / "state.json"}
            channels:
              alerts: {{slack: C0ALERTS}}
              ops: {{}}
            http: {{port: 0}}
            """
        )
    )
    (directory / "clauses.yaml").write_text(CLAUSE.format(status="open"))
    (directory / "sessions.yaml").write_text(SESSIONS)
    return directory


@contextlib.asynccontextmanager
async def running(
    config: Path, standin: SlackStandIn, mode: str
) -> AsyncIterator[tuple[App, Slack]]:
    """The app with a Slack transport on the stand-in, connected in ``mode``."""
    transport = SlackTransport(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN if mode == "socket" else None,
        signing_secret=SIGNING_SECRET if mode == "http" else None,
        mode="socket" if mode == "socket" else "http",
        channels={"alerts": "C0ALERTS"},
        api_url=standin.api_url,
        min_interval=0.0,
        timeouts=FAST,
    )
    server = web.Application()
    transport.mount(server)
    runner = web.AppRunner(server, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        async with App(load_config(config), transports={"slack": transport}) as app:
            await app._start_transports(read_input=False)
            if mode == "socket":
                await standin.wait_connected()
            url = f"http://127.0.0.1:{port}/slack/events" if mode == "http" else None
            yield app, Slack(standin, url)
    finally:
        await runner.cleanup()


@pytest.fixture
async def standin() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as slack:
        slack.add_channel("C0ALERTS", "treaty-alerts")
        yield slack


def home_texts(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if isinstance(b.get("text"), dict)]


def buttons(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [b["accessory"] for b in view["blocks"] if "accessory" in b]


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_follower_gets_the_alert_directly_once_and_manages_it_from_home(
    mode: str, config: Path, standin: SlackStandIn
) -> None:
    async with running(config, standin, mode) as (app, slack):
        assert app.outbox is not None
        answer = await slack.command("follow art-24 share")
        assert answer["response_type"] == "ephemeral"  # never shared
        assert "You now follow Art. 24" in answer["text"]
        await slack.command('follow "data protection"')
        await app.evaluate()  # the first look remembers the clause
        (config / "clauses.yaml").write_text(CLAUSE.format(status="contested"))
        assert await app.reload() == []
        await app.outbox.deliver_due()
        await app.outbox.deliver_due()

        [opened] = standin.calls_to("conversations.open")
        assert opened.params["users"] == ANN
        direct = standin.direct(ANN)
        [to_ann] = standin.messages(direct)
        assert "Art. 24" in to_ann.text and "contested" in to_ann.text
        assert len(standin.messages("C0ALERTS")) == 1

        await slack.event(standin.app_home_opened(ANN))
        await standin.wait_until(lambda: len(standin.homes.get(ANN, [])) == 1, "the Home tab")
        home = standin.home(ANN)
        text = "\n".join(home_texts(home))
        assert "Session number 1" in text and "Session number 3" in text
        assert "Session number 4" not in text  # the next three dates only
        assert "Art. 24 — Safeguards" in text and "“data protection”" in text
        assert [b["value"] for b in buttons(home)] == ["clause:art-24", "words:data protection"]

        if mode == "http":  # a press Slack did not sign changes nothing
            forged = await slack.interaction(
                standin.block_actions(ANN, "unfollow", "clause:art-24"), signature="v0=00"
            )
            assert forged is not None and forged.status == 401
        await slack.interaction(standin.block_actions(ANN, "unfollow", "clause:art-24"))
        await standin.wait_until(lambda: len(standin.homes[ANN]) == 2, "the Home tab again")
        assert [b["value"] for b in buttons(standin.home(ANN))] == ["words:data protection"]
        assert app.people.of(Person("slack", ANN)) == (Follow("words", "data protection"),)

        # the Messages tab opening is no reason to publish
        await slack.event(standin.app_home_opened(ANN, tab="messages"))
        await slack.event(standin.app_home_opened("U0BO"))
        await standin.wait_until(lambda: "U0BO" in standin.homes, "the Home tab of U0BO")
        assert len(standin.homes[ANN]) == 2
        assert not buttons(standin.home("U0BO"))
    assert len(standin.messages(direct)) == 1


async def test_a_direct_message_cut_off_after_posting_is_not_posted_twice(
    standin: SlackStandIn,
) -> None:
    transport = SlackTransport(
        bot_token=BOT_TOKEN,
        app_token=APP_TOKEN,
        channels={"alerts": "C0ALERTS"},
        api_url=standin.api_url,
        min_interval=0.0,
        timeouts=FAST,
    )

    async def nobody(_: Any) -> Any:
        raise AssertionError("no command here")

    await transport.start(nobody)
    try:
        channel = ChannelName(f"dm:{ANN}")
        assert transport.reaches(channel) and not transport.reaches(ChannelName("nowhere"))
        alert = make_alert(alert_id="news:x:1")
        key = f"{alert.id}|{channel}|slack"
        standin.inject("chat.postMessage", drop_after=True)
        with pytest.raises(DeliveryError):
            await transport.send(channel, alert, key)
        assert await transport.was_delivered(channel, alert, key)
        await transport.send(channel, alert, key)  # checks the history first: already there
        assert len(standin.messages(standin.direct(ANN))) == 1
        assert len(standin.calls_to("conversations.open")) == 1  # the id is kept

        standin.deactivated.add("U0GONE")
        with pytest.raises(DeliveryError) as refused:
            await transport.send(ChannelName("dm:U0GONE"), alert, "k2")
        assert refused.value.permanent and "user_disabled" in str(refused.value)
    finally:
        await transport.stop()


def test_the_manifest_asks_for_what_direct_messages_and_the_home_tab_need() -> None:
    manifest = (
        Path(__file__).resolve().parents[2] / "docs" / "slack-app-manifest.yaml"
    ).read_text()
    for needed in ("im:write", "im:history", "app_home_opened", "home_tab_enabled: true"):
        assert needed in manifest, needed
    assert "interactivity:\n    is_enabled: true" in manifest
