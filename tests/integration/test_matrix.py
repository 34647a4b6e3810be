"""The Matrix transport against a real Synapse on loopback.

A second matrix-nio client plays a coalition member (and others play a room admin and an
outsider). Every wait is for an event or a condition, with a deadline; a check that something
did *not* happen is made after something later has happened (a marker message, the answer to a
later command), never after a sleep.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    Event,
    MegolmEvent,
    RoomMessage,
    RoomMessageNotice,
    RoomSendResponse,
)

from bot.domain.model import Alert, AlertId, ChannelName
from bot.domain.text import Bullets, Span, bold, italic, link, para, plain
from bot.errors import DeliveryError
from bot.transports.base import Answer, Inbound
from bot.transports.matrix import (
    ALERT_FIELD,
    ALLOWED_TAGS,
    MAX_CONTENT_BYTES,
    MatrixTimeouts,
    MatrixTransport,
    alert_content,
    reply_content,
    safe_href,
)
from tests.integration.synapse import Account, Synapse, synapse  # noqa: F401

WAIT = 30.0  # the deadline of every wait; generous, as a slow CI machine is no failure

FAST = MatrixTimeouts(
    request=10.0,
    sync_wait=5.0,
    start=30.0,
    backoff_initial=0.1,
    backoff_max=0.5,
    rate_limit_budget=10.0,
    room_wait=10.0,
    failures_before_problem=2,
    retries=1,
)

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


# ----------------------------------------------------------------------------- helpers


class Peer:
    """A person's Matrix client: its own sync loop, every message it sees, conditions to await."""

    def __init__(self, hs: Synapse, account: Account, store: Path | None = None) -> None:
        self.account = account
        self.user_id = account.user_id
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
        config = AsyncClientConfig(
            encryption_enabled=store is not None,
            max_timeout_retry_wait_time=0.5,
            request_timeout=10,
        )
        self.client = AsyncClient(
            hs.base_url,
            account.user_id,
            device_id=account.device_id,
            store_path=str(store) if store else "",
            config=config,
        )
        self.events: list[tuple[str, Event]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Peer:
        self.client.restore_login(
            self.account.user_id, self.account.device_id, self.account.access_token
        )
        self.client.add_event_callback(self._on_event, (RoomMessage, MegolmEvent))
        self._task = asyncio.create_task(self.client.sync_forever(timeout=3000, full_state=True))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.close()
        store = self.client.store
        if store is not None:
            store.database.close()

    async def _on_event(self, room: Any, event: Event) -> None:
        self.events.append((room.room_id, event))
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, room_id: str, match: Callable[[Event], bool]) -> Event:
        """The first event in ``room_id`` that matches, waiting for it if need be."""

        def find() -> Event | None:
            return next((e for r, e in self.events if r == room_id and match(e)), None)

        try:
            async with asyncio.timeout(WAIT), self._changed:
                await self._changed.wait_for(lambda: find() is not None)
        except TimeoutError:
            pytest.fail(f"{self.user_id} saw no such event in {room_id} (sync: {self._task})")
        found = find()
        assert found is not None
        return found

    def seen(self, room_id: str, match: Callable[[Event], bool]) -> list[Event]:
        return [e for r, e in self.events if r == room_id and match(e)]

    async def send(self, room_id: str, content: dict[str, Any]) -> str:
        resp = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        assert isinstance(resp, RoomSendResponse), resp
        return str(resp.event_id)

    async def knows_devices_of(self, user_id: str) -> None:
        """Wait until this client has fetched ``user_id``'s device keys (to encrypt for them)."""

        def known() -> bool:
            return any(True for _ in self.client.device_store.active_user_devices(user_id))

        await until(known, f"{self.user_id} knows the devices of {user_id}")

    async def say(self, room_id: str, text: str) -> str:
        return await self.send(room_id, {"msgtype": "m.text", "body": text})

    async def create_room(
        self,
        invite: list[str],
        *,
        encrypted: bool = False,
        moderators: tuple[str, ...] = (),
    ) -> str:
        resp = await self.client.room_create(
            invite=invite,
            initial_state=[ENCRYPTION_STATE] if encrypted else [],
            power_level_override={"users": dict.fromkeys(moderators, 100)} if moderators else None,
        )
        assert hasattr(resp, "room_id"), resp
        return str(resp.room_id)

    async def join(self, room_id: str) -> None:
        resp = await self.client.join(room_id)
        assert hasattr(resp, "room_id"), resp


