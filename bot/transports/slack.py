"""Slack: the ``/treaty`` slash command and channel alerts, through slack-bolt's ``AsyncApp``.

This is the only module that imports slack_bolt and slack_sdk. What it promises, beyond the
transport contract of ``bot.transports.base``:

Start-up
    ``auth.test`` checks the bot token first; a refused token raises a permanent
    ``DeliveryError`` that names the environment variable and the fix, never the token. In
    Socket Mode (the default) the app token opens the WebSocket (``apps.connections.open``, a
    refused app token is permanent too); slack_sdk reconnects it when Slack drops it. In HTTP
    mode Slack calls ``routes()`` (``POST /slack/events`` on the bot's own HTTP server); bolt
    checks every request's signature and refuses a bad or missing one, or a timestamp more than
    five minutes off, with 401 before any listener runs.

Commands
    ``/treaty <text>`` is acknowledged at once (Slack wants it within 3 s), then answered through
    the request's ``response_url``: visible to the asker only, or to the channel when the answer
    says ``share``. A request seen before (same ``trigger_id``: Slack's retries, HTTP or Socket
    Mode) is acknowledged and never run again.

Alerts
    One ``chat.postMessage`` per alert: Block Kit sections of ``mrkdwn`` plus a fallback
    ``text``, built from the neutral text. Every character of text is escaped (``&``, ``<``,
    ``>``), ``@channel``/``@here``/``@everyone`` are broken by a word joiner, links are made
    only for http(s) URLs, and ``link_names``/``parse`` are never sent, so no alert mentions
    anyone. Messages are cut within Slack's limits (3,000 characters a section, 50 blocks) with
    the link kept. The message metadata (``treaty_alert``) carries the alert id and outbox key.

Direct messages
    A logical channel ``dm:U…`` is that person's direct messages with the bot: opened with
    ``conversations.open`` (scope ``im:write``) and its id kept for the process; posted to like
    any channel, and checked in its history (``im:history``) after an interrupted post.

App Home
    With a page provider (``serve_home``), opening the bot's Home tab (the ``app_home_opened``
    event) publishes that person's page with ``views.publish``: the next dates and what they
    follow, each with an Unfollow button. A press (a ``block_actions`` interaction, Socket Mode
    or signed HTTP like every request) runs ``unfollow`` for that person through the command
    handler and publishes the page again.

Faults
    Posts to one channel are paced (about one a second); a 429 waits its ``Retry-After`` for that
    channel only, within a budget, then the outbox retries later. 5xx and network failures are
    transient errors; when the post may have gone through (the connection broke after sending, a
    timeout, a 5xx), the next attempt first looks for the outbox key in the channel's recent
    history, so a retry never posts twice. A channel the bot cannot post to (missing, not
    invited, archived) or a token Slack no longer takes is a permanent error that names the
    channel and the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient
from slack_sdk.webhook.webhook_response import WebhookResponse

from bot.clock import Clock, SystemClock
from bot.domain.follows import dm_user
from bot.domain.home import HomeView
from bot.domain.model import Alert, ChannelName
from bot.domain.text import Paragraph, Rich, Span, shorten
from bot.errors import DeliveryError
from bot.transports.base import (
    Answer,
    Capabilities,
    CommandHandler,
    Inbound,
    alert_rich,
    answer_rich,
)

log = logging.getLogger(__name__)
#: the last part of a command's response_url, a credential for half an hour
_RESPONSE_URL_SECRET = re.compile(
    r"(\\*/commands\\*/[^/\s\"'\\]+\\*/[^/\s\"'\\]+\\*/)[^\s\"'\\]+"  # also as JSON's \/
)


class _NoResponseUrls(logging.Filter):
    """slack_sdk's debug lines show each Socket Mode message whole, and the URL each answer
    goes to: the response_url's secret part is cut from them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _RESPONSE_URL_SECRET.sub(r"\1…", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_answers_log = logging.getLogger(f"{__name__}.answers")
_answers_log.addFilter(_NoResponseUrls())
logging.getLogger(f"{__name__}.socket").addFilter(_NoResponseUrls())

Mode = Literal["socket", "http"]
Sleep = Callable[[float], Awaitable[None]]
#: Gives the Home tab of a person (their Slack user id).
HomeProvider = Callable[[str], Awaitable[HomeView]]

DEFAULT_API_URL = "https://slack.com/api/"
DEFAULT_PATH = "/slack/events"
#: The message metadata type of every alert (``event_payload``: ``alert_id``, ``key``).
METADATA_EVENT = "treaty_alert"
#: Slack's limits: text of one section block, blocks per message, message text.
MAX_SECTION = 3_000
MAX_BLOCKS = 50
MAX_TEXT = 40_000
#: What all blocks of one message may hold together; Slack refuses much more than this
#: (``msg_blocks_too_long``) although the limit is not documented.
MAX_BLOCKS_CHARS = 12_000
#: The fallback ``text`` is what notifications show; it need not hold everything.
MAX_FALLBACK = 4_000
#: How many characters of a command are passed on.
MAX_COMMAND = 1_000
#: How many handled commands (and undecided posts) are remembered.
LEDGER_SIZE = 2_000
#: Breaks ``@channel``, ``@here`` and ``@everyone`` so that nothing reads them as mentions.
WORD_JOINER = "\u2060"
#: Said when the command handler itself fails (the details go to the log).
APOLOGY = "Sorry, that command failed on our side. The maintainers have the details in the log."
#: The label of the link that ends a message cut short.
MORE_LINK_LABEL = "Read more"
#: Slack's limits of a Home tab: blocks in a view, a header's text, a button's value.
MAX_VIEW_BLOCKS = 100
MAX_HEADER = 150
MAX_BUTTON_VALUE = 2_000
#: The ``action_id`` of the Unfollow buttons of the Home tab.
UNFOLLOW_ACTION = "unfollow"
#: Error codes of ``conversations.open`` after which no direct message can be opened.
_NO_DM = frozenset(
    {"user_not_found", "user_not_visible", "user_disabled", "cannot_dm_bot", "not_allowed"}
)

