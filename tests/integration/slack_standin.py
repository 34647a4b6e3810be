"""A stand-in for Slack's servers on loopback, for tests of the real slack-bolt/slack_sdk code.

``SlackStandIn`` is one ``aiohttp.web`` application on ``127.0.0.1``, port 0. It plays:

- **the Web API** at ``/api/<method>`` (point ``AsyncWebClient(base_url=standin.api_url)`` at
  it; the URL ends in ``/``): ``auth.test``, ``chat.postMessage`` (checked like Slack checks
  it: channel exists, bot is a member, channel not archived, text or blocks present, at most 50
  blocks, 3,000 characters a section, 40,000 of text, metadata well formed), a
  ``conversations.history`` that returns what was posted (with its metadata when
  ``include_all_metadata`` is set), ``apps.connections.open`` (app-level ``xapp-`` tokens only)
  and ``api.test``. Errors come back the way Slack sends them: HTTP 200 with
  ``{"ok": false, "error": ...}``, or 429 with ``Retry-After``.
- **Socket Mode**: the URL from ``apps.connections.open`` is a one-time
  ``ws://127.0.0.1:<port>/link/?ticket=…``; the socket says ``hello`` on connect.
  ``send_envelope`` pushes an envelope and returns the client's ack of that ``envelope_id``
  (Slack waits 3 s for it); ``send_disconnect`` asks the client to reconnect.
- **direct messages and the Home tab**: ``conversations.open`` (scope ``im:write``) opens a
  person's direct messages with the bot, a ``D…`` channel that ``chat.postMessage`` and
  ``conversations.history`` take like any other (``direct(user)`` finds it); ``views.publish``
  keeps each person's Home tab (``homes``), checked like Slack checks a view (``type: home``,
  at most 100 blocks, buttons well formed). ``app_home_opened(user)`` and
  ``block_actions(user, action_id, value)`` build what Slack sends when a person opens the tab
  or presses a button: send them with ``send_envelope`` (``events_api``, ``interactive``) or
  sign them with ``post_signed`` (``json=`` for events, ``form={"payload": …}`` for actions).
- **response_url**: every slash command carries ``/commands/<team>/<n>/<secret>``; what is
  POSTed there (at most 5 times, as Slack allows) is recorded under ``n`` (``wait_response``).
- **Slack calling an app in HTTP mode**: ``post_signed`` signs the exact bytes it sends with the
  signing secret (``v0=`` HMAC-SHA256 of ``v0:<timestamp>:<body>``) and can forge, age, drop or
  retry-mark the request.

Faults are programmed per Web API method (``inject``), optionally for one channel only: any
status and error (429 with ``Retry-After``), a connection dropped before or *after* the call was
processed, or a response held back until the test releases it (a client time-out after Slack
did the work). ``strict_rate=s`` answers 429 to a second post to one channel within ``s`` seconds
(Slack allows about one a second).

Every call is recorded (``calls``); tests wait on the stand-in's state (``wait_until`` wakes up
on every change and re-checks its predicate), never on the clock. The deadlines only turn a hang
into a failure.

Two ways to run it::

    async with SlackStandIn() as slack:      # in the test's own event loop
        ...

    with SlackStandIn() as slack:            # in a thread with its own loop (the bot in a
        slack.sync(slack.wait_connected())   # subprocess); ``sync`` runs a coroutine there
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import WSMsgType, web

__all__ = [
    "APP_TOKEN",
    "BOT_NAME",
    "BOT_TOKEN",
    "BOT_USER_ID",
    "SIGNING_SECRET",
    "TEAM_ID",
    "Ack",
    "Call",
    "Channel",
    "Fault",
    "Posted",
    "SignedReply",
    "SlackStandIn",
    "SlashCommand",
    "post_signed",
    "sign",
]

T = TypeVar("T")

WAIT = 30.0  # the deadline of every wait: generous, a slow machine is no failure
ACK_DEADLINE = 3.0  # how long Slack waits for an ack or an HTTP answer

BOT_TOKEN = "xoxb-1111-2222-standinbottoken"
APP_TOKEN = "xapp-1-A0TREATY-3333-standinapptoken"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
VERIFICATION_TOKEN = "standin-verification-token"
TEAM_ID = "T0TREATY"
APP_ID = "A0TREATY"
BOT_USER_ID = "U0BOTUSER"
BOT_ID = "B0BOT"
BOT_NAME = "treaty_watch"
SCOPES = "chat:write,commands,channels:history,groups:history,im:write,im:history"

MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_SECTION = 3_000
MAX_HEADER = 150
MAX_TEXT = 40_000
RESPONSES_PER_URL = 5  # Slack takes up to 5 answers on one response_url


# ----------------------------------------------------------------------------- signing


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<body>``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class SignedReply:
    """What an app answered to a request from "Slack"."""

    status: int
    content_type: str
    text: str
    arrived: float  # time.monotonic() when the answer was read

    def json(self) -> Any:
        return json.loads(self.text)


async def post_signed(
    session: aiohttp.ClientSession,
    url: str,
    *,
    form: Mapping[str, str] | None = None,
    body: bytes | None = None,
    json_body: Mapping[str, Any] | None = None,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    signed_body: bytes | None = None,
    signature: str | None = None,
    omit: tuple[str, ...] = (),
    retry_num: int | None = None,
    retry_reason: str = "http_timeout",
    deadline: float = ACK_DEADLINE,
) -> SignedReply:
    """POST ``form`` (or the raw ``body``) to an app the way Slack does, signed.

    ``timestamp`` shifts the clock of the signature (stale or future requests); ``signed_body``
    signs other bytes than those sent (a tampered body); ``signature`` replaces the signature;
    ``omit`` leaves headers out; ``retry_num`` marks a retry. ``json_body`` is sent as JSON,
    as Slack sends events. Like Slack, gives up after ``deadline`` seconds (``TimeoutError``).
    """
    content_type = "application/x-www-form-urlencoded"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        content_type = "application/json"
    if body is None:
        body = urlencode(dict(form or {})).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature
        or sign(secret, stamp, body if signed_body is None else signed_body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    if retry_num is not None:
        headers["X-Slack-Retry-Num"] = str(retry_num)
        headers["X-Slack-Retry-Reason"] = retry_reason
    for name in omit:
        headers.pop(name, None)
    async with (
        asyncio.timeout(deadline),
        session.post(url, data=body, headers=headers) as response,
    ):
        text = await response.text()
        return SignedReply(response.status, response.content_type, text, time.monotonic())


# ----------------------------------------------------------------------------- records


@dataclass(slots=True)
class Call:
    """One Web API call as the stand-in received it (the token apart from the parameters)."""

    seq: int
    method: str
    params: dict[str, Any]
    token: str | None
    headers: dict[str, str]
    at: float  # time.monotonic() on arrival
    status: int | None = None  # HTTP status answered; None while held or when dropped
    error: str | None = None  # the ``error`` answered, if any
    peer: object = None  # the client's address and port: one per connection


@dataclass(slots=True)
class Posted:
    """A message in a channel."""

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    params: dict[str, Any]  # every argument of chat.postMessage but the token

    def as_history(self, with_metadata: bool) -> dict[str, Any]:
        message: dict[str, Any] = {
            "type": "message",
            "subtype": "bot_message",
            "ts": self.ts,
            "text": self.text,
            "blocks": self.blocks,
            "bot_id": BOT_ID,
            "user": BOT_USER_ID,
            "app_id": APP_ID,
        }
        if with_metadata and self.metadata is not None:
            message["metadata"] = self.metadata
        return message


@dataclass(slots=True)
class Channel:
    id: str
    name: str
    member: bool = True  # whether the bot is in the channel
    archived: bool = False
    private: bool = False
    messages: list[Posted] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Ack:
    """A Socket Mode client's ack of one envelope."""

    envelope_id: str
    payload: dict[str, Any] | None
    frame: dict[str, Any]
    arrived: float  # time.monotonic()