def content_of(event: Event) -> dict[str, Any]:
    content = event.source.get("content", {})
    assert isinstance(content, dict)
    return content


def reply_to(event_id: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        relation = content_of(event).get("m.relates_to", {})
        return relation.get("m.in_reply_to", {}).get("event_id") == event_id

    return match


def alert_event(alert_id: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        return content_of(event).get(ALERT_FIELD, {}).get("id") == alert_id

    return match


def make_alert(alert_id: str, *, title: str = "Third session opens", body: Any = None) -> Alert:
    return Alert(
        kind="news",
        id=AlertId(alert_id),
        channels=(ChannelName("alerts"),),
        source="unodc",
        title=title,
        url="https://example.org/s3",
        text=title,
        at=datetime(2026, 5, 1, 9, 0, tzinfo=UTC),
        body=body if body is not None else (para(link(title, "https://example.org/s3")),),
    )


def key_of(alert: Alert, channel: str = "alerts") -> str:
    return f"{alert.id}|{channel}|matrix"


class Commands:
    """The command handler: records what it is asked and answers with some formatting."""

    def __init__(self) -> None:
        self.seen: list[Inbound] = []

    @property
    def texts(self) -> list[str]:
        return [i.text for i in self.seen]

    async def __call__(self, inbound: Inbound) -> Answer:
        self.seen.append(inbound)
        return Answer(
            "Next session",
            (
                para("You asked for ", bold(inbound.text), "."),
                Bullets(((link("Programme", "https://example.org/p"),), (plain("Room <B>"),))),
            ),
        )


async def until(condition: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Poll ``condition`` until it holds, failing after ``WAIT`` seconds."""

    async def holds() -> bool:
        result = condition()
        return await result if inspect.isawaitable(result) else result

    try:
        async with asyncio.timeout(WAIT):
            while True:
                if await holds():
                    return
                await asyncio.sleep(0.05)  # polling, with the deadline above
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


async def api(
    hs: Synapse, method: str, path: str, body: dict[str, Any] | None = None, *, token: str
) -> dict[str, Any]:
    return await asyncio.to_thread(hs.request, method, path, body, token=token)


async def membership(hs: Synapse, room_id: str, user_id: str, *, token: str) -> str | None:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/state/m.room.member/{quote(user_id)}"
    try:
        state = await api(hs, "GET", path, token=token)
    except OSError:  # urllib's HTTPError: no such state event
        return None
    value = state.get("membership")
    return str(value) if value is not None else None


async def joined(hs: Synapse, room_id: str, user_id: str, *, token: str) -> bool:
    return await membership(hs, room_id, user_id, token=token) == "join"


async def raw_messages(hs: Synapse, room_id: str, *, token: str) -> list[dict[str, Any]]:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=100"
    chunk = (await api(hs, "GET", path, token=token))["chunk"]
    assert isinstance(chunk, list)
    return chunk


class TagCheck(HTMLParser):
    """Collects what a formatted_body would make a client render."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.extend((tag, name, value) for name, value in attrs)


def highlights(actions: list[Any]) -> bool:
    """Whether push rule actions highlight (ping) the user."""
    return any(
        isinstance(a, dict) and a.get("set_tweak") == "highlight" and a.get("value", True)
        for a in actions
    )


def check_sanitised(formatted: str) -> None:
    parser = TagCheck()
    parser.feed(formatted)
    assert parser.tags <= ALLOWED_TAGS
    for tag, name, value in parser.attributes:
        assert (tag, name) == ("a", "href")
        assert urlsplit(value or "").scheme in ("http", "https")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def hs(synapse: Synapse) -> Synapse:  # noqa: F811
    return synapse


@pytest.fixture
async def peers(hs: Synapse, tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Peer]]]:
    """Start people's clients (closed at the end of the test)."""
    opened: list[Peer] = []

    async def open_peer(account: Account | None = None, *, encrypted: bool = False) -> Peer:
        account = account or hs.register()
        store = tmp_path / f"store-{account.localpart}" if encrypted else None
        peer = await Peer(hs, account, store).__aenter__()
        opened.append(peer)
        return peer

    yield open_peer
    for peer in reversed(opened):
        await peer.__aexit__(None, None, None)


@pytest.fixture
async def bots(tmp_path: Path) -> AsyncIterator[Callable[..., MatrixTransport]]:
    """Make transports for the bot (all stopped at the end of the test)."""
    made: list[MatrixTransport] = []

    def make(
        hs_: Synapse,
        account: Account,
        rooms: dict[str, str],
        *,
        state_dir: Path | None = None,
        use_password: bool = False,
        **options: Any,
    ) -> MatrixTransport:
        transport = MatrixTransport(
            homeserver=hs_.base_url,
            user_id=account.user_id,
            access_token=None if use_password else account.access_token,
            password=account.password if use_password else None,
            rooms=rooms,
            state_dir=state_dir or tmp_path / "bot-state",
            timeouts=options.pop("timeouts", FAST),
            **options,
        )
        made.append(transport)
        return transport

    yield make
    for transport in reversed(made):
        await transport.stop()


@pytest.fixture
def accounts(hs: Synapse) -> Iterator[dict[str, Account]]:
    """Fresh users for this test: the bot, a member, the room's admin and an outsider."""
    yield {name: hs.register() for name in ("bot", "member", "admin", "outsider")}


async def make_room(admin: Peer, member: Peer, bot: Account, *, encrypted: bool = False) -> str:
    """A room made by ``admin`` with ``member`` in it and ``bot`` invited (as a moderator)."""
    room = await admin.create_room(
        [member.user_id, bot.user_id], encrypted=encrypted, moderators=(bot.user_id,)
    )
    await member.join(room)
    return room


# ----------------------------------------------------------------------------- commands


async def test_command_is_answered_as_a_formatted_notice_reply(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    commands = Commands()
    bot = bots(hs, accounts["bot"], {"alerts": room}, admins=[admin.user_id])
    await bot.start(commands)
    assert bot.problem() is None

    asked = await member.say(room, "!treaty next-session")
    reply = await member.wait_for(room, reply_to(asked))

    # the event id goes with it: replicas claim it so that one of them answers
    assert commands.seen == [Inbound("matrix", member.user_id, room, "next-session", asked)]
    assert isinstance(reply, RoomMessageNotice)
    assert reply.sender == bot.user_id
    content = content_of(reply)
    assert content["msgtype"] == "m.notice"
    assert content["format"] == "org.matrix.custom.html"
    assert content["formatted_body"] == (
        "<p><strong>Next session</strong></p>"
        "<p>You asked for <strong>next-session</strong>.</p>"
        '<ul><li><a href="https://example.org/p">Programme</a></li><li>Room &lt;B&gt;</li></ul>'
    )
    assert content["body"] == (
        "Next session\nYou asked for next-session.\n• Programme <https://example.org/p>\n• Room <B>"
    )
    assert content["m.mentions"] == {}
    assert content["m.relates_to"] == {"m.in_reply_to": {"event_id": asked}}

    # an admin's command carries the admin's MXID: the app checks it, not the transport
    asked = await admin.say(room, "!treaty  feeds add x ")
    await member.wait_for(room, reply_to(asked))
    assert commands.seen[-1] == Inbound("matrix", admin.user_id, room, "feeds add x", asked)


async def test_notices_edits_redactions_and_own_messages_are_not_commands(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    commands = Commands()
    bot = bots(hs, accounts["bot"], {"alerts": room})
    await bot.start(commands)

    first = await member.say(room, "!treaty first")
    await member.wait_for(room, reply_to(first))

    # another bot's notice, an edit, a redaction, a look-alike prefix, an emote
    await member.send(room, {"msgtype": "m.notice", "body": "!treaty from-a-bot"})
    await member.send(
        room,
        {
            "msgtype": "m.text",
            "body": "!treaty edited",
            "m.new_content": {"msgtype": "m.text", "body": "!treaty edited"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": first},
        },
    )
    redacted = await member.client.room_redact(room, first, reason="typo")
    assert hasattr(redacted, "event_id"), redacted
    await member.say(room, "!treatyfoo")
    await member.send(room, {"msgtype": "m.emote", "body": "!treaty waves"})
    # the bot's own account, from another client of it
    own = Peer(hs, hs.login(accounts["bot"]))
    own.client.restore_login(own.account.user_id, own.account.device_id, own.account.access_token)
    try:
        await own.say(room, "!treaty own")
    finally:
        await own.client.close()

    last = await member.say(room, "!treaty last")
    await member.wait_for(room, reply_to(last))
    assert commands.texts == ["first", "last"]


# ----------------------------------------------------------------------------- alerts


async def test_alert_arrives_once_with_formatting_and_no_mention(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    bot = bots(hs, accounts["bot"], {"alerts": room})
    await bot.start(Commands())
    alert = make_alert(
        "news:unodc:1",
        body=(
            para(bold("UNODC"), " · ", link("Third session opens", "https://example.org/s3")),
            para(italic("Published 1 May"), " · ", Span("Art. 4", "code")),
            Bullets(((plain("data & access"),), (plain("line\nbreak"),))),
        ),
    )
    key = key_of(alert)

    await bot.send(ChannelName("alerts"), alert, key)
    await bot.send(ChannelName("alerts"), alert, key)  # the outbox retrying the same row
    assert await bot.was_delivered(ChannelName("alerts"), alert, key)
    assert not await bot.was_delivered(ChannelName("alerts"), alert, "other|alerts|matrix")

    marker = make_alert("marker")
    await bot.send(ChannelName("alerts"), marker, key_of(marker))
    await member.wait_for(room, alert_event("marker"))
    [received] = member.seen(room, alert_event(alert.id))
    assert isinstance(received, RoomMessageNotice)
    content = content_of(received)
    assert content["formatted_body"] == (
        '<p><strong>UNODC</strong> · <a href="https://example.org/s3">Third session opens</a></p>'
        "<p><em>Published 1 May</em> · <code>Art. 4</code></p>"
        "<ul><li>data &amp; access</li><li>line<br>break</li></ul>"
    )
    assert content["body"] == (
        "UNODC · Third session opens <https://example.org/s3>\n"
        "Published 1 May · Art. 4\n• data & access\n• line\nbreak"
    )
    assert content["format"] == "org.matrix.custom.html"
    assert content["m.mentions"] == {}
    assert content[ALERT_FIELD] == {"id": alert.id, "key": key, "kind": "news"}


async def test_hostile_title_neither_pings_nor_injects(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    # Notices never notify by default; the member turns that rule off, so that a notice with a
    # live @room *would* highlight them (the control message below proves it does).
    await api(
        hs,
        "PUT",
        "/_matrix/client/v3/pushrules/global/override/.m.rule.suppress_notices/enabled",
        {"enabled": False},
        token=member.account.access_token,
    )
    bot = bots(hs, accounts["bot"], {"alerts": room})
    await bot.start(Commands())
    title = (
        '@room <script>alert(1)</script> <a href="javascript:alert(2)">win</a> '
        "<img src=x onerror=alert(3)> @ROOM"
    )
    hostile = make_alert(
        "news:evil:1",
        title=title,
        body=(
            para(link(title, "javascript:alert(4)")),
            para("Read ", link("more", "https://example.org/ok"), " @room"),
        ),
    )
    await bot.send(ChannelName("alerts"), hostile, key_of(hostile))
    control = await admin.send(room, {"msgtype": "m.notice", "body": "@room control"})

    async def control_highlighted() -> bool:
        found = await api(
            hs,
            "GET",
            "/_matrix/client/v3/notifications?only=highlight",
            token=member.account.access_token,
        )
        return control in {n["event"]["event_id"] for n in found["notifications"]}

    await until(control_highlighted, "the control @room highlights the member")
    found = await api(
        hs, "GET", "/_matrix/client/v3/notifications", token=member.account.access_token
    )
    actions = {n["event"]["event_id"]: n["actions"] for n in found["notifications"]}
    assert highlights(actions[control])
    event = await member.wait_for(room, alert_event(hostile.id))
    assert not highlights(actions.get(event.event_id, []))

    content = content_of(event)
    assert content["m.mentions"] == {}
    body, formatted = content["body"], content["formatted_body"]
    assert "@room" not in body.lower()
    assert "@room" not in formatted.lower()
    assert "<script" not in formatted and "<img" not in formatted
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in formatted
    check_sanitised(formatted)
    assert '<a href="https://example.org/ok">more</a>' in formatted
    assert "javascript:alert(4)" not in body and "javascript:alert(4)" not in formatted


# ----------------------------------------------------------------------------- no replays


class BehindClock:
    """A clock an hour behind the homeserver's: the time cut-off then lets everything through."""

    def now(self) -> datetime:
        return datetime.now(UTC) - timedelta(hours=1)


@pytest.mark.parametrize(
    "damage",
    [
        "none",
        "sync token deleted",
        "sync token and ledger deleted",
        "stale sync token",
        "ledger only",
        "first-sync rule only",
    ],
)
async def test_restart_answers_no_old_command(
    damage: str, hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any, tmp_path: Path
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    state = tmp_path / "bot-state"
    first = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await first.start(Commands())
    early_token = (state / "sync.json").read_bytes()
    for text in ("!treaty one", "!treaty two"):
        asked = await member.say(room, text)
        await member.wait_for(room, reply_to(asked))
    await first.stop()
    down = await member.say(room, "!treaty while-down")

    # each kind of damage leaves the bot with fewer of its three defences
    clock = BehindClock() if damage in ("ledger only", "first-sync rule only") else None
    if damage in ("sync token deleted", "sync token and ledger deleted", "first-sync rule only"):
        (state / "sync.json").unlink()
    if damage in ("sync token and ledger deleted", "first-sync rule only"):
        (state / "ledger.json").unlink()
    if damage in ("stale sync token", "ledger only"):
        (state / "sync.json").write_bytes(early_token)  # one and two come again

    commands = Commands()
    second = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state, clock=clock)
    await second.start(commands)
    after = await member.say(room, "!treaty after")
    await member.wait_for(room, reply_to(after))

    if damage == "ledger only":
        # nothing but the ledger stands between the replayed timeline and the handler: the
        # answered commands stay answered; the unanswered one, seen as new, runs once
        assert commands.texts == ["while-down", "after"]
        assert len(member.seen(room, reply_to(down))) == 1
    else:
        assert commands.texts == ["after"]
        assert member.seen(room, reply_to(down)) == []


async def test_reinvite_replays_no_old_command(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    commands = Commands()
    bot = bots(hs, accounts["bot"], {"alerts": room})
    await bot.start(commands)
    before = await member.say(room, "!treaty before")
    await member.wait_for(room, reply_to(before))

    kicked = await admin.client.room_kick(room, bot.user_id, reason="test")
    assert not hasattr(kicked, "status_code"), kicked
    for n in range(3):
        await member.say(room, f"!treaty while-out-{n}")
    invited = await admin.client.room_invite(room, bot.user_id)
    assert not hasattr(invited, "status_code"), invited
    token = admin.account.access_token
    await until(lambda: joined(hs, room, bot.user_id, token=token), "the bot joins again")

    after = await member.say(room, "!treaty after")
    await member.wait_for(room, reply_to(after))
    assert commands.texts == ["before", "after"]


# ----------------------------------------------------------------------------- faults


async def test_homeserver_restart_loses_no_alert_and_duplicates_none(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any, tmp_path: Path
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    state = tmp_path / "bot-state"
    bot = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await bot.start(Commands())
    alerts = ChannelName("alerts")
    sent = make_alert("news:a")  # reaches the server; pretend its answer was lost
    await bot.send(alerts, sent, key_of(sent))
    waiting = make_alert("news:b")  # due while the server is down

    await asyncio.to_thread(hs.stop)
    try:
        with pytest.raises(DeliveryError) as failed:
            await bot.send(alerts, waiting, key_of(waiting))
        assert not failed.value.permanent
        await until(lambda: bot.problem() is not None, "the bot notices the outage")
        assert "failed" in (bot.problem() or "")
    finally:
        await asyncio.to_thread(hs.start)
    await until(lambda: bot.problem() is None, "the bot syncs again")

    # the outbox retries both rows; then the bot restarts and a crash-left row is sent again
    await bot.send(alerts, sent, key_of(sent))
    await bot.send(alerts, waiting, key_of(waiting))
    await bot.stop()
    again = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await again.start(Commands())
    assert await again.was_delivered(alerts, sent, key_of(sent))
    await again.send(alerts, sent, key_of(sent))

    marker = make_alert("marker")
    await again.send(alerts, marker, key_of(marker))
    await member.wait_for(room, alert_event("marker"))
    assert len(member.seen(room, alert_event("news:a"))) == 1
    assert len(member.seen(room, alert_event("news:b"))) == 1


async def test_rate_limit_waits_for_that_room_then_gives_a_transient_error(
    hs: Synapse,
    accounts: dict[str, Account],
    peers: Any,
    bots: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.transports.matrix")
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    server_admin = hs.register(admin=True)
    await api(
        hs,
        "POST",
        f"/_synapse/admin/v1/users/{quote(accounts['bot'].user_id)}/override_ratelimit",
        {"messages_per_second": 1, "burst_count": 1},
        token=server_admin.access_token,
    )
    bot = bots(hs, accounts["bot"], {"alerts": room})
    await bot.start(Commands())
    alerts = ChannelName("alerts")
    one, two = make_alert("news:1"), make_alert("news:2")
    await bot.send(alerts, one, key_of(one))
    await bot.send(alerts, two, key_of(two))  # waits out M_LIMIT_EXCEEDED, then succeeds
    assert any("rate limited" in r.getMessage() for r in caplog.records)

    impatient = bots(
        hs,
        accounts["bot"],
        {"alerts": room},
        state_dir=tmp_path / "impatient",
        encryption=False,
        timeouts=dataclasses.replace(FAST, rate_limit_budget=0.1),
    )
    await impatient.start(Commands())
    three, four = make_alert("news:3"), make_alert("news:4")
    with pytest.raises(DeliveryError) as limited:
        await impatient.send(alerts, three, key_of(three))
        await impatient.send(alerts, four, key_of(four))
    assert not limited.value.permanent
    assert "rate limited" in str(limited.value)

    await member.wait_for(room, alert_event("news:2"))
    assert len(member.seen(room, alert_event("news:1"))) == 1
    assert len(member.seen(room, alert_event("news:2"))) == 1


async def test_invites_are_accepted_only_for_configured_rooms_or_from_admins(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any
) -> None:
    admin = await peers(accounts["admin"])
    outsider = await peers(accounts["outsider"])
    bot_id = accounts["bot"].user_id
    ops_room = await outsider.create_room([])  # configured, but the bot is not invited yet
    commands = Commands()
    bot = bots(
        hs,
        accounts["bot"],
        {"ops": ops_room, "ghost": "!nowhere:localhost"},
        admins=[admin.user_id],
    )
    await bot.start(commands)

    stranger_room = await outsider.create_room([bot_id])
    admin_room = await admin.create_room([bot_id])
    invited = await outsider.client.room_invite(ops_room, bot_id)
    assert not hasattr(invited, "status_code"), invited
    o_token, a_token = outsider.account.access_token, admin.account.access_token
    await until(lambda: joined(hs, admin_room, bot_id, token=a_token), "the admin's invite")
    await until(lambda: joined(hs, ops_room, bot_id, token=o_token), "the configured room")

    asked = await outsider.say(ops_room, "!treaty ping")  # the invites are all handled by now
    await outsider.wait_for(ops_room, reply_to(asked))
    assert await membership(hs, stranger_room, bot_id, token=o_token) == "invite"

    ops = make_alert("ops:1")
    await bot.send(ChannelName("ops"), ops, key_of(ops, "ops"))
    await outsider.wait_for(ops_room, alert_event("ops:1"))

    with pytest.raises(DeliveryError) as nowhere:
        await bot.send(ChannelName("ghost"), ops, key_of(ops, "ghost"))
    assert nowhere.value.permanent
    assert "!nowhere:localhost" in str(nowhere.value)
    assert f"invite {bot_id}" in str(nowhere.value)
    assert not bot.reaches(ChannelName("elsewhere")) and bot.reaches(ChannelName("ghost"))

    # a reloaded configuration that names the stranger's room: the pending invite is taken up
    bot.set_channels(
        {"ops": SimpleNamespace(matrix=ops_room), "late": SimpleNamespace(matrix=stranger_room)}
    )
    assert bot.reaches(ChannelName("late")) and not bot.reaches(ChannelName("ghost"))
    await outsider.say(ops_room, "wake up")  # the change is applied after the current sync
    await until(lambda: joined(hs, stranger_room, bot_id, token=o_token), "the reloaded room")


# ----------------------------------------------------------------------------- login


async def test_refused_credentials_are_permanent_and_never_shown(
    hs: Synapse, accounts: dict[str, Account], bots: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    account = accounts["bot"]
    wrong_password = Account(account.user_id, "not-the-password-123", "", "")
    wrong_token = Account(account.user_id, "", "syt_not_a_real_token_456", "")
    someone_else = Account(account.user_id, "", accounts["member"].access_token, "")
    secrets = (wrong_password.password, wrong_token.access_token, someone_else.access_token)

    for bad, use_password in ((wrong_password, True), (wrong_token, False), (someone_else, False)):
        bot = bots(hs, bad, {}, use_password=use_password)
        with pytest.raises(DeliveryError) as refused:
            await bot.start(Commands())
        assert refused.value.permanent
        assert bot.problem() is not None
        for secret in secrets:
            assert secret not in str(refused.value)
            assert secret not in repr(bot)
    assert "belongs to" in str(refused.value)
    for record in caplog.records:
        for secret in (*secrets, account.password, account.access_token):
            assert secret not in record.getMessage()


async def test_password_login_happens_once_and_keeps_its_device(
    hs: Synapse, accounts: dict[str, Account], bots: Any, tmp_path: Path
) -> None:
    state = tmp_path / "bot-state"
    first = bots(hs, accounts["bot"], {}, state_dir=state, use_password=True)
    await first.start(Commands())
    device = first.device_id
    await first.stop()
    second = bots(hs, accounts["bot"], {}, state_dir=state, use_password=True)
    await second.start(Commands())
    assert device is not None and second.device_id == device
    assert (state / "session.json").stat().st_mode & 0o077 == 0
    devices = await api(hs, "GET", "/_matrix/client/v3/devices", token=accounts["bot"].access_token)
    assert sorted(d["device_id"] for d in devices["devices"]) == sorted(
        [accounts["bot"].device_id, device]
    )


async def test_a_revoked_password_login_is_replaced_by_a_new_device(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any, tmp_path: Path
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    state = tmp_path / "bot-state"
    commands = Commands()
    bot = bots(
        hs,
        accounts["bot"],
        {"alerts": room},
        state_dir=state,
        use_password=True,
        timeouts=dataclasses.replace(FAST, sync_wait=1.0),
    )
    await bot.start(commands)
    device = bot.device_id
    saved = json.loads((state / "session.json").read_text())
    await api(hs, "POST", "/_matrix/client/v3/logout", {}, token=saved["access_token"])

    asked = await member.say(room, "!treaty after-revoke")
    await member.wait_for(room, reply_to(asked))
    assert commands.texts == ["after-revoke"]
    assert bot.device_id not in (None, device)
    assert bot.problem() is None


# ----------------------------------------------------------------------------- encryption


async def encrypted_setup(
    hs: Synapse, accounts: dict[str, Account], peers: Any
) -> tuple[Peer, Peer, str]:
    admin = await peers(accounts["admin"], encrypted=True)
    member = await peers(accounts["member"], encrypted=True)
    room = await make_room(admin, member, accounts["bot"], encrypted=True)
    return admin, member, room


def decrypted_notice(event: Event) -> bool:
    return isinstance(event, RoomMessageNotice) and event.decrypted


async def test_encrypted_room_works_both_ways_and_after_a_restart(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any, tmp_path: Path
) -> None:
    admin, member, room = await encrypted_setup(hs, accounts, peers)
    state = tmp_path / "bot-state"
    commands = Commands()
    bot = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await bot.start(commands)
    assert bot.problem() is None

    await member.knows_devices_of(bot.user_id)  # else the bot could not read the command
    asked = await member.say(room, "!treaty status")
    reply = await member.wait_for(room, reply_to(asked))
    assert decrypted_notice(reply)
    assert commands.texts == ["status"]
    assert content_of(reply)["m.mentions"] == {}
    alert = make_alert("news:secret")
    await bot.send(ChannelName("alerts"), alert, key_of(alert))
    received = await member.wait_for(room, alert_event(alert.id))
    assert decrypted_notice(received)

    await bot.stop()  # the crypto store stays
    again = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await again.start(commands)
    assert again.problem() is None
    later = make_alert("news:secret-2")
    await again.send(ChannelName("alerts"), later, key_of(later))
    assert decrypted_notice(await member.wait_for(room, alert_event(later.id)))
    asked = await member.say(room, "!treaty again")
    assert decrypted_notice(await member.wait_for(room, reply_to(asked)))
    assert commands.texts == ["status", "again"]

    # what the server holds from the bot is ciphertext only
    from_bot = [
        e
        for e in await raw_messages(hs, room, token=admin.account.access_token)
        if e["sender"] == again.user_id and e["type"].startswith("m.room.")
    ]
    assert {e["type"] for e in from_bot} >= {"m.room.encrypted"}
    assert "m.room.message" not in {e["type"] for e in from_bot}


async def test_lost_crypto_store_is_reported_not_crash_looped(
    hs: Synapse,
    accounts: dict[str, Account],
    peers: Any,
    bots: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin, member, room = await encrypted_setup(hs, accounts, peers)
    plain = await admin.create_room([member.user_id, accounts["bot"].user_id])
    await member.join(plain)
    state = tmp_path / "bot-state"
    bot = bots(hs, accounts["bot"], {"alerts": room, "plain": plain}, state_dir=state)
    await bot.start(Commands())
    first = make_alert("news:before-loss")
    await bot.send(ChannelName("alerts"), first, key_of(first))
    await member.wait_for(room, alert_event(first.id))
    await bot.stop()

    shutil.rmtree(state / "crypto")
    caplog.set_level(logging.ERROR, logger="bot.transports.matrix")
    again = bots(hs, accounts["bot"], {"alerts": room, "plain": plain}, state_dir=state)
    await again.start(Commands())  # starts: unencrypted rooms keep working

    problem = again.problem() or ""
    assert "crypto store" in problem and str(state / "crypto") in problem
    assert any("crypto store" in r.getMessage() for r in caplog.records)
    lost = make_alert("news:after-loss")
    with pytest.raises(DeliveryError) as refused:
        await again.send(ChannelName("alerts"), lost, key_of(lost))
    assert not refused.value.permanent
    assert "crypto store" in str(refused.value)

    fine = make_alert("news:plain")
    await again.send(ChannelName("plain"), fine, key_of(fine, "plain"))
    await member.wait_for(plain, alert_event(fine.id))
    types = {
        e["type"]
        for e in await raw_messages(hs, room, token=admin.account.access_token)
        if e["sender"] == again.user_id
    }
    assert "m.room.message" not in types  # never posted in clear into the encrypted room


async def test_damaged_crypto_store_is_reported_and_plain_rooms_keep_working(
    hs: Synapse, accounts: dict[str, Account], peers: Any, bots: Any, tmp_path: Path
) -> None:
    admin = await peers(accounts["admin"])
    member = await peers(accounts["member"])
    room = await make_room(admin, member, accounts["bot"])
    state = tmp_path / "bot-state"
    bot = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await bot.start(Commands())
    await bot.stop()
    [store] = (state / "crypto").glob("*.db")
    store.write_bytes(b"this is not a database" * 100)

    again = bots(hs, accounts["bot"], {"alerts": room}, state_dir=state)
    await again.start(Commands())
    assert "cannot be opened" in (again.problem() or "")
    alert = make_alert("news:still-fine")
    await again.send(ChannelName("alerts"), alert, key_of(alert))
    await member.wait_for(room, alert_event(alert.id))


# ----------------------------------------------------------------------------- rendering alone


@pytest.mark.parametrize(
    ("href", "kept"),
    [
        ("https://example.org/a?b=1&c=2", True),
        ("HTTP://EXAMPLE.ORG/", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,<b>x</b>", False),
        ("//example.org/relative", False),
        ("https://exa mple.org/", False),
        ("https://example.org/\x00", False),
        ("mxc://localhost/abc", False),
        (None, False),
    ],
)
def test_only_absolute_http_links_are_kept(href: str | None, kept: bool) -> None:
    assert (safe_href(href) is not None) is kept


def test_a_huge_alert_is_cut_to_fit_one_event() -> None:
    huge = "word " * 40_000
    alert = make_alert(
        "news:huge",
        body=(
            para(link("Title", "https://example.org/t")),
            para(huge),
            Bullets(tuple((plain(huge),) for _ in range(3))),
        ),
    )
    content = alert_content(alert, key_of(alert))
    size = len(content["body"].encode()) + len(content["formatted_body"].encode())
    assert size <= MAX_CONTENT_BYTES
    assert content["formatted_body"].startswith('<p><a href="https://example.org/t">Title</a></p>')
    assert content["body"].endswith("…")
    check_sanitised(content["formatted_body"])


def test_a_reply_in_a_thread_stays_in_the_thread() -> None:
    content = reply_content(Answer("", (para("ok"),)), "$command", "$root")
    assert content["m.relates_to"] == {
        "rel_type": "m.thread",
        "event_id": "$root",
        "is_falling_back": False,
        "m.in_reply_to": {"event_id": "$command"},
    }
    assert content["m.mentions"] == {}


def test_each_process_of_a_machine_holds_a_matrix_directory_of_its_own(tmp_path: Path) -> None:
    """A replica started beside another on one machine takes the next free directory (its own
    device, sync token and crypto store); a directory left free is taken again."""

    def transport() -> MatrixTransport:
        return MatrixTransport(
            homeserver="http://127.0.0.1:1",
            user_id="@bot:localhost",
            rooms={},
            state_dir=tmp_path / "matrix",
            password="pw",
        )

    first, second, third = transport(), transport(), transport()
    first._prepare_state_dir()
    second._prepare_state_dir()
    assert (first.state_dir, second.state_dir) == (tmp_path / "matrix", tmp_path / "matrix.2")
    assert second.session_file == tmp_path / "matrix.2" / "session.json"
    first._release()
    third._prepare_state_dir()
    assert third.state_dir == tmp_path / "matrix"
    second._release()
    third._release()
