"""The Slack transport: the real slack-bolt and slack_sdk code against a stand-in for Slack.

The stand-in (``slack_standin.py``) runs on loopback in the test's event loop. Every wait is
for a state of the stand-in or an event the test controls, with a deadline that only turns a
hang into a failure; a check that something did *not* happen is made after something later
has happened (the answer to a later command), never after a sleep. Time-dependent behaviour
(pacing, ``Retry-After``) runs on a fake clock the test drives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot.domain.model import Alert, AlertId, ChannelName
from bot.domain.text import Bullets, Rich, Span, bold, italic, link, para
from bot.errors import DeliveryError
from bot.transports.base import Answer, Inbound
from bot.transports.slack import (
    APOLOGY,
    MAX_BLOCKS,
    MAX_BLOCKS_CHARS,
    MAX_SECTION,
    MAX_TEXT,
    METADATA_EVENT,
    SlackTimeouts,
    SlackTransport,
)
from tests.integration.slack_standin import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    Ack,
    SlackStandIn,
    SlashCommand,
    post_signed,
    sign,
)

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "slack"
WAIT = 30.0

CHANNELS = {
    "alerts": "C0ALERTS",
    "news": "C0NEWS",
    "outside": "C0OUTSIDE",  # the bot was never invited
    "archive": "C0ARCHIVE",  # archived
    "gone": "C0GONE",  # no such channel (or private without the bot)
}

FAST = SlackTimeouts(
    request=10.0, start=10.0, rate_limit_budget=120.0, rate_limit_retries=5, stop_grace=2.0
)


# ----------------------------------------------------------------------------- helpers


def make_alert(
    body: Rich = (),
    *,
    alert_id: str = "news:un-news:1a2b3c4d",
    title: str = "Ad Hoc Committee adopts the draft convention",
    url: str | None = "https://news.un.org/en/story/2024/08/1153076",
    text: str = "UN News · Ad Hoc Committee adopts the draft convention",
) -> Alert:
    return Alert(
        kind="news",
        id=AlertId(alert_id),
        channels=(ChannelName("alerts"),),
        source="un-news",
        title=title,
        url=url,
        text=text,
        at=datetime(2024, 8, 8, 16, 2, tzinfo=UTC),
        body=body,
    )


def key_of(alert: Alert, channel: str = "alerts") -> str:
    return f"{alert.id}|{channel}|slack"


class Commands:
    """The command handler the transport calls: records, optionally waits, answers."""

    def __init__(self) -> None:
        self.received: list[Inbound] = []
        self.finished = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None
        self.fail = False
        self.body: Rich = (para("The next session opens on ", bold("29 July"), "."),)

    async def __call__(self, inbound: Inbound) -> Answer:
        self.received.append(inbound)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the command engine broke")
        self.finished += 1
        share = "share" in inbound.text.split()
        return Answer(f"Answer to {inbound.text}", self.body, share=share)

    @property
    def texts(self) -> list[str]:
        return [inbound.text for inbound in self.received]


class FakeTime:
    """A monotonic clock and a ``sleep`` the test drives: every sleep is recorded, advances the
    clock, and waits for ``gate`` when one is set."""

    def __init__(self) -> None:
        self.now = 1_000.0
        self.requested: list[float] = []
        self.gate: asyncio.Event | None = None
        self.sleeping = asyncio.Event()

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        self.sleeping.set()
        if self.gate is not None:
            await self.gate.wait()
        self.now += seconds


Make = Callable[..., SlackTransport]


@pytest.fixture(autouse=True)
def no_secret_is_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test runs with DEBUG logging and ends by checking that no secret was logged."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        message = record.getMessage()
        for secret in (BOT_TOKEN, APP_TOKEN, SIGNING_SECRET):
            assert secret not in message, f"a secret reached the log: {record.name}"


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    async with SlackStandIn() as standin:
        standin.add_channel("C0ALERTS", "treaty-alerts")
        standin.add_channel("C0NEWS", "treaty-news")
        standin.add_channel("C0OUTSIDE", "elsewhere", member=False)
        standin.add_channel("C0ARCHIVE", "old-alerts", archived=True)
        yield standin


@pytest.fixture
def commands() -> Commands:
    return Commands()


@pytest.fixture
async def make_transport(slack: SlackStandIn) -> AsyncIterator[Make]:
    made: list[SlackTransport] = []

    def make(**overrides: Any) -> SlackTransport:
        args: dict[str, Any] = {
            "bot_token": BOT_TOKEN,
            "app_token": APP_TOKEN,
            "channels": CHANNELS,
            "api_url": slack.api_url,
            "min_interval": 0.0,
            "timeouts": FAST,
        }
        args.update(overrides)
        transport = SlackTransport(**args)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.stop()


@pytest.fixture
async def started(make_transport: Make, commands: Commands, slack: SlackStandIn) -> SlackTransport:
    """A transport in Socket Mode, connected."""
    transport = make_transport()
    await transport.start(commands)
    await slack.wait_connected()
    return transport


@dataclass(frozen=True, slots=True)
class Acked:
    """Slack's view of the acknowledgement: the HTTP answer, or the Socket Mode ack."""

    status: int
    payload: Any