@dataclass(frozen=True, slots=True)
class SlashCommand:
    """A slash command as Slack sends it, and where its answers go."""

    payload: dict[str, str]
    response: int  # the key of ``responses`` for its response_url

    @property
    def trigger_id(self) -> str:
        return self.payload["trigger_id"]


class Fault:
    """A programmed misbehaviour of one Web API method (or of response_url posts).

    ``status``/``error``: answer that instead of doing the call (``retry_after`` adds the
    header). ``drop``: close the connection without doing it; ``drop_after``: do it, then
    close the connection. ``hold_before``/``hold_after``: wait for ``release()`` before/after
    doing it. ``channel`` limits the fault to calls for that channel id.
    """

    def __init__(
        self,
        standin: SlackStandIn,
        method: str,
        *,
        status: int | None,
        error: str | None,
        retry_after: float | None,
        channel: str | None,
        times: int,
        drop: bool,
        drop_after: bool,
        hold_before: bool,
        hold_after: bool,
    ) -> None:
        self._standin = standin
        self.method = method
        self.status = status
        self.error = error
        self.retry_after = retry_after
        self.channel = channel
        self.remaining = times
        self.drop = drop
        self.drop_after = drop_after
        self.hold_before = hold_before
        self.hold_after = hold_after
        self.hits = 0  # calls this fault applied to
        self.waiting = 0  # calls held right now
        self._released = asyncio.Event()

    def applies(self, method: str, channel: Any) -> bool:
        return (
            self.remaining > 0
            and method == self.method
            and (self.channel is None or channel == self.channel)
        )

    def release(self) -> None:
        """Let every held call go on (safe from any thread)."""
        self._standin.call(self._released.set)

    async def hold(self) -> None:
        self.waiting += 1
        self._standin.changed()
        try:
            await self._released.wait()
        finally:
            self.waiting -= 1
            self._standin.changed()