_BROADCAST = re.compile(r"@(?=(?:channel|here|everyone)\b)", re.IGNORECASE)
_URLISH = re.compile(
    r"^(?:[a-z][a-z0-9+.\-]*://\S*|www\.\S+|[\w\-]+(?:\.[\w\-]+)*\.[a-z]{2,}(?:[/:?#]\S*)?)$",
    re.IGNORECASE,
)
#: Error codes that mean Slack does not take the bot token (any more).
_TOKEN_REFUSED = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "no_permission",
        "not_allowed_token_type",
        "team_access_not_granted",
        "missing_scope",
        "ekm_access_denied",
    }
)
#: Error codes after which the post may still have been made.
_MAYBE_POSTED = frozenset({"internal_error", "fatal_error"})
#: Error codes worth trying again later (the post was not made).
_TRANSIENT = frozenset({"service_unavailable", "request_timeout", "ratelimited"})
#: Network trouble as aiohttp lets it through.
_NETWORK = (aiohttp.ClientError, OSError, TimeoutError)


class ChannelAddress(Protocol):
    """A logical channel's addresses as the configuration has them (``ChannelTarget``)."""

    @property
    def slack(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class SlackTimeouts:
    """How long to wait for what, in seconds."""

    request: float = 20.0  # one Web API call
    start: float = 30.0  # auth.test plus opening the Socket Mode connection
    rate_limit_budget: float = 120.0  # longest wait on 429s within one send
    rate_limit_retries: int = 5  # 429s within one send before the outbox takes over
    stop_grace: float = 5.0  # how long commands in flight may finish when stopping
    ping_interval: float = 10.0  # Socket Mode keep-alive
    down_grace: float = 60.0  # a Socket Mode reconnect shorter than this is no problem
    history_pages: int = 5  # pages of 200 messages searched for an earlier post
    history_margin: timedelta = timedelta(hours=1)  # searched before the alert's time


# ----------------------------------------------------------------------------- rendering


def escape(text: str) -> str:
    """Plain text as mrkdwn that shows literally and mentions nobody.

    ``&``, ``<`` and ``>`` become entities (``&`` first, so an entity in the input shows as
    typed), and ``@channel``/``@here``/``@everyone`` get an invisible word joiner.
    """
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@" + WORD_JOINER, text)


def safe_url(href: str | None) -> str | None:
    """``href`` fit for ``<url|label>``: an absolute http(s) URL, or ``None``.

    URLs with spaces or control characters are refused; ``<``, ``>`` and ``|`` (which would end
    the link early) are percent-encoded.
    """
    if not href:
        return None
    href = href.strip()
    if any(ord(ch) <= 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in href):
        return None
    try:
        parts = urlsplit(href)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return href.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def _host(url: str) -> str:
    if "://" not in url:
        url = "http://" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.lower().removeprefix("www.")


def link_label(text: str, url: str) -> str:
    """The label of a link: its text, unless that looks like an address elsewhere (then the
    real URL, so ``<https://evil|https://bank>`` cannot be built from feed text)."""
    label = " ".join(text.split())
    if not label:
        return url
    if _URLISH.match(label) and _host(label) != _host(url):
        return url
    return label


def _styled(text: str, style: str) -> str:
    """``text`` in mrkdwn ``style``; the markers hug the words, or Slack ignores them."""
    if style == "plain" or not text.strip():
        return text
    core = text.strip()
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    if style == "code":
        core = core.replace("`", "\u02cb")
        marker = "`"
    else:
        marker = "*" if style == "bold" else "_"
    return f"{lead}{marker}{core}{marker}{trail}"


def render_span(span: Span, *, links: bool = True) -> str:
    url = safe_url(span.href) if links else None
    if url is None:
        return _styled(escape(span.text), span.style)
    token = f"<{url}|{escape(link_label(span.text, url))}>"
    return token if span.style == "code" else _styled(token, span.style)


@dataclass(frozen=True, slots=True)
class _Unit:
    """One line of a message: a paragraph or one bullet point."""

    prefix: str
    spans: tuple[Span, ...]

    def render(self, *, links: bool = True) -> str:
        return self.prefix + "".join(render_span(s, links=links) for s in self.spans)

    def fitted(self, limit: int) -> str:
        """Rendered within ``limit`` characters: long texts are shortened, links kept."""
        text = self.render()
        if len(text) <= limit:
            return text
        cap = max(len(s.text) for s in self.spans)
        while cap > 40:
            cap = cap * 2 // 3
            spans = tuple(
                Span(shorten(s.text, cap), s.style, s.href) if len(s.text) > cap else s
                for s in self.spans
            )
            text = _Unit(self.prefix, spans).render()
            if len(text) <= limit:
                return text
        # Only the links are long now: show the texts without them.
        text = _Unit(self.prefix, tuple(Span(s.text, s.style) for s in self.spans)).render()
        return text if len(text) <= limit else text[: limit - 1] + "…"


def _units(blocks: Rich) -> list[_Unit]:
    units: list[_Unit] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            units.append(_Unit("", block.spans))
        else:
            units.extend(_Unit("• ", item) for item in block.items)
    return [u for u in units if any(s.text.strip() for s in u.spans)]


def _pack(lines: Iterable[str], limit: int) -> list[str]:
    """Lines joined into as few texts of at most ``limit`` characters as they fit in."""
    packed: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            packed.append(current)
        current = line
    if current:
        packed.append(current)
    return packed


def _tail(link: str | None, kept: Sequence[str]) -> str:
    """What ends a cut message: an ellipsis, and the link unless it is still there."""
    url = safe_url(link)
    if url is None or any(f"<{url}|" in text for text in kept):
        return "…"
    return f"… <{url}|{MORE_LINK_LABEL}>"


def render_blocks(blocks: Rich, link: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Neutral rich text as Block Kit sections and a fallback text, within Slack's limits.

    ``link`` (an alert's URL) is kept when the message has to be cut.
    """
    lines = [unit.fitted(MAX_SECTION) for unit in _units(blocks)] or ["…"]
    sections = _pack(lines, MAX_SECTION)
    if len(sections) > MAX_BLOCKS or sum(map(len, sections)) > MAX_BLOCKS_CHARS:
        budget = MAX_BLOCKS_CHARS - 200  # room for the tail
        kept: list[str] = []
        for section in sections:
            if len(kept) >= MAX_BLOCKS - 1 or sum(map(len, kept)) + len(section) > budget:
                break
            kept.append(section)
        sections = [*kept, _tail(link, kept)]
    fallback_lines: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > MAX_FALLBACK - 200:
            fallback_lines.append(_tail(link, fallback_lines))
            break
        fallback_lines.append(line)
        size += len(line) + 1
    section_blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}} for text in sections
    ]
    return section_blocks, "\n".join(fallback_lines)


def alert_message(alert: Alert, key: str, channel_id: str) -> dict[str, Any]:
    """The ``chat.postMessage`` arguments for one alert."""
    blocks, text = render_blocks(alert_rich(alert), alert.url)
    return {
        "channel": channel_id,
        "text": text,
        "blocks": blocks,
        "metadata": {
            "event_type": METADATA_EVENT,
            "event_payload": {"alert_id": str(alert.id), "key": key},
        },
        "unfurl_links": False,
        "unfurl_media": False,
    }


def answer_message(answer: Answer) -> dict[str, Any]:
    """What goes to a command's ``response_url``."""
    blocks, text = render_blocks(answer_rich(answer))
    return {
        "text": text,
        "blocks": blocks,
        "response_type": "in_channel" if answer.share else "ephemeral",
        "unfurl_links": False,
        "unfurl_media": False,
    }


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": shorten(text, MAX_HEADER)}}


def home_view_payload(view: HomeView) -> dict[str, Any]:
    """The ``views.publish`` view of a person's Home tab (at most ``MAX_VIEW_BLOCKS`` blocks)."""
    blocks: list[dict[str, Any]] = [_header(view.title), *render_blocks(view.intro)[0]]
    blocks += [{"type": "divider"}, _header(view.dates_title)]
    if view.dates:
        text = "\n".join(_Unit("• ", line).fitted(MAX_SECTION) for line in view.dates)
        blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    else:
        blocks += render_blocks(view.no_dates)[0]
    blocks += [{"type": "divider"}, _header(view.follows_title)]
    room = MAX_VIEW_BLOCKS - len(blocks)
    if not view.follows:
        blocks += render_blocks(view.no_follows)[0]
    for follow in view.follows[:room]:
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _Unit("", follow.line).fitted(MAX_SECTION)},
                "accessory": {
                    "type": "button",
                    "text": {"type": "plain_text", "text": view.unfollow_label},
                    "action_id": UNFOLLOW_ACTION,
                    "value": follow.key[:MAX_BUTTON_VALUE],
                },
            }
        )
    return {"type": "home", "blocks": blocks[:MAX_VIEW_BLOCKS]}