class Driver(Protocol):
    mode: str
    transport: SlackTransport

    async def command(self, command: SlashCommand, *, retry: int | None = None) -> Acked: ...


class SocketDriver:
    mode = "socket"

    def __init__(self, slack: SlackStandIn, transport: SlackTransport) -> None:
        self.slack = slack
        self.transport = transport

    async def command(self, command: SlashCommand, *, retry: int | None = None) -> Acked:
        ack: Ack = await self.slack.send_command(command, retry_attempt=retry)
        return Acked(200, ack.payload)


class HttpDriver:
    mode = "http"

    def __init__(self, session: aiohttp.ClientSession, url: str, transport: SlackTransport) -> None:
        self.session = session
        self.url = url
        self.transport = transport

    async def command(self, command: SlashCommand, *, retry: int | None = None) -> Acked:
        reply = await post_signed(self.session, self.url, form=command.payload, retry_num=retry)
        return Acked(reply.status, reply.text or None)


@contextlib.asynccontextmanager
async def serve_http(transport: SlackTransport, commands: Commands) -> AsyncIterator[HttpDriver]:
    """Start ``transport`` in HTTP mode behind an aiohttp server of its own (as bot/web.py)."""
    app = web.Application()
    transport.mount(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        await transport.start(commands)
        async with aiohttp.ClientSession() as session:
            yield HttpDriver(session, f"http://127.0.0.1:{port}/slack/events", transport)
        await transport.stop()
    finally:
        await runner.cleanup()


@pytest.fixture
async def http_bot(make_transport: Make, commands: Commands) -> AsyncIterator[HttpDriver]:
    transport = make_transport(mode="http", app_token=None, signing_secret=SIGNING_SECRET)
    async with serve_http(transport, commands) as driver:
        yield driver


@pytest.fixture(params=["socket", "http"])
async def driver(
    request: pytest.FixtureRequest,
    slack: SlackStandIn,
    make_transport: Make,
    commands: Commands,
) -> AsyncIterator[Driver]:
    """The bot as Slack reaches it, in either mode."""
    if request.param == "socket":
        transport = make_transport()
        await transport.start(commands)
        await slack.wait_connected()
        yield SocketDriver(slack, transport)
        return
    transport = make_transport(mode="http", app_token=None, signing_secret=SIGNING_SECRET)
    async with serve_http(transport, commands) as http:
        yield http


# Everything in mrkdwn between < and > is a control sequence; ours are links only.
CONTROL = re.compile(r"<([^<>]*)>")
LINK = re.compile(r"^(https?://[^\s|<>]+)\|([^<>]*)$")


def control_sequences(text: str) -> list[str]:
    return CONTROL.findall(text)


def assert_inert(text: str) -> None:
    """``text`` (mrkdwn) can mention nobody: every control sequence is a plain http(s) link
    whose label is not a different address."""
    for inner in control_sequences(text):
        match = LINK.match(inner)
        assert match, f"a live control sequence <{inner}> in {text!r}"
        url, label = match.groups()
        if label.startswith(("http://", "https://")):
            assert label == url, f"a disguised link <{inner}>"
    for raw in ("<!", "<@", "<#"):
        assert raw not in text
    assert not re.search(r"@(channel|here|everyone)\b", text)  # "@\u2060here" is inert


def message_texts(params: dict[str, Any]) -> list[str]:
    return [params["text"]] + [b["text"]["text"] for b in params["blocks"]]


# ----------------------------------------------------------------------------- the harness


def test_the_signer_reproduces_slacks_documented_example() -> None:
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert (
        sign("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body)
        == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    )
    other = b"text=hello+%26+<world>"
    assert sign("s3cret", "1700000000", other) == SignatureVerifier("s3cret").generate_signature(
        timestamp="1700000000", body=other
    )


# ----------------------------------------------------------------------------- commands


async def test_a_command_is_answered_to_the_asker_only(
    driver: Driver, slack: SlackStandIn, commands: Commands
) -> None:
    command = slack.slash_command("next-session", user="U0ALICE", channel="C0ALERTS")
    acked = await driver.command(command)
    assert acked == Acked(200, None)  # an empty ack; the answer follows on the response_url
    answer = await slack.wait_response(command.response)
    text = "*Answer to next-session*\nThe next session opens on *29 July*."
    assert answer == {
        "response_type": "ephemeral",
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        "unfurl_links": False,
        "unfurl_media": False,
    }
    # the trigger id goes with it (the same on a retry): replicas claim it, one answers
    assert commands.received == [
        Inbound("slack", "U0ALICE", "C0ALERTS", "next-session", f"trigger_id:{command.trigger_id}")
    ]
    if driver.mode == "socket":
        opened = slack.calls_to("apps.connections.open")
        assert [call.token for call in opened] == [APP_TOKEN]
    assert [call.token for call in slack.calls_to("auth.test")] == [BOT_TOKEN]  # once, at start


async def test_share_answers_in_the_channel(
    driver: Driver, slack: SlackStandIn, commands: Commands
) -> None:
    command = slack.slash_command("next-session share")
    await driver.command(command)
    answer = await slack.wait_response(command.response)
    assert answer["response_type"] == "in_channel"
    assert commands.texts == ["next-session share"]


async def test_answers_go_out_over_one_kept_connection_and_their_url_is_not_logged(
    driver: Driver, slack: SlackStandIn, commands: Commands, caplog: pytest.LogCaptureFixture
) -> None:
    urls = []
    for _ in range(3):
        command = slack.slash_command("next-session")
        await driver.command(command)
        await slack.wait_response(command.response)
        urls.append(slack.response_url(command.response))
    peers = [call.peer for call in slack.calls_to("response_url")]
    assert len(peers) == 3 and None not in peers
    assert len(set(peers)) == 1, f"a connection per answer: {peers}"
    # a response_url is a credential for half an hour: not in the log, even at DEBUG
    logged = [f"{r.name}: {r.getMessage()}" for r in caplog.records]
    assert logged and not [line for line in logged if any(url in line for url in urls)]


async def test_a_retried_command_is_run_once(
    driver: Driver, slack: SlackStandIn, commands: Commands
) -> None:
    command = slack.slash_command("status")
    first = await driver.command(command)
    again = await driver.command(command, retry=1)  # the same trigger_id, marked as a retry
    assert first.status == again.status == 200  # both acknowledged, or Slack tries once more
    await slack.wait_response(command.response)
    later = slack.slash_command("clauses")
    await driver.command(later)
    await slack.wait_response(later.response)
    assert commands.texts == ["status", "clauses"]
    assert len(slack.responses[command.response]) == 1


async def test_the_ack_does_not_wait_for_a_slow_answer(
    driver: Driver, slack: SlackStandIn, commands: Commands
) -> None:
    commands.gate = asyncio.Event()
    command = slack.slash_command("news")
    acked = await driver.command(command)  # Slack gives up after 3 s: this must come first
    assert acked.status == 200
    await asyncio.wait_for(commands.entered.wait(), WAIT)
    assert commands.finished == 0 and slack.responses[command.response] == []
    commands.gate.set()
    answer = await slack.wait_response(command.response)
    assert commands.finished == 1
    assert answer["blocks"][0]["text"]["text"].startswith("*Answer to news*\n")


async def test_a_failing_handler_gets_an_apology(
    started: SlackTransport, slack: SlackStandIn, commands: Commands
) -> None:
    commands.fail = True
    command = slack.slash_command("status")
    await slack.send_command(command)
    answer = await slack.wait_response(command.response)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == APOLOGY


async def test_answers_mention_nobody(
    started: SlackTransport, slack: SlackStandIn, commands: Commands
) -> None:
    commands.body = (
        para("<!channel> <!here> <!everyone> <@U123> @here"),
        para(link("https://bank.example", "https://evil.example/login")),
    )
    command = slack.slash_command("clauses <!channel>")
    await slack.send_command(command)
    answer = await slack.wait_response(command.response)
    for text in [answer["text"]] + [b["text"]["text"] for b in answer["blocks"]]:
        assert_inert(text)
    assert "&lt;!channel&gt; &lt;!here&gt;" in answer["text"]
    assert "<https://evil.example/login|https://evil.example/login>" in answer["text"]


async def test_socket_mode_reconnects_when_slack_asks(
    started: SlackTransport, slack: SlackStandIn, commands: Commands
) -> None:
    assert started.problem() is None
    await slack.send_disconnect("refresh_requested")
    await slack.wait_connected(2)
    command = slack.slash_command("help")
    await slack.send_command(command)
    await slack.wait_response(command.response)
    assert len(slack.calls_to("apps.connections.open")) == 2
    assert commands.texts == ["help"]


async def test_a_socket_mode_outage_is_reported_after_a_grace_and_recovers(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    clock = FakeTime()
    timeouts = SlackTimeouts(request=10.0, start=10.0, ping_interval=0.2, down_grace=60.0)
    transport = make_transport(monotonic=clock.monotonic, timeouts=timeouts)
    await transport.start(commands)
    await slack.wait_connected()
    assert transport.problem() is None
    reopen = slack.inject("apps.connections.open", hold_before=True, times=1_000)
    await slack.drop_sockets()
    await slack.wait_until(lambda: reopen.waiting > 0, "a reconnection attempt")
    assert transport.problem() is None  # Slack drops connections now and then
    clock.now += 61
    assert "down for 61 s" in (transport.problem() or "")
    reopen.release()
    await slack.wait_connected(2)
    command = slack.slash_command("help")
    await slack.send_command(command)
    await slack.wait_response(command.response)
    assert transport.problem() is None


# ----------------------------------------------------------------------------- HTTP mode


def _bad_requests() -> list[Any]:
    """Forgeries; a timestamp is given as an offset from the moment the request is made."""
    return [
        pytest.param({"signature": "v0=" + "0" * 64}, id="wrong-signature"),
        pytest.param({"secret": "another-apps-secret"}, id="other-secret"),
        pytest.param({"offset": -6 * 60}, id="stale-timestamp"),
        pytest.param({"offset": 6 * 60}, id="future-timestamp"),
        pytest.param({"omit": ("X-Slack-Signature",)}, id="no-signature"),
        pytest.param({"omit": ("X-Slack-Request-Timestamp",)}, id="no-timestamp"),
        pytest.param({"omit": ("X-Slack-Signature", "X-Slack-Request-Timestamp")}, id="no-headers"),
        pytest.param({"signed_body": b"text=help"}, id="tampered-body"),
    ]


@pytest.mark.parametrize("forgery", _bad_requests())
async def test_http_mode_refuses_what_slack_did_not_sign(
    http_bot: HttpDriver,
    slack: SlackStandIn,
    commands: Commands,
    forgery: dict[str, Any],
) -> None:
    driver = http_bot
    forged = slack.slash_command("reload")
    forgery = dict(forgery)
    if "offset" in forgery:  # relative to now, not to when the tests were collected
        forgery["timestamp"] = int(time.time()) + forgery.pop("offset")
    reply = await post_signed(driver.session, driver.url, form=forged.payload, **forgery)
    assert reply.status == 401
    genuine = slack.slash_command("help")
    assert (await driver.command(genuine)).status == 200
    await slack.wait_response(genuine.response)
    assert commands.texts == ["help"]  # the forged command never ran
    assert slack.responses[forged.response] == []


async def test_http_mode_ssl_check_runs_no_command(
    http_bot: HttpDriver, slack: SlackStandIn, commands: Commands
) -> None:
    driver = http_bot
    probe = slack.slash_command("reload")
    form = {**probe.payload, "ssl_check": "1"}
    reply = await post_signed(
        driver.session,
        driver.url,
        form=form,
        omit=("X-Slack-Signature", "X-Slack-Request-Timestamp"),
    )
    assert (reply.status, reply.text) == (200, "")  # Slack's certificate check, answered empty
    genuine = slack.slash_command("help")
    await driver.command(genuine)
    await slack.wait_response(genuine.response)
    assert commands.texts == ["help"]


async def test_http_mode_is_connected_once_started(
    make_transport: Make, commands: Commands
) -> None:
    transport = make_transport(mode="http", app_token=None, signing_secret=SIGNING_SECRET)
    assert transport.problem() == "not connected to Slack"
    await transport.start(commands)
    assert transport.problem() is None
    await transport.stop()
    assert transport.problem() is not None
    await transport.stop()  # idempotent


# ----------------------------------------------------------------------------- start-up


async def test_a_refused_bot_token_is_a_clear_permanent_error(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    wrong = "xoxb-9999-8888-notthetoken"
    transport = make_transport(bot_token=wrong)
    with pytest.raises(DeliveryError) as caught:
        await transport.start(commands)
    err = caught.value
    assert err.permanent
    assert "Slack rejected SLACK_BOT_TOKEN: invalid_auth" in str(err)
    assert wrong not in str(err) and wrong not in repr(transport)
    assert "SLACK_BOT_TOKEN" in (transport.problem() or "")
    assert slack.calls_to("apps.connections.open") == []  # nothing else was tried


async def test_a_refused_app_token_is_a_clear_permanent_error(
    make_transport: Make, commands: Commands, slack: SlackStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "xapp-1-A0TREATY-4444-notthetoken"
    transport = make_transport(app_token=wrong)
    with pytest.raises(DeliveryError) as caught:
        await transport.start(commands)
    assert caught.value.permanent
    assert "Slack rejected SLACK_APP_TOKEN: invalid_auth" in str(caught.value)
    assert wrong not in str(caught.value)
    assert all(wrong not in record.getMessage() for record in caplog.records)
    assert slack.sockets == []


def test_tokens_of_the_wrong_kind_are_refused_without_showing_them() -> None:
    with pytest.raises(DeliveryError) as caught:
        SlackTransport(bot_token=BOT_TOKEN, app_token=BOT_TOKEN, channels=CHANNELS)
    assert caught.value.permanent and "SLACK_APP_TOKEN" in str(caught.value)
    assert BOT_TOKEN not in str(caught.value)
    with pytest.raises(DeliveryError) as caught:
        SlackTransport(bot_token=APP_TOKEN, app_token=APP_TOKEN, channels=CHANNELS)
    assert "SLACK_BOT_TOKEN" in str(caught.value) and APP_TOKEN not in str(caught.value)
    with pytest.raises(DeliveryError) as caught:
        SlackTransport(bot_token=BOT_TOKEN, mode="http", channels=CHANNELS)
    assert "SLACK_SIGNING_SECRET" in str(caught.value)


# ----------------------------------------------------------------------------- alerts

NEWS_BODY: Rich = (
    para(
        bold("UN News"),
        " · ",
        link(
            "Ad Hoc Committee adopts the draft convention & opens it for signature",
            "https://news.un.org/en/story/2024/08/1153076?utm_source=feed&lang=en",
        ),
    ),
    para(italic("Published 8 Aug 2024 18:02 CEST · matched: cybercrime, convention")),
    para(
        "States agreed the text by consensus after three years of talks; it goes to the "
        "General Assembly <before> signature in Hanoi."
    ),
)


async def test_an_alert_is_posted_as_in_the_golden_file(
    started: SlackTransport, slack: SlackStandIn
) -> None:
    alert = make_alert(NEWS_BODY)
    await started.send(ChannelName("alerts"), alert, key_of(alert))
    [call] = slack.calls_to("chat.postMessage")
    assert call.token == BOT_TOKEN
    params = call.params
    golden = GOLDEN / "alert_news.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(json.dumps(params, indent=2, ensure_ascii=False) + "\n")
    assert params == json.loads(golden.read_text())
    assert "link_names" not in params and "parse" not in params
    [message] = slack.messages("C0ALERTS")
    assert message.metadata == {
        "event_type": METADATA_EVENT,
        "event_payload": {"alert_id": str(alert.id), "key": key_of(alert)},
    }


INJECTIONS = (
    "Vote today <!channel> <!here> <!everyone> <@U123> <!subteam^S042|@delegates> <#C0ALL> "
    "<https://evil.example|https://bank.example> &lt;!channel&gt; @here @channel"
)


async def test_mentions_in_alerts_are_inert(started: SlackTransport, slack: SlackStandIn) -> None:
    rich = make_alert(
        (
            para(bold(INJECTIONS), " ", link(INJECTIONS, "https://ok.example/a")),
            para(link("https://bank.example/login", "https://evil.example/a|b>c<@U1>")),
            para(link("click", "javascript:alert(1)"), " ", Span(INJECTIONS, "code")),
            Bullets(((Span(INJECTIONS),),)),
        ),
        alert_id="news:evil:1",
    )
    plain = make_alert((), alert_id="news:evil:2", title=INJECTIONS, text=INJECTIONS)
    for alert in (rich, plain):
        await started.send(ChannelName("alerts"), alert, key_of(alert))
    for call in slack.calls_to("chat.postMessage"):
        assert call.status == 200
        texts = message_texts(call.params)
        for text in texts:
            assert_inert(text)
        joined = "\n".join(texts)
        assert "&lt;!channel&gt; &lt;!here&gt; &lt;!everyone&gt; &lt;@U123&gt;" in joined
        assert "&amp;lt;!channel&amp;gt;" in joined  # an entity in the feed shows as typed
        assert "&lt;https://evil.example|https://bank.example&gt;" in joined
        assert "@\u2060here @\u2060channel" in joined
    first = "\n".join(message_texts(slack.calls_to("chat.postMessage")[0].params))
    # the disguised link shows its real target, with | and > in the URL neutralised
    assert (
        "<https://evil.example/a%7Cb%3Ec%3C@U1%3E|https://evil.example/a%7Cb%3Ec%3C@U1%3E>" in first
    )
    assert "javascript" not in first  # no link was made of it, only its text shown


async def test_a_long_alert_is_cut_within_slacks_limits_with_its_link(
    started: SlackTransport, slack: SlackStandIn
) -> None:
    url = "https://www.unodc.org/unodc/en/cybercrime/ad_hoc_committee/home"
    huge = "All the words of the convention, again and again. " * 2_000  # 100 kB
    body: Rich = (
        para(bold("UNODC"), " · ", link("A very long title " * 400, url)),
        para(huge),
        Bullets(
            tuple(
                (link(f"Statement {i} " * 30, f"https://example.org/statement/{i}"),)
                for i in range(60)
            )
        ),
    )
    alert = make_alert(body, url=url, text=huge)
    await started.send(ChannelName("alerts"), alert, key_of(alert))
    [call] = slack.calls_to("chat.postMessage")
    assert call.status == 200  # the stand-in checks Slack's limits (invalid_blocks otherwise)
    blocks = call.params["blocks"]
    assert len(blocks) <= MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= MAX_SECTION for b in blocks)
    assert sum(len(b["text"]["text"]) for b in blocks) <= MAX_BLOCKS_CHARS
    assert len(call.params["text"]) <= MAX_TEXT
    assert blocks[0]["text"]["text"].startswith(f"*UNODC* · <{url}|A very long title")
    assert f"<{url}|" in call.params["text"]


async def test_an_alert_without_rich_body_keeps_its_link(
    started: SlackTransport, slack: SlackStandIn
) -> None:
    alert = make_alert((), text="Session AHC-8 starts tomorrow in New York")
    await started.send(ChannelName("alerts"), alert, key_of(alert))
    [call] = slack.calls_to("chat.postMessage")
    texts = [b["text"]["text"] for b in call.params["blocks"]]
    assert texts == [
        "Session AHC-8 starts tomorrow in New York\n"
        "<https://news.un.org/en/story/2024/08/1153076|https://news.un.org/en/story/2024/08/1153076>"
    ]


# ----------------------------------------------------------------------------- pacing, 429


async def test_a_429_delays_that_channel_only(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    clock = FakeTime()
    clock.gate = asyncio.Event()
    transport = make_transport(min_interval=1.0, sleep=clock.sleep, monotonic=clock.monotonic)
    await transport.start(commands)
    slack.inject("chat.postMessage", status=429, retry_after=30, channel="C0ALERTS")
    first, second = make_alert(alert_id="news:a:1"), make_alert(alert_id="news:b:1")
    waiting = asyncio.create_task(transport.send(ChannelName("alerts"), first, key_of(first)))
    await asyncio.wait_for(clock.sleeping.wait(), WAIT)  # the alerts channel waits it out
    await asyncio.wait_for(
        transport.send(ChannelName("news"), second, key_of(second, "news")), WAIT
    )
    assert not waiting.done()
    assert slack.messages("C0NEWS") != [] and slack.messages("C0ALERTS") == []
    assert clock.requested == [30.0]
    clock.gate.set()
    await asyncio.wait_for(waiting, WAIT)
    assert len(slack.messages("C0ALERTS")) == 1
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200, 200]


async def test_a_429_that_persists_is_left_to_the_outbox(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    clock = FakeTime()
    timeouts = SlackTimeouts(request=10.0, rate_limit_budget=120.0, rate_limit_retries=2)
    transport = make_transport(sleep=clock.sleep, monotonic=clock.monotonic, timeouts=timeouts)
    await transport.start(commands)
    slack.inject("chat.postMessage", status=429, retry_after=5, times=3)
    alert = make_alert()
    with pytest.raises(DeliveryError) as caught:
        await transport.send(ChannelName("alerts"), alert, key_of(alert))
    assert not caught.value.permanent and "rate limited" in str(caught.value)
    assert clock.requested == [5.0, 5.0]
    assert len(slack.calls_to("chat.postMessage")) == 3
    clock.requested.clear()
    slack.inject("chat.postMessage", status=429, retry_after=600)  # beyond the budget
    with pytest.raises(DeliveryError):
        await transport.send(ChannelName("alerts"), alert, key_of(alert))
    assert clock.requested == []  # no use waiting 10 minutes inside one send


async def test_posts_to_one_channel_are_paced(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    clock = FakeTime()
    transport = make_transport(min_interval=1.0, sleep=clock.sleep, monotonic=clock.monotonic)
    await transport.start(commands)
    for n, channel in enumerate(["alerts", "alerts", "news", "alerts"]):
        alert = make_alert(alert_id=f"news:x:{n}")
        await transport.send(ChannelName(channel), alert, key_of(alert, channel))
    assert clock.requested == [1.0, 1.0]  # the 2nd and 4th post to alerts; news never waits
    assert len(slack.messages("C0ALERTS")) == 3 and len(slack.messages("C0NEWS")) == 1


async def test_pacing_stays_under_slacks_rate_limit(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    slack.strict_rate = 3_600.0  # a 2nd post to a channel within the hour gets 429
    unpaced = make_transport(sleep=FakeTime().sleep, timeouts=SlackTimeouts(rate_limit_retries=1))
    await unpaced.start(commands)
    alerts = [make_alert(alert_id=f"news:r:{n}") for n in range(3)]
    await unpaced.send(ChannelName("news"), alerts[0], key_of(alerts[0], "news"))
    with pytest.raises(DeliveryError):  # the stand-in does enforce the limit
        await unpaced.send(ChannelName("news"), alerts[1], key_of(alerts[1], "news"))
    slack.strict_rate = 1.0  # Slack's limit: about one post a second per channel
    paced = make_transport(min_interval=1.0)  # the real clock and the default pace
    await paced.start(commands)
    for alert in alerts:
        await paced.send(ChannelName("alerts"), alert, key_of(alert))
    statuses = [
        c.status for c in slack.calls_to("chat.postMessage") if c.params["channel"] == "C0ALERTS"
    ]
    assert statuses == [200, 200, 200]


# ----------------------------------------------------------------------------- failures


async def test_a_server_error_is_transient_and_checked_before_posting_again(
    started: SlackTransport, slack: SlackStandIn
) -> None:
    slack.inject("chat.postMessage", status=500)
    alert = make_alert()
    with pytest.raises(DeliveryError) as caught:
        await started.send(ChannelName("alerts"), alert, key_of(alert))
    assert not caught.value.permanent
    await started.send(ChannelName("alerts"), alert, key_of(alert))
    assert len(slack.messages("C0ALERTS")) == 1
    order = [
        c.method for c in slack.calls if c.method in ("chat.postMessage", "conversations.history")
    ]
    assert order == ["chat.postMessage", "conversations.history", "chat.postMessage"]


async def test_a_connection_lost_after_posting_does_not_post_twice(
    started: SlackTransport, slack: SlackStandIn, make_transport: Make, commands: Commands
) -> None:
    slack.inject("chat.postMessage", drop_after=True)  # Slack posts, the answer is lost
    alert = make_alert(NEWS_BODY)
    key = key_of(alert)
    with pytest.raises(DeliveryError) as caught:
        await started.send(ChannelName("alerts"), alert, key)
    assert not caught.value.permanent
    assert len(slack.messages("C0ALERTS")) == 1
    await started.send(ChannelName("alerts"), alert, key)  # the outbox's retry
    assert len(slack.messages("C0ALERTS")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1
    [history] = slack.calls_to("conversations.history")
    assert history.params["include_all_metadata"] in ("1", "true")
    # after a restart, the outbox asks before sending a row left in "sending"
    restarted = make_transport()
    await restarted.start(commands)
    assert await restarted.was_delivered(ChannelName("alerts"), alert, key)
    other = make_alert(alert_id="news:un-news:other")
    assert not await restarted.was_delivered(ChannelName("alerts"), other, key_of(other))


async def test_a_timeout_after_posting_does_not_post_twice(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    transport = make_transport(timeouts=SlackTimeouts(request=0.5))
    await transport.start(commands)
    held = slack.inject("chat.postMessage", hold_after=True)  # done, but no answer in time
    alert = make_alert()
    with pytest.raises(DeliveryError) as caught:
        await transport.send(ChannelName("alerts"), alert, key_of(alert))
    assert not caught.value.permanent
    held.release()
    await slack.wait_answered("chat.postMessage")
    slack.inject("conversations.history", status=503)  # and the history cannot be read yet
    with pytest.raises(DeliveryError):
        await transport.send(ChannelName("alerts"), alert, key_of(alert))
    await transport.send(ChannelName("alerts"), alert, key_of(alert))
    assert len(slack.messages("C0ALERTS")) == 1
    assert len(slack.calls_to("chat.postMessage")) == 1


PERMANENT_CASES = [
    pytest.param("outside", None, "not_in_channel", "/invite @treaty_watch", id="not-in-channel"),
    pytest.param("gone", None, "channel_not_found", "/invite @treaty_watch", id="no-channel"),
    pytest.param("archive", None, "is_archived", "unarchive", id="archived"),
    pytest.param("alerts", "invalid_auth", "SLACK_BOT_TOKEN", "reinstall", id="token-revoked"),
    pytest.param("alerts", "account_inactive", "SLACK_BOT_TOKEN", "reinstall", id="inactive"),
    pytest.param("alerts", "missing_scope", "chat:write", "reinstall", id="no-scope"),
]


@pytest.mark.parametrize(("channel", "error", "names", "fix"), PERMANENT_CASES)
async def test_permanent_errors_name_the_channel_and_the_fix(
    started: SlackTransport,
    slack: SlackStandIn,
    channel: str,
    error: str | None,
    names: str,
    fix: str,
) -> None:
    if error is not None:
        slack.inject("chat.postMessage", error=error)
    alert = make_alert()
    with pytest.raises(DeliveryError) as caught:
        await started.send(ChannelName(channel), alert, key_of(alert, channel))
    message = str(caught.value)
    assert caught.value.permanent
    assert f"channel {channel}" in message and CHANNELS[channel] in message
    assert names in message and fix in message
    assert BOT_TOKEN not in message


async def test_a_channel_without_a_slack_id_is_not_reached(
    started: SlackTransport, slack: SlackStandIn
) -> None:
    assert started.reaches(ChannelName("alerts"))
    assert not started.reaches(ChannelName("ops"))
    alert = make_alert()
    with pytest.raises(DeliveryError) as caught:
        await started.send(ChannelName("ops"), alert, key_of(alert, "ops"))
    assert caught.value.permanent and "channels.ops.slack" in str(caught.value)
    assert slack.calls_to("chat.postMessage") == []


# ----------------------------------------------------------------------------- the stand-in


def test_the_stand_in_also_runs_in_a_thread_of_its_own() -> None:
    """As it must when the bot runs elsewhere (another loop here, a process in an e2e test)."""
    with SlackStandIn() as standin:
        standin.add_channel("C0ALERTS", "treaty-alerts")
        commands = Commands()

        async def bot() -> dict[str, Any]:
            transport = SlackTransport(
                bot_token=BOT_TOKEN, app_token=APP_TOKEN, channels=CHANNELS, api_url=standin.api_url
            )
            await transport.start(commands)
            try:
                await standin.wait_connected()
                command = standin.slash_command("help")
                await standin.send_command(command)
                alert = make_alert()
                await transport.send(ChannelName("alerts"), alert, key_of(alert))
                return await standin.wait_response(command.response)
            finally:
                await transport.stop()

        answer = asyncio.run(bot())
        assert answer["text"].startswith("*Answer to help*")
        [call] = standin.sync(standin.wait_for_calls("chat.postMessage"))
        assert call.status == 200 and len(standin.messages("C0ALERTS")) == 1


async def test_a_burst_of_100_alerts_to_one_channel_is_paced_in_order_once_each(
    make_transport: Make, commands: Commands, slack: SlackStandIn
) -> None:
    """Reliability 13: about one post a second, none lost, none twice, none out of order."""
    clock = FakeTime()
    transport = make_transport(min_interval=1.0, sleep=clock.sleep, monotonic=clock.monotonic)
    await transport.start(commands)
    burst = [make_alert(alert_id=f"news:burst:{n:03d}", title=f"Item {n:03d}") for n in range(100)]
    for alert in burst:
        await transport.send(ChannelName("alerts"), alert, key_of(alert))

    calls = slack.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [200] * 100  # no 429 surfaced, nothing retried
    posted = [m.metadata for m in slack.messages("C0ALERTS")]
    assert [p["event_payload"]["alert_id"] if p else None for p in posted] == [a.id for a in burst]
    assert len(clock.requested) == 99 and all(0 < s <= 1.0 for s in clock.requested)
    assert sum(clock.requested) == pytest.approx(99.0, abs=1.0)  # ~1 message/s (fake clock)


async def test_a_command_delivered_four_times_runs_once(
    driver: Driver, slack: SlackStandIn, commands: Commands
) -> None:
    """Reliability 9: Slack's first try and its three retries (HTTP ``X-Slack-Retry-Num`` 1-3
    with reason ``http_timeout``, or Socket Mode ``retry_attempt``) run the command once."""
    command = slack.slash_command("status")
    for attempt in (None, 1, 2, 3):
        assert (await driver.command(command, retry=attempt)).status == 200
    await slack.wait_response(command.response)
    later = slack.slash_command("clauses")
    await driver.command(later)
    await slack.wait_response(later.response)
    assert commands.texts == ["status", "clauses"]
    assert len(slack.responses[command.response]) == 1


@pytest.mark.parametrize("mode", ["socket", "http"])
async def test_a_clean_start_logs_no_warning(
    make_transport: Make,
    commands: Commands,
    slack: SlackStandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    # as deployed: the tokens are in the environment, where bolt also looks for them
    monkeypatch.setenv("SLACK_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("SLACK_APP_TOKEN", APP_TOKEN)
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    caplog.set_level(logging.DEBUG)
    http = mode == "http"
    transport = make_transport(
        mode=mode,
        app_token=None if http else APP_TOKEN,
        signing_secret=SIGNING_SECRET if http else None,
    )
    await transport.start(commands)
    if not http:
        await slack.wait_connected()
    assert transport.problem() is None
    noisy = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.WARNING]
    assert noisy == []