# ----------------------------------------------------------------------------- the stand-in


class SlackStandIn:
    """Slack's Web API, Socket Mode and response_url on ``127.0.0.1`` (see the module doc)."""

    def __init__(
        self,
        *,
        bot_token: str = BOT_TOKEN,
        app_token: str = APP_TOKEN,
        strict_rate: float | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.strict_rate = strict_rate
        self.host = host
        self.port = 0
        self.channels: dict[str, Channel] = {}
        self.calls: list[Call] = []
        self.responses: dict[int, list[dict[str, Any]]] = {}
        self.homes: dict[str, list[dict[str, Any]]] = {}  # user -> every view published
        self.directs: dict[str, str] = {}  # user -> the id of their direct messages
        self.deactivated: set[str] = set()  # users no direct message can be opened with
        self.acks: list[Ack] = []
        self.frames: list[dict[str, Any]] = []  # every frame a Socket Mode client sent
        self.connections = 0  # Socket Mode connections opened so far
        self.sockets: list[web.WebSocketResponse] = []  # open now, newest last
        self.closing = False
        self._faults: list[Fault] = []
        self._tickets: set[str] = set()
        self._acks_pending: dict[str, asyncio.Future[Ack]] = {}
        self._response_ids = itertools.count(1)
        self._response_secrets: dict[int, str] = {}
        self._last_ts = 0.0
        self._last_post: dict[str, float] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._thread: threading.Thread | None = None
        self._stop_requested: asyncio.Event | None = None

    # -- addresses ----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL (for ``SLACK_API_URL``); it ends in ``/``."""
        return f"{self.base_url}/api/"

    def response_url(self, n: int) -> str:
        secret = self._response_secrets.setdefault(n, uuid.uuid4().hex[:24])
        return f"{self.base_url}/commands/{TEAM_ID}/{n}/{secret}"

    # -- programming --------------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        member: bool = True,
        archived: bool = False,
        private: bool = False,
    ) -> Channel:
        channel = Channel(channel_id, name, member=member, archived=archived, private=private)
        self.channels[channel_id] = channel
        return channel

    def inject(
        self,
        method: str,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: float | None = None,
        channel: str | None = None,
        times: int = 1,
        drop: bool = False,
        drop_after: bool = False,
        hold_before: bool = False,
        hold_after: bool = False,
    ) -> Fault:
        """Misbehave on the next ``times`` calls of ``method`` (see ``Fault``).

        ``method`` is a Web API method, or ``"response_url"`` for answers to commands.
        """
        if error is not None and status is None:
            status = 200
        fault = Fault(
            self,
            method,
            status=status,
            error=error,
            retry_after=retry_after,
            channel=channel,
            times=times,
            drop=drop,
            drop_after=drop_after,
            hold_before=hold_before,
            hold_after=hold_after,
        )
        self._faults.append(fault)
        return fault

    # -- what happened ------------------------------------------------------------------------

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in list(self.calls) if call.method == method]

    def messages(self, channel_id: str) -> list[Posted]:
        return list(self.channels[channel_id].messages)

    async def wait_until(
        self, predicate: Callable[[], bool], what: str, deadline: float = WAIT
    ) -> None:
        """Wait until ``predicate()`` holds (re-checked on every change of the stand-in)."""
        await self._on_loop(self._wait(predicate, what, deadline))

    async def wait_for_calls(self, method: str, count: int = 1) -> list[Call]:
        await self.wait_until(
            lambda: len(self.calls_to(method)) >= count, f"{count} call(s) of {method}"
        )
        return self.calls_to(method)

    async def wait_answered(self, method: str, count: int = 1) -> list[Call]:
        """Wait until ``count`` calls of ``method`` were answered (or dropped)."""

        def answered() -> list[Call]:
            return [c for c in self.calls_to(method) if c.status is not None or c.error == "drop"]

        await self.wait_until(lambda: len(answered()) >= count, f"{count} answer(s) to {method}")
        return answered()

    async def wait_response(self, n: int, count: int = 1) -> dict[str, Any]:
        """The ``count``-th message POSTed to response_url ``n``."""
        await self.wait_until(
            lambda: len(self.responses.get(n, [])) >= count,
            f"{count} post(s) to response_url {n}",
        )
        return self.responses[n][count - 1]

    async def wait_connected(self, count: int = 1) -> None:
        """Wait until ``count`` Socket Mode connections were opened and one is open now."""
        await self.wait_until(
            lambda: self.connections >= count and bool(self.sockets),
            f"Socket Mode connection number {count}",
        )

    # -- Socket Mode --------------------------------------------------------------------------

    def slash_command(
        self,
        text: str,
        *,
        user: str = "U0ALICE",
        channel: str = "C0ALERTS",
        command: str = "/treaty",
        trigger_id: str | None = None,
    ) -> SlashCommand:
        """A slash command payload (both modes) with a fresh response_url."""
        n = next(self._response_ids)
        self.responses.setdefault(n, [])
        payload = {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "team_domain": "treaty-coalition",
            "channel_id": channel,
            "channel_name": self.channels[channel].name if channel in self.channels else "x",
            "user_id": user,
            "user_name": user.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.response_url(n),
            "trigger_id": trigger_id or f"{n}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
        }
        return SlashCommand(payload, n)

    def direct(self, user: str) -> str:
        """The id of ``user``'s direct messages with the bot (once the bot opened them)."""
        return self.directs[user]

    def home(self, user: str) -> dict[str, Any]:
        """The Home tab last published for ``user``."""
        return self.homes[user][-1]

    def app_home_opened(self, user: str, *, tab: str = "home") -> dict[str, Any]:
        """The event Slack sends when ``user`` opens the bot's Home (or Messages) tab."""
        now = time.time()
        return {
            "token": VERIFICATION_TOKEN,
            "team_id": TEAM_ID,
            "api_app_id": APP_ID,
            "event": {
                "type": "app_home_opened",
                "user": user,
                "channel": self.directs.get(user, "D0" + user.removeprefix("U")),
                "tab": tab,
                "event_ts": f"{now:.6f}",
            },
            "type": "event_callback",
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(),
            "event_time": int(now),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def block_actions(self, user: str, action_id: str, value: str) -> dict[str, Any]:
        """What Slack sends when ``user`` presses a button of their Home tab."""
        view = self.homes.get(user, [{}])[-1]
        block_id = next(
            (
                str(b.get("block_id", ""))
                for b in view.get("blocks", [])
                if (b.get("accessory") or {}).get("value") == value
            ),
            "",
        )
        return {
            "type": "block_actions",
            "user": {
                "id": user,
                "username": user.lower(),
                "name": user.lower(),
                "team_id": TEAM_ID,
            },
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": {"type": "view", "view_id": "V0HOME"},
            "trigger_id": f"{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex}",
            "team": {"id": TEAM_ID, "domain": "treaty-coalition"},
            "enterprise": None,
            "is_enterprise_install": False,
            "view": {"id": "V0HOME", "type": "home", "blocks": view.get("blocks", [])},
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": "Unfollow"},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    async def send_envelope(
        self,
        kind: str,
        payload: Mapping[str, Any],
        *,
        retry_attempt: int | None = None,
        retry_reason: str | None = None,
        accepts_response_payload: bool = True,
        deadline: float = ACK_DEADLINE,
        socket: int = -1,
    ) -> Ack:
        """Push an envelope on the newest socket (or the open one at index ``socket``, oldest
        first: Slack spreads envelopes over an app's connections); return its ack (waits
        ``deadline`` s)."""
        return await self._on_loop(
            self._send_envelope(
                kind,
                dict(payload),
                retry_attempt,
                retry_reason,
                accepts_response_payload,
                deadline,
                socket,
            )
        )

    async def send_command(
        self, command: SlashCommand, *, retry_attempt: int | None = None, socket: int = -1
    ) -> Ack:
        """Deliver a slash command over Socket Mode; return the ack."""
        return await self.send_envelope(
            "slash_commands",
            command.payload,
            retry_attempt=retry_attempt,
            retry_reason="timeout" if retry_attempt else None,
            socket=socket,
        )

    async def send_disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the connected client to reconnect, as Slack does every few hours."""

        async def send() -> None:
            socket = self._newest_socket()
            await socket.send_json(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}}
            )

        await self._on_loop(send())

    async def drop_sockets(self) -> None:
        """Close every Socket Mode connection from Slack's side, without a disconnect frame."""

        async def close() -> None:
            for ws in list(self.sockets):
                await ws.close(code=aiohttp.WSCloseCode.SERVICE_RESTART, message=b"outage")

        await self._on_loop(close())

    # -- running a coroutine on the stand-in's loop ---------------------------------------------

    def sync(self, awaitable: Coroutine[Any, Any, T], timeout: float = WAIT + 5.0) -> T:
        """Run a coroutine of this stand-in from a thread outside its loop (threaded mode)."""
        loop = self._require_loop()
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError("sync() would block the stand-in's own loop")
        return asyncio.run_coroutine_threadsafe(awaitable, loop).result(timeout)

    def call(self, function: Callable[[], object]) -> None:
        """Run ``function`` on the stand-in's loop and wake the waiters (from any thread)."""
        loop = self._require_loop()

        def run() -> None:
            function()
            self.changed()

        if threading.get_ident() == self._loop_thread:
            run()
        else:
            loop.call_soon_threadsafe(run)

    def changed(self) -> None:
        """Wake everything waiting on the stand-in's state."""
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self.changed)
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._require_loop()
        if _running_loop() is loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))

    async def _until(self, predicate: Callable[[], bool]) -> None:
        loop = self._require_loop()
        while not predicate():
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _wait(self, predicate: Callable[[], bool], what: str, deadline: float) -> None:
        try:
            async with asyncio.timeout(deadline):
                await self._until(predicate)
        except TimeoutError:
            raise AssertionError(f"Slack stand-in: waited {deadline:g} s for {what}") from None

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the Slack stand-in is not running")
        return self._loop

    # -- the Web API --------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        params: dict[str, Any] = dict(request.query)
        raw = await request.read()
        if raw:
            if request.content_type == "application/json":
                params.update(json.loads(raw))
            else:
                params.update(parse_qsl(raw.decode(), keep_blank_values=True))
        token = params.pop("token", None)
        authorization = request.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            token = authorization.removeprefix("Bearer ")
        call = Call(
            seq=len(self.calls),
            method=method,
            params=params,
            token=token,
            headers=dict(request.headers),
            at=time.monotonic(),
        )
        self.calls.append(call)
        self.changed()
        try:
            return await self._answer(request, call)
        finally:
            self.changed()

    async def _answer(self, request: web.Request, call: Call) -> web.StreamResponse:
        fault = self._take_fault(call.method, call.params.get("channel"))
        if fault is not None:
            if fault.hold_before:
                await fault.hold()
            if fault.drop:
                return self._drop(request, call)
            if fault.status is not None:
                return self._fault_response(call, fault)
        status, body, headers = self._handle(call)
        if fault is not None and fault.drop_after:
            return self._drop(request, call)
        if fault is not None and fault.hold_after:
            await fault.hold()
        call.status = status
        call.error = None if body.get("ok") else str(body.get("error"))
        return web.json_response(body, status=status, headers=headers)

    def _take_fault(self, method: str, channel: Any) -> Fault | None:
        for fault in self._faults:
            if fault.applies(method, channel):
                fault.remaining -= 1
                fault.hits += 1
                return fault
        return None

    def _drop(self, request: web.Request, call: Call) -> web.StreamResponse:
        call.error = "drop"
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client

    def _fault_response(self, call: Call, fault: Fault) -> web.StreamResponse:
        status = fault.status or 200
        error = (
            fault.error
            or {429: "ratelimited"}.get(status)
            or ("internal_error" if status >= 500 else "invalid_request")
        )
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        call.status, call.error = status, error
        return web.json_response({"ok": False, "error": error}, status=status, headers=headers)

    def _handle(self, call: Call) -> tuple[int, dict[str, Any], dict[str, str]]:
        method, params, token = call.method, call.params, call.token
        if method == "api.test":
            if params.get("error"):
                return 200, {"ok": False, "error": params["error"], "args": params}, {}
            return 200, {"ok": True, "args": params}, {}
        if method == "apps.connections.open":
            return self._connections_open(token)
        handler = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._post_message,
            "conversations.history": self._history,
            "conversations.open": self._open,
            "views.publish": self._publish,
        }.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if token.startswith("xapp-"):
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if token != self.bot_token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        return handler(params)

    def _auth_test(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        return (
            200,
            {
                "ok": True,
                "url": "https://treaty-coalition.slack.com/",
                "team": "Treaty Coalition",
                "user": BOT_NAME,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
                "is_enterprise_install": False,
            },
            {"x-oauth-scopes": SCOPES},
        )

    def _connections_open(self, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        if not token.startswith("xapp-"):
            return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
        if token != self.app_token:
            return 200, {"ok": False, "error": "invalid_auth"}, {}
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        url = f"ws://{self.host}:{self.port}/link/?ticket={ticket}&app_id={APP_ID}"
        return 200, {"ok": True, "url": url}, {}

    def _channel(self, params: dict[str, Any]) -> Channel | str:
        channel = self.channels.get(str(params.get("channel", "")))
        if channel is None:
            return "channel_not_found"
        if channel.private and not channel.member:
            return "channel_not_found"  # a private channel is invisible to non-members
        return channel

    def _post_message(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = self._channel(params)
        if isinstance(channel, str):
            return 200, {"ok": False, "error": channel}, {}
        if channel.archived:
            return 200, {"ok": False, "error": "is_archived"}, {}
        if not channel.member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        text = str(params.get("text") or "")
        blocks = _json_field(params.get("blocks"), [])
        metadata = _json_field(params.get("metadata"), None)
        if not isinstance(blocks, list):
            return 200, {"ok": False, "error": "invalid_blocks_format"}, {}
        if not text.strip() and not blocks:
            return 200, {"ok": False, "error": "no_text"}, {}
        if len(text) > MAX_TEXT:
            return 200, {"ok": False, "error": "msg_too_long"}, {}
        problem = _block_problem(blocks)
        if problem is not None:
            return 200, {"ok": False, "error": "invalid_blocks", "errors": [problem]}, {}
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("event_type"), str)
            or not isinstance(metadata.get("event_payload"), dict)
        ):
            return 200, {"ok": False, "error": "invalid_metadata_format"}, {}
        now = time.monotonic()
        if self.strict_rate is not None:
            last = self._last_post.get(channel.id)
            if last is not None and now - last < self.strict_rate:
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "1"}
        self._last_post[channel.id] = now
        ts = self._next_ts()
        posted = Posted(channel.id, ts, text, blocks, metadata, dict(params))
        channel.messages.append(posted)
        message = posted.as_history(with_metadata=True)
        return 200, {"ok": True, "channel": channel.id, "ts": ts, "message": message}, {}

    def _history(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        channel = self._channel(params)
        if isinstance(channel, str):
            return 200, {"ok": False, "error": channel}, {}
        if not channel.member:
            return 200, {"ok": False, "error": "not_in_channel"}, {}
        with_metadata = str(params.get("include_all_metadata", "")).lower() in ("1", "true")
        limit = max(1, min(int(params.get("limit") or 100), 999))
        start = int(params.get("cursor") or 0)
        newest_first = list(reversed(channel.messages))
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        body: dict[str, Any] = {
            "ok": True,
            "messages": [m.as_history(with_metadata) for m in page],
            "has_more": more,
            "pin_count": 0,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }
        return 200, body, {}

    def _open(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        users = [u for u in str(params.get("users") or "").split(",") if u]
        if len(users) != 1:
            return 200, {"ok": False, "error": "users_list_not_supplied"}, {}
        user = users[0]
        if not user.startswith(("U", "W")):
            return 200, {"ok": False, "error": "user_not_found"}, {}
        if user in self.deactivated:
            return 200, {"ok": False, "error": "user_disabled"}, {}
        if user not in self.directs:
            channel_id = "D0" + user.removeprefix("U").removeprefix("W")
            self.directs[user] = channel_id
            self.channels[channel_id] = Channel(channel_id, user, private=True)
        channel_id = self.directs[user]
        return 200, {"ok": True, "channel": {"id": channel_id}}, {}

    def _publish(self, params: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        user = str(params.get("user_id") or "")
        view = _json_field(params.get("view"), None)
        if not user.startswith(("U", "W")):
            return 200, {"ok": False, "error": "invalid_arguments"}, {}
        if not isinstance(view, dict) or view.get("type") != "home":
            return 200, {"ok": False, "error": "invalid_arguments"}, {}
        blocks = view.get("blocks")
        if not isinstance(blocks, list) or len(blocks) > MAX_VIEW_BLOCKS:
            return 200, {"ok": False, "error": "invalid_arguments"}, {}
        problem = _block_problem(blocks, limit=MAX_VIEW_BLOCKS)
        if problem is not None:
            return 200, {"ok": False, "error": "invalid_arguments", "errors": [problem]}, {}
        self.homes.setdefault(user, []).append(view)
        view_id = f"V0{len(self.homes[user]):08d}"
        return 200, {"ok": True, "view": {"id": view_id, **view}}, {}

    def _next_ts(self) -> str:
        stamp = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = stamp
        return f"{stamp:.6f}"

    # -- response_url -------------------------------------------------------------------------

    async def _response_url(self, request: web.Request) -> web.StreamResponse:
        n = int(request.match_info["n"])
        body = await request.read()
        call = Call(
            seq=len(self.calls),
            method="response_url",
            params={"n": n},
            token=None,
            headers=dict(request.headers),
            at=time.monotonic(),
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        self.calls.append(call)
        fault = self._take_fault("response_url", None)
        if fault is not None and fault.status is not None:
            response = self._fault_response(call, fault)
            self.changed()
            return response
        if self._response_secrets.get(n) != request.match_info["secret"]:
            call.status, call.error = 404, "no_such_url"
            self.changed()
            return web.Response(status=404, text="no_such_url")
        answers = self.responses.setdefault(n, [])
        if len(answers) >= RESPONSES_PER_URL:
            call.status, call.error = 404, "used_url"
            self.changed()
            return web.Response(status=404, text="used_url")
        answers.append(json.loads(body))
        call.status = 200
        self.changed()
        return web.Response(text="ok")

    # -- the Socket Mode WebSocket --------------------------------------------------------------

    async def _socket(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.sockets.append(ws)
        self.connections += 1
        await ws.send_json(
            {
                "type": "hello",
                "num_connections": len(self.sockets),
                "debug_info": {"host": "standin", "approximate_connection_time": 18060},
                "connection_info": {"app_id": APP_ID},
            }
        )
        self.changed()
        try:
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                self.frames.append(frame)
                envelope_id = frame.get("envelope_id")
                waiter = self._acks_pending.get(str(envelope_id))
                if waiter is not None and not waiter.done():
                    ack = Ack(str(envelope_id), frame.get("payload"), frame, time.monotonic())
                    self.acks.append(ack)
                    waiter.set_result(ack)
                self.changed()
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)
            self.changed()
        return ws

    def _newest_socket(self, index: int = -1) -> web.WebSocketResponse:
        open_sockets = [ws for ws in self.sockets if not ws.closed]
        if not open_sockets:
            raise AssertionError("Slack stand-in: no Socket Mode client is connected")
        return open_sockets[index]

    async def _send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        retry_attempt: int | None,
        retry_reason: str | None,
        accepts_response_payload: bool,
        deadline: float,
        index: int = -1,
    ) -> Ack:
        await self._until(lambda: any(not ws.closed for ws in self.sockets))
        socket = self._newest_socket(index)
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if retry_attempt is not None:
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason or "timeout"
        waiter: asyncio.Future[Ack] = self._require_loop().create_future()
        self._acks_pending[envelope_id] = waiter
        try:
            await socket.send_json(envelope)
            async with asyncio.timeout(deadline):
                return await waiter
        except TimeoutError:
            raise AssertionError(
                f"Slack stand-in: no ack of envelope {envelope_id} ({kind}) within {deadline:g} s"
            ) from None
        finally:
            self._acks_pending.pop(envelope_id, None)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.closing = False
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/commands/{team}/{n}/{secret}", self._response_url)
        app.router.add_get("/link/", self._socket)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        try:
            site = web.TCPSite(runner, self.host, 0)
            await site.start()
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        self.closing = True
        for fault in self._faults:
            fault._released.set()  # nothing stays held
        for ws in list(self.sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"stand-in stopping")
        self.changed()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> SlackStandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __enter__(self) -> SlackStandIn:
        """Start in a background thread with its own event loop."""
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=asyncio.run, args=(self._serve_in_thread(started),), name="slack-standin"
        )
        self._thread.daemon = True
        self._thread.start()
        try:
            started.result(WAIT)
        except BaseException:
            self._thread.join(WAIT)
            self._thread = None
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        loop, stop = self._loop, self._stop_requested
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(WAIT)
        if thread.is_alive():
            raise RuntimeError("the Slack stand-in thread did not stop")

    async def _serve_in_thread(self, started: concurrent.futures.Future[None]) -> None:
        self._stop_requested = asyncio.Event()
        try:
            await self.start()
        except BaseException as err:
            started.set_exception(err)
            return
        started.set_result(None)
        try:
            await self._stop_requested.wait()
        finally:
            await self.stop()


# ----------------------------------------------------------------------------- helpers


def _json_field(value: Any, default: Any) -> Any:
    """A JSON-valued argument: JSON bodies carry it as is, forms as a JSON string."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _block_problem(blocks: list[Any], *, limit: int = MAX_BLOCKS) -> str | None:
    """Why Slack would refuse these blocks (``invalid_blocks``), or ``None``."""
    if len(blocks) > limit:
        return f"no more than {limit} items allowed [json-pointer:/blocks]"
    for i, block in enumerate(blocks):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"invalid block [json-pointer:/blocks/{i}]"
        kind = block["type"]
        text = block.get("text")
        if kind in ("section", "header"):
            if not isinstance(text, dict) or not isinstance(text.get("text"), str):
                return f"missing text [json-pointer:/blocks/{i}/text]"
            if text.get("type") not in ("mrkdwn", "plain_text"):
                return f"invalid text type [json-pointer:/blocks/{i}/text/type]"
            length = len(text["text"])
            limit = MAX_SECTION if kind == "section" else MAX_HEADER
            if length == 0:
                return f"must be more than 0 characters [json-pointer:/blocks/{i}/text/text]"
            if length > limit:
                return (
                    f"must be less than {limit + 1} characters [json-pointer:/blocks/{i}/text/text]"
                )
        elif kind not in ("divider", "context", "actions", "image", "rich_text"):
            return f"unsupported type {kind} [json-pointer:/blocks/{i}/type]"
        accessory = block.get("accessory")
        if accessory is not None and _button_problem(accessory):
            return f"{_button_problem(accessory)} [json-pointer:/blocks/{i}/accessory]"
    return None


def _button_problem(element: Any) -> str | None:
    """Why Slack would refuse this button, or ``None``."""
    if not isinstance(element, dict) or element.get("type") != "button":
        return "unsupported accessory"
    text = element.get("text")
    if not isinstance(text, dict) or text.get("type") != "plain_text":
        return "a button's text must be plain_text"
    if not 0 < len(str(text.get("text") or "")) <= MAX_BUTTON_TEXT:
        return f"a button's text must be 1 to {MAX_BUTTON_TEXT} characters"
    if len(str(element.get("value") or "")) > MAX_BUTTON_VALUE:
        return f"a button's value must be at most {MAX_BUTTON_VALUE} characters"
    if not 0 < len(str(element.get("action_id") or "")) <= 255:
        return "a button needs an action_id of at most 255 characters"
    return None


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