# ----------------------------------------------------------------------------- helpers


class _Ledger:
    """A bounded, ordered set of strings (handled commands, undecided posts)."""

    def __init__(self, size: int = LEDGER_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def discard(self, item: str) -> None:
        self._items.pop(item, None)


def _error_code(err: SlackApiError) -> str:
    data = getattr(err.response, "data", None)
    code = data.get("error") if isinstance(data, dict) else None
    return str(code) if code else "no error code"


def _status(err: SlackApiError) -> int:
    status = getattr(err.response, "status_code", 0)
    return status if isinstance(status, int) else 0


def _retry_after(err: SlackApiError) -> float:
    headers = getattr(err.response, "headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        seconds = float(value) if value is not None else 1.0
    except (TypeError, ValueError):
        seconds = 1.0
    return max(seconds, 0.0)


def _request_headers(request: web.Request) -> dict[str, str | Sequence[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    return dict(headers)


def _command_key(command: Mapping[str, Any], body: str) -> str:
    """What identifies one invocation of a command, the same on every retry of it."""
    for field in ("trigger_id", "response_url"):
        value = command.get(field)
        if isinstance(value, str) and value:
            return f"{field}:{value}"
    return "body:" + hashlib.sha256(body.encode()).hexdigest()


# ----------------------------------------------------------------------------- the transport


class _QuietBolt(logging.Filter):
    """Drops bolt's warnings that the token it found in SLACK_BOT_TOKEN is unused: the
    transport gives bolt a client that holds the token and an ``authorize`` function on
    purpose, and an operator would read those warnings as something to fix."""

    UNUSED_TOKEN = ("`token` will be unused", "`token` (or SLACK_BOT_TOKEN env variable)")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.UNUSED_TOKEN)


def _bolt_logger() -> logging.Logger:
    logger = logging.getLogger(f"{__name__}.bolt")
    if not any(isinstance(f, _QuietBolt) for f in logger.filters):
        logger.addFilter(_QuietBolt())
    return logger


class SlackTransport:
    """Alerts and answers in Slack (see the module docstring for the guarantees)."""

    name = "slack"

    def __init__(
        self,
        *,
        bot_token: str,
        channels: Mapping[str, str],
        mode: Mode = "socket",
        app_token: str | None = None,
        signing_secret: str | None = None,
        api_url: str | None = None,
        command: str = "/treaty",
        min_interval: float = 1.0,
        timeouts: SlackTimeouts | None = None,
        clock: Clock | None = None,
        sleep: Sleep | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        if mode not in ("socket", "http"):
            raise ValueError(f"unknown Slack mode {mode!r}; use 'socket' or 'http'")
        url = (api_url or DEFAULT_API_URL).strip()
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError("the Slack API URL must be an http(s) URL (SLACK_API_URL)")
        if not bot_token.startswith("xoxb-"):
            raise DeliveryError(
                "SLACK_BOT_TOKEN must be the app's bot token, which starts with xoxb- "
                "(OAuth & Permissions; see docs/slack.md)",
                resource="slack",
                permanent=True,
            )
        if mode == "socket" and not (app_token or "").startswith("xapp-"):
            raise DeliveryError(
                "Socket Mode needs SLACK_APP_TOKEN, an app-level token that starts with xapp- "
                "and has the connections:write scope (Basic Information, App-Level Tokens; "
                "see docs/slack.md)",
                resource="slack",
                permanent=True,
            )
        if mode == "http" and not signing_secret:
            raise DeliveryError(
                "Slack http mode needs SLACK_SIGNING_SECRET (Basic Information, App "
                "Credentials; see docs/slack.md)",
                resource="slack",
                permanent=True,
            )
        self.mode: Mode = mode
        self.api_url = url if url.endswith("/") else url + "/"
        self.command = command
        self.timeouts = timeouts or SlackTimeouts()
        self.capabilities = Capabilities(
            max_text=MAX_BLOCKS_CHARS, rich=True, min_interval=min_interval
        )
        self.clock: Clock = clock or SystemClock()
        self._bot_token = bot_token
        self._app_token = app_token or ""
        self._signing_secret = signing_secret or ""
        self._sleep: Sleep = sleep or asyncio.sleep
        self._monotonic = monotonic or time.monotonic
        self._channels: dict[str, str] = {name: cid for name, cid in channels.items() if cid}

        self._session: aiohttp.ClientSession | None = None
        self._client: AsyncWebClient | None = None
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._on_command: CommandHandler | None = None
        self._auth: AuthorizeResult | None = None
        self._bot_user = "Treaty Watch"
        self._problem: str | None = None
        self._handled = _Ledger()
        self._undecided = _Ledger()
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_post: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._command_slots = asyncio.Semaphore(8)
        self._history_warned = False
        self._down_since: float | None = None
        self._home: HomeProvider | None = None
        self._direct: dict[str, str] = {}  # user id -> the id of their direct messages

    def __repr__(self) -> str:  # never a token or the secret
        return f"SlackTransport(mode={self.mode!r}, api_url={self.api_url!r})"

    # -- the contract -------------------------------------------------------------------------

    def reaches(self, channel: ChannelName) -> bool:
        return channel in self._channels or dm_user(channel) is not None

    def serve_home(self, provider: HomeProvider) -> None:
        """Publish each person's Home tab from ``provider`` (see "App Home" above)."""
        self._home = provider

    def channel_id(self, channel: str) -> str | None:
        return self._channels.get(channel)

    def set_channels(self, channels: Mapping[str, ChannelAddress]) -> None:
        """Take the channel -> Slack id map of a reloaded configuration."""
        self._channels = {name: t.slack for name, t in channels.items() if t.slack}

    def problem(self) -> str | None:
        if self._problem:
            return self._problem
        if self._client is None or self._app is None:
            return "not connected to Slack"
        if self.mode == "socket":
            if self._socket_connected():
                self._down_since = None
                return None
            # Slack drops connections now and then; a reconnect within the grace is no problem.
            now = self._monotonic()
            if self._down_since is None:
                self._down_since = now
            if now - self._down_since >= self.timeouts.down_grace:
                return (
                    "the Socket Mode connection to Slack has been down for "
                    f"{now - self._down_since:.0f} s; slack_sdk keeps reconnecting"
                )
        return None

    async def start(self, on_command: CommandHandler) -> None:
        self._on_command = on_command
        if self._app is not None:
            return
        self._problem = None
        try:
            async with asyncio.timeout(self.timeouts.start):
                self._session = aiohttp.ClientSession(
                    timeout=aiohttp.ClientTimeout(total=self.timeouts.request)
                )
                self._client = AsyncWebClient(
                    token=self._bot_token,
                    base_url=self.api_url,
                    session=self._session,
                    retry_handlers=[],  # a blind retry could post twice; send() decides
                    logger=logging.getLogger(f"{__name__}.web"),
                )
                await self._check_bot_token()
                app = self._build_app()
                if self.mode == "socket":
                    await self._connect_socket(app)
                self._app = app
        except TimeoutError:
            await self._close()
            self._problem = (
                f"no answer from Slack ({self.api_url}) within {self.timeouts.start:g} s"
            )
            raise DeliveryError(self._problem, resource="slack") from None
        except BaseException as err:
            await self._close()
            if isinstance(err, DeliveryError):
                self._problem = err.detail
            raise
        log.info(
            "slack connected mode=%s bot=%s team=%s channels=%d",
            self.mode,
            self._bot_user,
            self._auth.team_id if self._auth else None,
            len(self._channels),
        )

    async def stop(self) -> None:
        self._on_command = None
        await self._close()

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        user = dm_user(channel)
        if user is not None and self._client is not None:
            channel_id: str | None = await self._direct_channel(self._client, user)
        else:
            channel_id = self._channels.get(channel)
        where = f"channel {channel} (Slack {channel_id})" if channel_id else f"channel {channel}"
        if channel_id is None and user is None:
            raise DeliveryError(
                "no Slack channel id is configured for this channel: add "
                f"channels.{channel}.slack (the id, such as C0123ABCD) to bot.yaml",
                resource=where,
                permanent=True,
            )
        client = self._client
        if client is None or channel_id is None:
            raise DeliveryError("the Slack transport is not connected", resource=where)
        lock = self._locks.setdefault(channel_id, asyncio.Lock())
        async with lock:
            if key in self._undecided:
                found = await self._find_posted(client, channel_id, alert, key)
                if found is None:
                    raise DeliveryError(
                        "an earlier attempt may have been posted and the channel's history "
                        "cannot be read now; checked again at the next try",
                        resource=where,
                    )
                self._undecided.discard(key)
                if found:
                    log.info(
                        "slack: an earlier attempt was posted after all channel=%s key=%s",
                        channel,
                        key,
                    )
                    return
            await self._post(client, alert_message(alert, key, channel_id), key, where)

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        client = self._client
        user = dm_user(channel)
        if user is not None and client is not None:
            try:
                channel_id: str | None = await self._direct_channel(client, user)
            except DeliveryError:
                return False  # send() says why
        else:
            channel_id = self._channels.get(channel)
        if channel_id is None or client is None:
            return False
        found = await self._find_posted(client, channel_id, alert, key)
        if found is None:
            self._undecided.add(key)  # send() checks again before it posts
            return False
        return found

    # -- HTTP mode ----------------------------------------------------------------------------

    def routes(self, path: str = DEFAULT_PATH) -> list[web.RouteDef]:
        """The route Slack calls in HTTP mode, for the bot's own ``aiohttp`` application."""
        return [web.post(path, self._handle_http)]

    def mount(self, app: web.Application, path: str = DEFAULT_PATH) -> None:
        """Add ``routes(path)`` to ``app`` (before the application starts)."""
        app.router.add_routes(self.routes(path))

    async def _handle_http(self, request: web.Request) -> web.StreamResponse:
        bolt = self._app
        if self.mode != "http":
            return web.json_response({"error": "Slack runs in Socket Mode"}, status=404)
        if bolt is None:
            return web.json_response({"error": "not ready"}, status=503)
        raw = await request.read()
        bolt_request = AsyncBoltRequest(
            body=raw.decode("utf-8", errors="replace"),  # a mangled body fails the signature
            query=request.query_string,
            headers=_request_headers(request),
        )
        response = await bolt.async_dispatch(bolt_request)
        return _to_aiohttp(response)

    # -- start-up -----------------------------------------------------------------------------

    async def _check_bot_token(self) -> None:
        client = self._require_client()
        try:
            result = await client.auth_test()
        except (SlackApiError, *_NETWORK) as err:
            raise self._startup_error(
                err,
                "auth.test",
                "SLACK_BOT_TOKEN",
                "copy the Bot User OAuth Token (xoxb-) from the app's OAuth & Permissions page, "
                "reinstall the app if it was removed, and restart (docs/slack.md)",
            ) from None
        data = result.data if isinstance(result.data, dict) else {}
        self._bot_user = str(data.get("user") or self._bot_user)
        self._auth = AuthorizeResult(
            enterprise_id=data.get("enterprise_id"),
            team_id=data.get("team_id"),
            team=data.get("team"),
            url=data.get("url"),
            bot_user_id=data.get("user_id"),
            bot_id=data.get("bot_id"),
            bot_token=self._bot_token,
        )

    def _startup_error(self, err: Exception, call: str, token: str, fix: str) -> DeliveryError:
        """What a failed start-up call means: a refused token (permanent: what to do), another
        API error, or no way to the API."""
        if not isinstance(err, SlackApiError):
            return DeliveryError(
                f"cannot reach the Slack API at {self.api_url}: {type(err).__name__}",
                resource="slack",
            )
        code = _error_code(err)
        if code in _TOKEN_REFUSED or _status(err) in (401, 403):
            return DeliveryError(
                f"Slack rejected {token}: {code}: {fix}", resource="slack", permanent=True
            )
        return DeliveryError(f"{call} failed (HTTP {_status(err)}, {code})", resource="slack")

    def _build_app(self) -> AsyncApp:
        http = self.mode == "http"
        auth = self._auth

        async def authorize(enterprise_id: str | None, team_id: str | None) -> AuthorizeResult:
            # The token was checked by auth.test at start: no call to Slack per request.
            if auth is None:
                raise RuntimeError("SlackTransport authorizes only after auth.test")
            return auth

        # Every value is given, so that bolt reads nothing from the environment (but
        # SLACK_BOT_TOKEN, which it reads whatever it is given: see _QuietBolt).
        app = AsyncApp(
            name="treaty-bot",
            client=AsyncWebClient(
                base_url=self.api_url,
                session=self._session,
                logger=logging.getLogger(f"{__name__}.web"),
            ),
            authorize=authorize,
            signing_secret=self._signing_secret,
            request_verification_enabled=http,
            ssl_check_enabled=http,
            url_verification_enabled=http,
            logger=_bolt_logger(),
        )

        async def on_slash(
            ack: AsyncAck,
            command: dict[str, Any],
            respond: AsyncRespond,
            request: AsyncBoltRequest,
        ) -> None:
            await self._on_slash(ack, command, respond, request)

        app.command(self.command)(on_slash)

        async def on_home_opened(event: dict[str, Any]) -> None:
            if event.get("tab", "home") == "home" and event.get("user"):
                self._spawn(self._publish_home(str(event["user"])), "slack-home")

        async def on_unfollow(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()  # first: Slack gives up after 3 s
            user = str((body.get("user") or {}).get("id") or "")
            key = str(action.get("value") or "")
            if user and key:
                self._spawn(self._unfollow_from_home(user, key), "slack-home-unfollow")

        app.event("app_home_opened")(on_home_opened)
        app.action(UNFOLLOW_ACTION)(on_unfollow)
        return app

    async def _connect_socket(self, app: AsyncApp) -> None:
        web_client = app.client
        try:
            opened = await web_client.apps_connections_open(app_token=self._app_token)
        except (SlackApiError, *_NETWORK) as err:
            raise self._startup_error(
                err,
                "apps.connections.open",
                "SLACK_APP_TOKEN",
                "create an app-level token with the connections:write scope (Basic Information, "
                "App-Level Tokens), turn Socket Mode on, and restart (docs/slack.md)",
            ) from None
        handler = AsyncSocketModeHandler(
            app,
            app_token=self._app_token,
            logger=logging.getLogger(f"{__name__}.socket"),
            web_client=web_client,
            ping_interval=self.timeouts.ping_interval,
        )
        self._socket = handler
        handler.client.wss_uri = str(opened["url"])
        await handler.connect_async()  # type: ignore[no-untyped-call]

    def _socket_connected(self) -> bool:
        handler = self._socket
        if handler is None:
            return False
        client = handler.client
        session = client.current_session
        return not client.closed and not client.stale and session is not None and not session.closed

    async def _close(self) -> None:
        self._app = None
        handler, self._socket = self._socket, None
        if handler is not None:
            client = handler.client
            with contextlib.suppress(Exception):
                await handler.close_async()  # type: ignore[no-untyped-call]
            # slack_sdk cancels its own tasks without waiting for them: wait here.
            pending = [
                task
                for task in (
                    client.message_processor,
                    client.message_receiver,
                    client.current_session_monitor,
                )
                if task is not None
            ]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._tasks:
            _, still = await asyncio.wait(set(self._tasks), timeout=self.timeouts.stop_grace)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
            self._tasks.clear()
        self._client = None
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _require_client(self) -> AsyncWebClient:
        if self._client is None:
            raise DeliveryError("the Slack transport is not connected", resource="slack")
        return self._client

    # -- commands -----------------------------------------------------------------------------

    async def _on_slash(
        self,
        ack: AsyncAck,
        command: Mapping[str, Any],
        respond: AsyncRespond,
        request: AsyncBoltRequest,
    ) -> None:
        await ack()  # first: Slack gives up after 3 s
        key = _command_key(command, str(request.raw_body))
        retry = next(iter(request.headers.get("x-slack-retry-num") or ()), None)
        if key in self._handled:
            log.info("slack: a command delivered again is not run again retry=%s", retry)
            return
        self._handled.add(key)
        channel = command.get("channel_id")
        inbound = Inbound(
            platform="slack",
            user=str(command.get("user_id") or ""),
            channel=str(channel) if channel else None,
            text=str(command.get("text") or "")[:MAX_COMMAND].strip(),
            event_id=key,
        )
        task = asyncio.create_task(self._answer(inbound, respond), name="slack-command")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, inbound: Inbound, respond: AsyncRespond) -> None:
        async with self._command_slots:
            handler = self._on_command
            if handler is None:
                return
            try:
                answer = await handler(inbound)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slack: the command handler failed user=%s", inbound.user)
                answer = Answer("", (Paragraph((Span(APOLOGY),)),))
            if answer.elsewhere:
                return
            # a long answer takes a while to render and escape: off the loop
            message = await asyncio.to_thread(answer_message, answer)
            try:
                async with asyncio.timeout(self.timeouts.request):
                    response = await self._post_answer(respond.response_url, message)
            except asyncio.CancelledError:
                raise
            except Exception as err:  # the answer is lost, the bot is not
                log.warning(
                    "slack: could not answer a command user=%s error=%s",
                    inbound.user,
                    type(err).__name__,
                )
                return
            if response.status_code != 200:
                log.warning(
                    "slack: the answer to a command was refused user=%s status=%s body=%s",
                    inbound.user,
                    response.status_code,
                    (response.body or "")[:200],
                )

    async def _post_answer(self, url: str | None, message: dict[str, Any]) -> WebhookResponse:
        """POST an answer to the command's response_url over this transport's HTTP session,
        whose connections are kept and reused (bolt's ``respond()`` opens one per answer)."""
        if url is None:
            raise ValueError("the command came without a response_url")
        if not message.get("blocks"):
            message = {k: v for k, v in message.items() if k != "blocks"}
        client = AsyncWebhookClient(
            url=url,
            session=self._session,
            timeout=int(self.timeouts.request) + 1,
            logger=_answers_log,
        )
        return await client.send_dict(message)

    # -- App Home -----------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_home(self, user: str) -> None:
        """Publish ``user``'s Home tab (a failure is logged: the next opening tries again)."""
        provider, client = self._home, self._client
        if provider is None or client is None:
            return
        try:
            view = home_view_payload(await provider(user))
            async with asyncio.timeout(self.timeouts.request):
                await client.views_publish(user_id=user, view=view)
        except asyncio.CancelledError:
            raise
        except (SlackApiError, *_NETWORK) as err:
            code = _error_code(err) if isinstance(err, SlackApiError) else type(err).__name__
            log.warning("slack: could not publish the Home tab user=%s error=%s", user, code)
        except Exception:
            log.exception("slack: the Home tab failed user=%s", user)

    async def _unfollow_from_home(self, user: str, key: str) -> None:
        """An Unfollow button: ``unfollow KEY`` for that person, then the page again."""
        handler = self._on_command
        if handler is None:
            return
        async with self._command_slots:
            quoted = f'"{key}"'  # the key as it is, spaces and all (unfollow's quotes)
            try:
                await handler(Inbound("slack", user, None, f"unfollow {quoted}"))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("slack: unfollow from the Home tab failed user=%s", user)
        await self._publish_home(user)

    # -- direct messages ----------------------------------------------------------------------

    async def _direct_channel(self, client: AsyncWebClient, user: str) -> str:
        """The id of ``user``'s direct messages with the bot (``conversations.open``)."""
        known = self._direct.get(user)
        if known is not None:
            return known
        where = f"direct messages of {user}"
        try:
            async with asyncio.timeout(self.timeouts.request):
                response = await client.conversations_open(users=user)
        except SlackApiError as err:
            status, code = _status(err), _error_code(err)
            if status == 429 or code == "ratelimited" or status >= 500 or code in _TRANSIENT:
                raise DeliveryError(
                    f"Slack could not open the direct messages now (HTTP {status}, {code})",
                    resource=where,
                ) from None
            if code == "missing_scope":
                fix = (
                    "the bot token lacks the im:write scope (missing_scope): add it "
                    "(docs/slack-app-manifest.yaml) and reinstall the app"
                )
            elif code in _NO_DM:
                fix = f"{code}: Slack cannot open a direct message with this person"
            else:
                fix = f"Slack refused to open the direct messages (HTTP {status}, {code})"
            raise DeliveryError(fix, resource=where, permanent=True) from None
        except _NETWORK as err:
            raise DeliveryError(
                f"cannot reach Slack: {type(err).__name__}", resource=where
            ) from None
        data = response.data if isinstance(response.data, dict) else {}
        channel_id = str((data.get("channel") or {}).get("id") or "")
        if not channel_id:
            raise DeliveryError("conversations.open gave no channel", resource=where)
        self._direct[user] = channel_id
        return channel_id

    # -- posting ------------------------------------------------------------------------------

    async def _pace(self, channel_id: str) -> None:
        wait = self._next_post.get(channel_id, 0.0) - self._monotonic()
        if wait > 0:
            await self._sleep(wait)

    def _posted(self, channel_id: str) -> None:
        self._next_post[channel_id] = self._monotonic() + self.capabilities.min_interval

    async def _post(
        self, client: AsyncWebClient, message: dict[str, Any], key: str, where: str
    ) -> None:
        channel_id = str(message["channel"])
        budget_ends = self._monotonic() + self.timeouts.rate_limit_budget
        limited = 0
        while True:
            await self._pace(channel_id)
            try:
                async with asyncio.timeout(self.timeouts.request):
                    await client.chat_postMessage(**message)
            except SlackApiError as err:
                self._posted(channel_id)
                status, code = _status(err), _error_code(err)
                if status == 429 or code == "ratelimited":
                    wait = max(_retry_after(err), self.capabilities.min_interval)
                    limited += 1
                    if (
                        limited > self.timeouts.rate_limit_retries
                        or self._monotonic() + wait > budget_ends
                    ):
                        raise DeliveryError(
                            f"rate limited by Slack {limited} times (Retry-After {wait:g} s); "
                            "the outbox tries again later",
                            resource=where,
                        ) from None
                    log.info("slack rate limited %s waiting_seconds=%g", where, wait)
                    await self._sleep(wait)
                    continue
                raise self._refused(status, code, key, where) from None
            except aiohttp.ClientConnectorError as err:
                self._posted(channel_id)  # not connected: nothing was sent
                raise DeliveryError(
                    f"cannot reach Slack: {type(err).__name__}", resource=where
                ) from None
            except _NETWORK as err:
                self._posted(channel_id)
                self._undecided.add(key)
                raise DeliveryError(
                    f"the post to Slack broke off ({type(err).__name__}); whether it arrived "
                    "is checked in the channel's history before the next try",
                    resource=where,
                ) from None
            self._posted(channel_id)
            return

    def _refused(self, status: int, code: str, key: str, where: str) -> DeliveryError:
        """The error for a post Slack refused (not a rate limit)."""
        invite = f"invite the bot with /invite @{self._bot_user} in that channel"
        if status >= 500 or code in _MAYBE_POSTED:
            self._undecided.add(key)
            return DeliveryError(
                f"Slack failed (HTTP {status}, {code}); whether the post arrived is checked "
                "in the channel's history before the next try",
                resource=where,
            )
        if code in _TRANSIENT:
            return DeliveryError(f"Slack is unavailable (HTTP {status}, {code})", resource=where)
        if code == "not_in_channel":
            fix = f"the bot is not a member of the channel: {invite}"
        elif code == "channel_not_found":
            fix = (
                "Slack has no such channel, or it is private and the bot is not in it: check "
                f"the channel id in bot.yaml (channels: ... slack: C0123ABCD) and {invite}"
            )
        elif code == "is_archived":
            fix = "the channel is archived: unarchive it, or give bot.yaml another channel id"
        elif code == "missing_scope":
            fix = (
                "the bot token lacks the chat:write scope (missing_scope): add it "
                "(docs/slack-app-manifest.yaml) "
                "and reinstall the app"
            )
        elif code in _TOKEN_REFUSED:
            fix = (
                f"Slack no longer accepts SLACK_BOT_TOKEN ({code}): reinstall the app, set the "
                "new bot token and restart (docs/slack.md)"
            )
        elif code.startswith("restricted_action") or code == "cannot_post_in_channel":
            fix = (
                f"the channel does not let the bot post ({code}): allow apps to post there, "
                "or give bot.yaml another channel id"
            )
        else:
            fix = f"Slack refused the message (HTTP {status}, {code})"
        if code in ("not_in_channel", "channel_not_found", "is_archived"):
            fix = f"{code}: {fix}"
        return DeliveryError(fix, resource=where, permanent=True)

    async def _find_posted(
        self, client: AsyncWebClient, channel_id: str, alert: Alert, key: str
    ) -> bool | None:
        """Whether the channel's recent history has a post of ``key``; ``None``: cannot tell now.

        Looks back to an hour before the alert was made (our post is later), at most a few
        pages. A history the bot may never read (a missing scope) counts as "not posted", with a
        warning, since the alert must not be lost.
        """
        cutoff = (min(alert.at, self.clock.now()) - self.timeouts.history_margin).timestamp()
        cursor: str | None = None
        for _ in range(self.timeouts.history_pages):
            try:
                async with asyncio.timeout(self.timeouts.request):
                    response = await client.conversations_history(
                        channel=channel_id, limit=200, include_all_metadata=True, cursor=cursor
                    )
            except SlackApiError as err:
                code = _error_code(err)
                if code in ("missing_scope", "not_in_channel", "channel_not_found"):
                    if not self._history_warned:
                        self._history_warned = True
                        log.warning(
                            "slack: cannot read the history of channel=%s (%s), so an "
                            "interrupted post may be repeated; give the bot channels:history, "
                            "groups:history and im:history (docs/slack-app-manifest.yaml)",
                            channel_id,
                            code,
                        )
                    return False
                log.warning(
                    "slack: cannot check an earlier post channel=%s error=%s", channel_id, code
                )
                return None
            except _NETWORK as err:
                log.warning(
                    "slack: cannot check an earlier post channel=%s error=%s",
                    channel_id,
                    type(err).__name__,
                )
                return None
            data = response.data if isinstance(response.data, dict) else {}
            for message in data.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") == METADATA_EVENT and payload.get("key") == key:
                    return True
                try:
                    if float(message.get("ts", "0")) < cutoff:
                        return False
                except (TypeError, ValueError):
                    continue
            cursor = (data.get("response_metadata") or {}).get("next_cursor") or None
            if not data.get("has_more") or not cursor:
                return False
        return False


def _to_aiohttp(response: BoltResponse) -> web.Response:
    content_type = response.headers.get("content-type", ["text/plain"])[0]
    return web.Response(
        status=response.status,
        body=response.body.encode(),
        headers={"Content-Type": content_type},
    )
