"""Matrix: ``!treaty`` commands and alerts in rooms, through matrix-nio's ``AsyncClient``.

This is the only module that imports nio. What it promises, beyond the transport contract of
``bot.transports.base``:

Login
    With an access token (checked with ``whoami``) or a password. A password login happens
    once: its device id and token are kept in ``state_dir/session.json`` and reused on every
    start, so the bot stays one device (which is what makes transaction ids and the crypto store
    work across restarts). Refused credentials raise a permanent ``DeliveryError`` that never
    contains the token or the password. A process holds its ``state_dir`` while it runs;
    another process of the machine (a replica) takes the next free sibling, ``matrix.2``...

Commands
    An ``m.text`` message that starts with the prefix, in a configured room, from someone else,
    is passed to the command handler; the answer goes back as an ``m.notice`` reply. Notices
    (other bots), edits, redactions and the bot's own messages are never commands. A command is
    executed at most once, ever: its event id goes into a bounded ledger
    (``state_dir/ledger.json``) *before* it runs, events older than the start of this process or
    than the bot's join of the room are ignored, and nothing in the first timeline of a sync
    without a token is executed. So neither a restart, nor a lost sync token, nor a re-invite
    replays old commands; a command that arrives while the bot is down is not answered.

Alerts
    One ``m.notice`` per alert, with an HTML ``formatted_body`` built from the neutral text
    (a small allow-list of tags, ``http(s)`` links only, everything else escaped), a plain
    ``body``, ``"m.mentions": {}`` and ``@room`` broken by a word joiner, so no alert or answer
    ever notifies a room. The transaction id is derived from the outbox key, so a retried send,
    also after a restart, is dropped by the homeserver as a duplicate; the key is also stored in
    the event (``org.treatywatch.alert``) for ``was_delivered``.

Direct messages
    A logical channel ``dm:@user:server`` is a room of the bot and that person alone: created
    on the first alert (``is_direct``, the person invited, encrypted unless the homeserver
    refuses it), marked in the bot's ``m.direct`` account data and remembered per person in
    ``state_dir/direct.json``, so it is the same room after a restart. A person who left it (or
    a room the bot lost) gets a new one. Commands typed there are read like those of a
    configured room. An answer meant for the asker alone (``Answer.direct``: their follows)
    goes to that room, with a short pointer in the room where it was asked.

Faults
    ``M_LIMIT_EXCEEDED`` waits ``retry_after_ms`` for that room only, within a budget, then
    raises a transient error; a room the bot is not in (or cannot be) gives a permanent error
    that says to invite the bot. Every request has a client-side timeout; a failing sync is
    retried with a bounded exponential backoff; ``problem()`` says what is wrong.

Encrypted rooms
    With matrix-nio's ``e2e`` extra, the crypto store lives in ``state_dir/crypto`` and must be
    kept (and backed up) with the device. Keys are shared with every device in the room without
    interactive verification. If the store of a device that already has keys on the server is
    missing, the bot says so in the log and in ``problem()``, keeps working in unencrypted rooms,
    and refuses to post into encrypted ones, rather than posting in plain text or crash-looping.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import html
import json
import logging
import os
import random
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import nio  # type: ignore[import-untyped]

from bot.clock import Clock, SystemClock
from bot.domain.follows import dm_user
from bot.domain.model import Alert, ChannelName
from bot.domain.text import Bullets, Paragraph, Rich, Span, shorten
from bot.errors import DeliveryError
from bot.files import write_atomically
from bot.transports.base import (
    Answer,
    Capabilities,
    CommandHandler,
    Inbound,
    alert_rich,
    answer_rich,
)

log = logging.getLogger(__name__)

#: Where an alert's id and outbox key travel inside the event content.
ALERT_FIELD = "org.treatywatch.alert"
#: The tags a ``formatted_body`` of ours can contain.
ALLOWED_TAGS = frozenset({"p", "br", "strong", "b", "em", "i", "code", "a", "ul", "li"})
HTML_FORMAT = "org.matrix.custom.html"
#: Breaks ``@room`` so that no push rule and no client sees a room mention in it.
WORD_JOINER = "\u2060"
#: Events are limited to 64 KiB; this leaves room for the rest of the event.
MAX_CONTENT_BYTES = 48_000
#: How many handled command event ids are remembered.
LEDGER_SIZE = 2_000
#: How many processes of one machine may each hold a Matrix directory (and so a device).
MAX_DIRECTORIES = 16
#: Said when the command handler itself fails (the details go to the log).
APOLOGY = "Sorry, that command failed on our side. The maintainers have the details in the log."
#: Said in a room when the answer went to the asker in a direct message.
DIRECT_NOTE = "I have answered you in a direct message."
#: Said in a room when the direct message with the answer could not be sent.
DIRECT_FAILED = "I could not send you a direct message just now; please try again later."
#: The state event that turns encryption on in a new room.
ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}

_ROOM_MENTION = re.compile(r"@(?=room)", re.IGNORECASE)
#: Error codes that mean: these credentials will not work, whatever we retry.
_REFUSED = frozenset(
    {
        "M_FORBIDDEN",
        "M_UNKNOWN_TOKEN",
        "M_MISSING_TOKEN",
        "M_USER_DEACTIVATED",
        "M_INVALID_USERNAME",
        "M_USER_LOCKED",
        "M_USER_SUSPENDED",
    }
)
_TOKEN_GONE = frozenset({"M_UNKNOWN_TOKEN", "M_MISSING_TOKEN"})
#: Network trouble, as nio lets it through.
_NETWORK = (aiohttp.ClientError, OSError, TimeoutError)
#: nio's own failures around encryption and room state.
_NIO_LOCAL = (nio.ProtocolError, nio.OlmTrustError, nio.EncryptionError, nio.GroupEncryptionError)


class ChannelAddress(Protocol):
    """A logical channel's addresses as the configuration has them (``ChannelTarget``)."""

    @property
    def matrix(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class MatrixTimeouts:
    """How long to wait for what, in seconds."""

    request: float = 20.0  # one HTTP request, client side
    sync_wait: float = 30.0  # how long the homeserver may hold a sync open
    start: float = 60.0  # login, joins and the first sync together
    backoff_initial: float = 1.0  # the first wait after a failed sync
    backoff_max: float = 30.0  # the longest wait between failed syncs
    rate_limit_budget: float = 30.0  # longest wait on M_LIMIT_EXCEEDED within one send
    room_wait: float = 10.0  # after joining a room on send, wait this long to see it synced
    failures_before_problem: int = 3  # failed syncs in a row before ``problem()`` says so
    retries: int = 2  # nio's own retries of one request after a network error


# ----------------------------------------------------------------------------- rendering


def neutralise_mentions(text: str) -> str:
    """Break every ``@room`` (any case) with an invisible word joiner."""
    return _ROOM_MENTION.sub("@" + WORD_JOINER, text)


def safe_href(href: str | None) -> str | None:
    """``href`` if it is an absolute http(s) URL without spaces or control characters."""
    if not href:
        return None
    href = href.strip()
    if any(ord(ch) < 0x21 or 0x7F <= ord(ch) < 0xA0 for ch in href):
        return None
    try:
        parts = urlsplit(href)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return href


def _span_html(span: Span) -> str:
    text = neutralise_mentions(html.escape(span.text, quote=False)).replace("\n", "<br>")
    if span.style == "bold":
        text = f"<strong>{text}</strong>"
    elif span.style == "italic":
        text = f"<em>{text}</em>"
    elif span.style == "code":
        text = f"<code>{text}</code>"
    href = safe_href(span.href)
    if href is not None:
        text = f'<a href="{html.escape(href, quote=True)}">{text}</a>'
    return text


def _span_text(span: Span) -> str:
    href = safe_href(span.href)
    if href is not None and href != span.text:
        return f"{span.text} <{href}>"
    return span.text


def render_html(blocks: Rich) -> str:
    """Neutral rich text as HTML that uses only ``ALLOWED_TAGS``; all text escaped."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            out.append("<p>" + "".join(_span_html(s) for s in block.spans) + "</p>")
        else:
            items = "".join(
                "<li>" + "".join(_span_html(s) for s in item) + "</li>" for item in block.items
            )
            out.append(f"<ul>{items}</ul>")
    return "".join(out)


def render_text(blocks: Rich) -> str:
    """Neutral rich text as the plain ``body``: a line per paragraph, ``•`` per item."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            lines.append("".join(_span_text(s) for s in block.spans))
        else:
            lines.extend("• " + "".join(_span_text(s) for s in item) for item in block.items)
    return neutralise_mentions("\n".join(lines))


def _shorten_blocks(blocks: Rich, limit: int) -> Rich:
    out: list[Paragraph | Bullets] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            out.append(Paragraph(tuple(_shorten_span(s, limit) for s in block.spans)))
        else:
            out.append(
                Bullets(tuple(tuple(_shorten_span(s, limit) for s in item) for item in block.items))
            )
    return tuple(out)


def _shorten_span(span: Span, limit: int) -> Span:
    return (
        Span(shorten(span.text, limit), span.style, span.href) if len(span.text) > limit else span
    )


def _size(body: str, formatted: str) -> int:
    return len(body.encode()) + len(formatted.encode())


def render_message(blocks: Rich) -> tuple[str, str]:
    """``(body, formatted_body)``, cut to fit in one event (trailing blocks go first)."""
    body, formatted = render_text(blocks), render_html(blocks)
    if _size(body, formatted) <= MAX_CONTENT_BYTES:
        return body, formatted
    kept = list(blocks)
    ellipsis = Paragraph((Span("…"),))
    while len(kept) > 1:
        kept.pop()
        trial = (*kept, ellipsis)
        body, formatted = render_text(trial), render_html(trial)
        if _size(body, formatted) <= MAX_CONTENT_BYTES:
            return body, formatted
    limit = 4_000
    while True:
        trial = (*_shorten_blocks(tuple(kept), limit), ellipsis)
        body, formatted = render_text(trial), render_html(trial)
        if _size(body, formatted) <= MAX_CONTENT_BYTES or limit <= 100:
            return body, formatted
        limit //= 2


def notice_content(blocks: Rich) -> dict[str, Any]:
    """An ``m.notice`` with HTML and plain text that mentions nobody."""
    body, formatted = render_message(blocks)
    return {
        "msgtype": "m.notice",
        "body": body,
        "format": HTML_FORMAT,
        "formatted_body": formatted,
        "m.mentions": {},
    }


def alert_content(alert: Alert, key: str) -> dict[str, Any]:
    content = notice_content(alert_rich(alert))
    content[ALERT_FIELD] = {"id": alert.id, "key": key, "kind": alert.kind}
    return content


def reply_content(answer: Answer, event_id: str, thread_root: str | None) -> dict[str, Any]:
    content = notice_content(answer_rich(answer))
    relation: dict[str, Any] = {"m.in_reply_to": {"event_id": event_id}}
    if thread_root:
        relation.update({"rel_type": "m.thread", "event_id": thread_root, "is_falling_back": False})
    content["m.relates_to"] = relation
    return content


def transaction_id(kind: str, key: str) -> str:
    """A stable transaction id for ``key``: the same on every retry and after restarts."""
    return f"tw.{kind}.{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _http_status(resp: Any) -> int | None:
    status = getattr(getattr(resp, "transport_response", None), "status", None)
    return status if isinstance(status, int) else None


def _final(resp: Any) -> bool:
    """Whether an error response means that retrying the same request cannot help.

    That is a refusal (not in the room, no such room, content the server will not take); a
    rate limit, a refused token (fixed by the operator) or a server error is worth retrying.
    """
    code = resp.status_code
    if code in _TOKEN_GONE or code == "M_LIMIT_EXCEEDED":
        return False
    if code in ("M_FORBIDDEN", "M_NOT_FOUND"):
        return True
    status = _http_status(resp)
    return status is not None and 400 <= status < 500 and status not in (401, 408, 429)


# ----------------------------------------------------------------------------- state files


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path``, crash-safe, with owner-only permissions."""
    write_atomically(path, json.dumps(data).encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable Matrix state file=%s error=%s", path, err)
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True, slots=True)
class _Session:
    user_id: str
    device_id: str
    access_token: str


class _Ledger:
    """The bounded, ordered set of command event ids already handled."""

    def __init__(self, ids: Iterable[str] = (), size: int = LEDGER_SIZE) -> None:
        self._order: deque[str] = deque(maxlen=size)
        self._ids: set[str] = set()
        for event_id in ids:
            self.add(event_id)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        if event_id in self._ids:
            return
        if self._order.maxlen is not None and len(self._order) == self._order.maxlen:
            self._ids.discard(self._order[0])
        self._order.append(event_id)
        self._ids.add(event_id)

    def dump(self) -> list[str]:
        return list(self._order)


# ----------------------------------------------------------------------------- the transport


class MatrixTransport:
    """Alerts and answers in Matrix rooms (see the module docstring for the guarantees)."""

    name = "matrix"
    capabilities = Capabilities(max_text=16_000, rich=True)

    def __init__(
        self,
        *,
        homeserver: str,
        user_id: str,
        rooms: Mapping[str, str],
        state_dir: Path,
        access_token: str | None = None,
        password: str | None = None,
        command_prefix: str = "!treaty",
        admins: Sequence[str] = (),
        encryption: bool = True,
        device_name: str = "Treaty Watch bot",
        timeouts: MatrixTimeouts | None = None,
        clock: Clock | None = None,
    ) -> None:
        if not access_token and not password:
            raise ValueError("MatrixTransport needs an access token or a password")
        if not command_prefix.strip():
            raise ValueError("the command prefix must not be empty")
        self.homeserver = homeserver.rstrip("/")
        self.user_id = user_id
        #: the directory asked for; ``state_dir`` is the one this process holds (see ``_hold``)
        self.base_dir = Path(state_dir)
        self.state_dir = self.base_dir
        self._dir_lock: int | None = None
        self.command_prefix = command_prefix.strip()
        self.admins = frozenset(admins)
        self.encryption = encryption
        self.device_name = device_name
        self.timeouts = timeouts or MatrixTimeouts()
        self.clock: Clock = clock or SystemClock()
        self._access_token = access_token or None
        self._password = password or None
        self._rooms: dict[str, str] = {c: r for c, r in rooms.items() if r}

        self._client: Any = None  # nio.AsyncClient once started
        self._session: _Session | None = None
        self._on_command: CommandHandler | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._room_locks: dict[str, asyncio.Lock] = {}
        self._command_slots = asyncio.Semaphore(4)
        self._synced = asyncio.Event()  # set after every successful sync, then cleared
        self._ledger = _Ledger()
        self._started_ms = 0
        self._joined_ms: dict[str, int] = {}
        self._rooms_changed = False
        self._sync_failures = 0
        self._last_sync_error = ""
        self._auth_problem: str | None = None
        self._crypto_problem: str | None = None
        self._keys_retry_at = 0.0
        self._undecryptable_warned: set[str] = set()
        self._ignored_invites: set[str] = set()
        self._direct: dict[str, str] = {}  # person -> the room of their direct messages
        self._direct_lock = asyncio.Lock()

    def __repr__(self) -> str:  # never the token or the password
        return f"MatrixTransport(homeserver={self.homeserver!r}, user_id={self.user_id!r})"

    # -- paths --------------------------------------------------------------------------------

    @property
    def session_file(self) -> Path:
        return self.state_dir / "session.json"

    @property
    def sync_file(self) -> Path:
        return self.state_dir / "sync.json"

    @property
    def ledger_file(self) -> Path:
        return self.state_dir / "ledger.json"

    @property
    def direct_file(self) -> Path:
        return self.state_dir / "direct.json"

    @property
    def crypto_dir(self) -> Path:
        return self.state_dir / "crypto"

    @property
    def device_id(self) -> str | None:
        return self._session.device_id if self._session else None

    # -- the contract -------------------------------------------------------------------------

    def reaches(self, channel: ChannelName) -> bool:
        return channel in self._rooms or dm_user(channel) is not None

    def room_for(self, channel: str) -> str | None:
        return self._rooms.get(channel)

    def set_channels(self, channels: Mapping[str, ChannelAddress]) -> None:
        """Take the channel -> room map of a reloaded configuration (new rooms are joined)."""
        rooms = {name: target.matrix for name, target in channels.items() if target.matrix}
        if rooms != self._rooms:
            self._rooms = rooms
            self._rooms_changed = True

    def problem(self) -> str | None:
        if self._client is None or self._session is None:
            return self._auth_problem or "not logged in to the Matrix homeserver"
        reasons: list[str] = []
        if self._auth_problem:
            reasons.append(self._auth_problem)
        if self._sync_failures >= self.timeouts.failures_before_problem:
            reasons.append(
                f"{self._sync_failures} syncs with {self.homeserver} failed in a row "
                f"(last: {self._last_sync_error})"
            )
        if self._crypto_problem:
            reasons.append(self._crypto_problem)
        return "; ".join(reasons) or None

    async def start(self, on_command: CommandHandler) -> None:
        if self._sync_task is not None:
            self._on_command = on_command
            return
        self._on_command = on_command
        self._started_ms = self._now_ms()
        self._auth_problem = None
        try:
            await asyncio.to_thread(self._prepare_state_dir)
            ledger = await asyncio.to_thread(read_json, self.ledger_file)
            self._ledger = _Ledger(ledger.get("handled", []) if ledger else [])
            direct = await asyncio.to_thread(read_json, self.direct_file)
            rooms = direct.get("rooms") if direct else None
            if isinstance(rooms, dict):
                self._direct = {str(u): str(r) for u, r in rooms.items()}
            await self._connect()
        except BaseException as err:
            await self._close_client()
            self._session = None
            self._release()
            if isinstance(err, DeliveryError):
                self._auth_problem = str(err)
            raise
        self._sync_task = asyncio.create_task(self._sync_loop(), name="matrix-sync")

    async def _connect(self) -> None:
        """Log in, open the client (and crypto store), join the rooms, sync once."""
        try:
            async with asyncio.timeout(self.timeouts.start):
                session, crypto = await self._authenticate()
                # in this thread: the crypto store's SQLite connection belongs to it
                client = self._make_client(session, crypto)
                await self._close_client()
                self._session, self._client = session, client
                await self._crypto_chores()  # keys first: members see them when the bot joins
                await self._join_rooms()
                await self._first_sync()
        except TimeoutError:
            raise DeliveryError(
                f"no answer from {self.homeserver} within {self.timeouts.start:.0f} s",
                resource="matrix",
            ) from None
        except _NETWORK as err:
            raise DeliveryError(
                f"cannot reach {self.homeserver}: {type(err).__name__}", resource="matrix"
            ) from None
        log.info(
            "matrix connected user=%s device=%s rooms=%d encryption=%s",
            session.user_id,
            session.device_id,
            len(self._rooms),
            "on" if client.olm is not None else "off",
        )

    async def stop(self) -> None:
        task, self._sync_task = self._sync_task, None
        tasks = [*self._tasks, *([task] if task is not None else [])]
        for each in tasks:
            each.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        await self._close_client()
        self._on_command = None
        self._release()

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        user = dm_user(channel)
        if user is not None:
            await self._send_direct(user, alert_content(alert, key), transaction_id("alert", key))
            return
        room_id = self._require_room(channel)
        await self._post(
            room_id,
            alert_content(alert, key),
            transaction_id("alert", key),
            where=f"channel {channel} (room {room_id})",
        )

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        user = dm_user(channel)
        room_id = self._direct.get(user) if user is not None else self._rooms.get(channel)
        client = self._client
        if room_id is None or client is None:
            return False
        txn = transaction_id("alert", key)
        try:
            async with asyncio.timeout(self.timeouts.request * 2):
                resp = await client.room_messages(
                    room_id,
                    start=None,
                    limit=100,
                    message_filter={"senders": [client.user_id]},
                )
        except (*_NETWORK, *_NIO_LOCAL) as err:
            log.warning("cannot check an earlier send room=%s error=%s", room_id, err)
            return False
        if not isinstance(resp, nio.RoomMessagesResponse):
            log.warning("cannot check an earlier send room=%s error=%s", room_id, resp)
            return False
        for event in resp.chunk:
            if getattr(event, "transaction_id", None) == txn:
                return True
            content = event.source.get("content", {})
            marker = content.get(ALERT_FIELD) if isinstance(content, dict) else None
            if isinstance(marker, dict) and marker.get("key") == key:
                return True
        return False

    # -- start-up -----------------------------------------------------------------------------

    def _prepare_state_dir(self) -> None:
        self._hold()
        self.crypto_dir.mkdir(parents=True, exist_ok=True)
        for directory in (self.state_dir, self.crypto_dir):
            with contextlib.suppress(OSError):
                os.chmod(directory, 0o700)

    def _hold(self) -> None:
        """Hold a Matrix directory of this machine for as long as the process runs: the one
        asked for, or, when another process (a replica on the same machine) holds it, the next
        free one (``matrix.2``, ``matrix.3``...). Two processes never share a session, a
        sync token or a crypto store; one started again finds a directory left free, with its
        device."""
        if self._dir_lock is not None:
            return
        for slot in range(1, MAX_DIRECTORIES + 1):
            directory = (
                self.base_dir
                if slot == 1
                else self.base_dir.with_name(f"{self.base_dir.name}.{slot}")
            )
            directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._dir_lock, self.state_dir = fd, directory
            if slot > 1:
                log.info(
                    "matrix: %s is used by another process on this machine; using %s",
                    self.base_dir,
                    directory,
                )
            return
        raise DeliveryError(
            f"{MAX_DIRECTORIES} processes on this machine already use {self.base_dir} and its "
            "siblings; stop one, or give this one a data directory of its own",
            resource="matrix",
            permanent=True,
        )

    def _release(self) -> None:
        fd, self._dir_lock = self._dir_lock, None
        if fd is not None:
            os.close(fd)  # the lock goes with it

    def _auth_client(self) -> Any:
        config = nio.AsyncClientConfig(
            encryption_enabled=False,
            max_limit_exceeded=0,
            max_timeouts=self.timeouts.retries,
            max_timeout_retry_wait_time=min(self.timeouts.backoff_max, 5.0),
            request_timeout=self.timeouts.request,
        )
        return nio.AsyncClient(self.homeserver, self.user_id, config=config)

    async def _authenticate(self) -> tuple[_Session, bool]:
        """Log in (or check the token); return the session and whether to load the crypto store."""
        client = self._auth_client()
        try:
            session = await self._login(client)
            crypto = await self._crypto_usable(client, session)
            return session, crypto
        finally:
            await client.close()

    async def _login(self, client: Any) -> _Session:
        if self._access_token:
            client.access_token = self._access_token
            who = await client.whoami()
            if not isinstance(who, nio.WhoamiResponse):
                raise self._refused("access token", who)
            self._check_user(who.user_id, "access token")
            if not who.device_id:
                raise DeliveryError(
                    "the access token has no device (is it an appservice token?); "
                    "log in once to get a device token, see docs/matrix.md",
                    resource="matrix",
                    permanent=True,
                )
            return _Session(who.user_id, who.device_id, self._access_token)

        saved = await asyncio.to_thread(read_json, self.session_file)
        if (
            saved
            and saved.get("user_id") == self.user_id
            and saved.get("homeserver") == self.homeserver
            and saved.get("access_token")
            and saved.get("device_id")
        ):
            token, device_id = str(saved["access_token"]), str(saved["device_id"])
            client.access_token = token
            who = await client.whoami()
            if isinstance(who, nio.WhoamiResponse) and who.user_id == self.user_id:
                return _Session(who.user_id, who.device_id or device_id, token)
            if not isinstance(who, nio.WhoamiResponse) and who.status_code not in _TOKEN_GONE:
                raise self._refused("saved access token", who)
            # Revoked, which mostly means the device was signed out and its keys deleted:
            # a new device (with a new crypto store) is the one that works for sure.
            log.warning(
                "matrix: the saved login of device=%s is no longer valid; logging in again "
                "with the password as a new device",
                device_id,
            )
            client.access_token = ""
        resp = await client.login(self._password, device_name=self.device_name)
        if not isinstance(resp, nio.LoginResponse):
            raise self._refused("password", resp)
        self._check_user(resp.user_id, "password")
        session = _Session(resp.user_id, resp.device_id, resp.access_token)
        await asyncio.to_thread(
            write_json_atomic,
            self.session_file,
            {
                "homeserver": self.homeserver,
                "user_id": session.user_id,
                "device_id": session.device_id,
                "access_token": session.access_token,
            },
        )
        log.info(
            "matrix logged in with the password user=%s device=%s", resp.user_id, resp.device_id
        )
        return session

    def _check_user(self, actual: str, what: str) -> None:
        if actual != self.user_id:
            raise DeliveryError(
                f"the {what} belongs to {actual}, not to the configured {self.user_id}",
                resource="matrix",
                permanent=True,
            )

    def _refused(self, what: str, resp: Any) -> DeliveryError:
        code = getattr(resp, "status_code", None)
        if code in _REFUSED:
            if what == "password":
                fix = "check MATRIX_USER_ID and MATRIX_PASSWORD"
            else:
                fix = "create a new access token (docs/matrix.md) and set MATRIX_ACCESS_TOKEN"
            return DeliveryError(
                f"the homeserver refused the {what} of {self.user_id} ({code}): {fix}",
                resource="matrix",
                permanent=True,
            )
        return DeliveryError(
            f"login as {self.user_id} failed ({code or 'no error code'}): "
            f"{getattr(resp, 'message', '')}",
            resource="matrix",
        )

    async def _crypto_usable(self, client: Any, session: _Session) -> bool:
        """Whether to open the crypto store; sets ``_crypto_problem`` when it must not be."""
        self._crypto_problem = None
        if not self.encryption:
            return False
        if not nio.crypto.ENCRYPTION_ENABLED:
            self._crypto_problem = (
                "encrypted rooms need matrix-nio's e2e extra (pip install 'matrix-nio[e2e]')"
            )
            log.error("matrix: %s", self._crypto_problem)
            return False
        store = self._crypto_store_file(session)
        if await asyncio.to_thread(store.exists):
            return True
        # No store for this device here. That is fine for a new device; a device that already
        # published keys has its identity in a store that is lost (or in another client).
        if not await self._device_has_keys(client, session):
            return True
        self._crypto_problem = (
            f"the crypto store of device {session.device_id} is missing ({store}); the device "
            "already has encryption keys on the homeserver, so encrypted rooms can be neither "
            f"read nor posted to. Restore {self.crypto_dir} from a backup, or give the bot a new "
            f"device: delete {self.session_file} and restart with MATRIX_PASSWORD, or set "
            "MATRIX_ACCESS_TOKEN to a token from a fresh login (docs/matrix.md)"
        )
        log.error("matrix: %s", self._crypto_problem)
        return False

    def _crypto_store_file(self, session: _Session) -> Path:
        return self.crypto_dir / f"{session.user_id}_{session.device_id}.db"

    async def _device_has_keys(self, client: Any, session: _Session) -> bool:
        body = json.dumps({"device_keys": {session.user_id: [session.device_id]}})
        headers = {
            "Authorization": f"Bearer {session.access_token}",
            "Content-Type": "application/json",
        }
        response = await client.send("POST", "/_matrix/client/v3/keys/query", body, headers)
        try:
            if response.status != 200:
                raise DeliveryError(
                    f"cannot check the encryption keys of device {session.device_id} "
                    f"(HTTP {response.status})",
                    resource="matrix",
                )
            data = await response.json()
        finally:
            response.release()
        devices = data.get("device_keys", {}).get(session.user_id, {})
        return isinstance(devices, dict) and session.device_id in devices

    def _make_client(self, session: _Session, crypto: bool) -> Any:
        """The long-lived client; opens (or creates) the crypto store when ``crypto``."""
        client = self._new_client(session, crypto)
        try:
            client.restore_login(session.user_id, session.device_id, session.access_token)
        except Exception as err:  # a damaged store: peewee, pickle or vodozemac errors
            self._crypto_problem = (
                f"the crypto store in {self.crypto_dir} cannot be opened ({type(err).__name__}: "
                f"{err}); encrypted rooms are unavailable until it is restored from a backup"
            )
            log.error("matrix: %s", self._crypto_problem)
            database = getattr(client.store, "database", None)
            if database is not None:
                with contextlib.suppress(Exception):
                    database.close()
            client = self._new_client(session, False)
            client.restore_login(session.user_id, session.device_id, session.access_token)
        return client

    def _new_client(self, session: _Session, crypto: bool) -> Any:
        config = nio.AsyncClientConfig(
            encryption_enabled=crypto,
            store_sync_tokens=False,
            max_limit_exceeded=0,
            max_timeouts=self.timeouts.retries,
            backoff_factor=0.25,
            max_timeout_retry_wait_time=min(self.timeouts.backoff_max, 5.0),
            request_timeout=self.timeouts.request,
        )
        return nio.AsyncClient(
            self.homeserver,
            session.user_id,
            device_id=session.device_id,
            store_path=str(self.crypto_dir),
            config=config,
        )

    async def _join_rooms(self) -> None:
        """Join every configured room the bot is not in yet; log the ones it cannot join."""
        client = self._client
        self._rooms_changed = False
        joined = await client.joined_rooms()
        already = set(joined.rooms) if isinstance(joined, nio.JoinedRoomsResponse) else set()
        for channel, room_id in sorted(self._rooms.items()):
            if room_id in already:
                continue
            resp = await client.join(room_id)
            if isinstance(resp, nio.JoinResponse):
                self._joined_ms[room_id] = max(self._joined_ms.get(room_id, 0), self._now_ms())
                log.info("matrix joined room=%s channel=%s", room_id, channel)
            else:
                log.error(
                    "matrix cannot join room=%s channel=%s error=%s: invite %s to the room",
                    room_id,
                    channel,
                    resp,
                    self.user_id,
                )

    async def _first_sync(self) -> None:
        """The first sync: full state, and no command from it is ever executed."""
        client = self._client
        saved = await asyncio.to_thread(read_json, self.sync_file)
        token = None
        if saved and saved.get("user_id") == client.user_id:
            token = saved.get("next_batch") or None
        # Synapse keeps each /sync answer for a while (sync_response_cache_duration, 2 min) and
        # gives it to an identical request: after a quick restart, an old answer with an old
        # next_batch would come back, and the syncs after it would replay handled commands.
        # A field unique to this start makes the request new (filters allow unknown fields).
        first_filter = {
            "room": {"timeline": {"limit": 20}},
            "org.treatywatch.start": self._started_ms,
        }
        resp = await self._sync_once(first_filter, since=token, full_state=True)
        if not isinstance(resp, nio.SyncResponse) and token:
            log.warning("matrix: the saved sync token was refused (%s); starting afresh", resp)
            token = None
            resp = await self._sync_once(first_filter, since=None, full_state=True)
        if not isinstance(resp, nio.SyncResponse):
            raise DeliveryError(f"the first sync failed: {resp}", resource="matrix")
        await self._crypto_chores()
        await self._handle_sync(resp, initial=token is None)

    # -- the sync loop ------------------------------------------------------------------------

    async def _sync_once(
        self, sync_filter: dict[str, Any], *, since: str | None = None, full_state: bool = False
    ) -> Any:
        wait_ms = 0 if full_state else int(self.timeouts.sync_wait * 1000)
        budget = self.timeouts.sync_wait + self.timeouts.request
        async with asyncio.timeout(budget):
            return await self._client.sync(
                timeout=wait_ms, sync_filter=sync_filter, since=since, full_state=full_state
            )

    async def _sync_loop(self) -> None:
        sync_filter = {"room": {"timeline": {"limit": 50}}}
        while True:
            if not self._client.logged_in and not await self._token_refused(
                "the homeserver ended the session"
            ):
                await self._sync_failed("not logged in")
                continue
            if self._rooms_changed:
                try:
                    await self._join_rooms()
                except _NETWORK as err:
                    log.warning("matrix: joining rooms failed, retrying error=%s", err)
                    self._rooms_changed = True
            try:
                if not self._client.next_batch:  # connected again, but not synced yet
                    await self._first_sync()
                    self._sync_failures = 0
                    continue
                resp = await self._sync_once(sync_filter)
            except asyncio.CancelledError:
                raise
            except DeliveryError as err:
                await self._sync_failed(str(err))
                continue
            except _NETWORK as err:
                await self._sync_failed(f"{type(err).__name__}: {err}" if str(err) else repr(err))
                continue
            except Exception as err:  # keep syncing whatever nio raises; never a crash loop
                log.exception("matrix sync raised an unexpected error")
                await self._sync_failed(f"{type(err).__name__}: {err}")
                continue
            if not isinstance(resp, nio.SyncResponse):
                if getattr(resp, "status_code", None) in _TOKEN_GONE and await self._token_refused(
                    resp
                ):
                    continue
                await self._sync_failed(str(resp))
                continue
            if self._sync_failures:
                log.info("matrix sync recovered after failures=%d", self._sync_failures)
            self._sync_failures = 0
            try:
                await self._crypto_chores()
                await self._handle_sync(resp, initial=False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("matrix: handling a sync failed; continuing with the next one")
            self._synced.set()
            self._synced.clear()

    async def _sync_failed(self, error: str) -> None:
        self._sync_failures += 1
        self._last_sync_error = error
        t = self.timeouts
        delay = min(t.backoff_max, t.backoff_initial * 2 ** min(self._sync_failures - 1, 16))
        delay *= random.uniform(0.8, 1.0)
        log.warning(
            "matrix sync failed failures=%d retry_in_seconds=%.1f error=%s",
            self._sync_failures,
            delay,
            error,
        )
        await asyncio.sleep(delay)

    async def _token_refused(self, why: object) -> bool:
        """The homeserver no longer takes our token: with a password, connect again (as a new
        device); with a configured token, say so. Return whether the bot is connected again."""
        if not self._password or self._access_token:
            self._auth_problem = (
                f"the homeserver no longer accepts the access token ({why}); "
                "set MATRIX_ACCESS_TOKEN to a new one and restart"
            )
            log.error("matrix: %s", self._auth_problem)
            return False
        try:
            await self._connect()
        except DeliveryError as err:
            self._auth_problem = f"logging in again failed: {err}"
            log.error("matrix: %s", self._auth_problem)
            return False
        self._auth_problem = None
        return True

    async def _crypto_chores(self) -> None:
        """Upload, query and claim keys and send to-device messages, as ``sync_forever`` does."""
        client = self._client
        if client is None or client.olm is None:
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeouts.request * 2):
                if client.outgoing_to_device_messages:
                    await client.send_to_device_messages()
                if client.should_upload_keys and loop.time() >= self._keys_retry_at:
                    resp = await client.keys_upload()
                    if isinstance(resp, nio.KeysUploadError):
                        self._keys_retry_at = loop.time() + 300
                        self._crypto_problem = (
                            f"the encryption keys of device {client.device_id} could not be "
                            f"uploaded ({resp}); an access token copied from another client "
                            "cannot be used for encrypted rooms (docs/matrix.md)"
                        )
                        log.error("matrix: %s", self._crypto_problem)
                    elif self._crypto_problem and "uploaded" in self._crypto_problem:
                        self._crypto_problem = None
                if client.should_query_keys:
                    await client.keys_query()
                if client.should_claim_keys:
                    await client.keys_claim(client.get_users_for_key_claiming())
        except (*_NETWORK, *_NIO_LOCAL) as err:
            log.warning("matrix: encryption housekeeping failed, retried later error=%s", err)

    # -- what a sync brings -------------------------------------------------------------------

    async def _handle_sync(self, resp: Any, *, initial: bool) -> None:
        for room_id, info in resp.rooms.invite.items():
            await self._on_invite(room_id, info)
        for room_id in resp.rooms.leave:
            if room_id in self._rooms.values():
                self._joined_ms.pop(room_id, None)
                log.warning(
                    "matrix: the bot is no longer in room=%s; invite %s again to post there",
                    room_id,
                    self.user_id,
                )
        command_rooms = set(self._rooms.values()) | set(self._direct.values())
        for room_id, info in resp.rooms.join.items():
            events = info.timeline.events
            if info.timeline.limited and not initial and room_id in command_rooms:
                log.info(
                    "matrix: more messages than one sync holds arrived in room=%s; the older "
                    "ones are not read as commands",
                    room_id,
                )
            for event in events:  # first: a (re)join here makes every earlier event old
                self._observe(room_id, event)
            if initial or room_id not in command_rooms:
                continue
            for event in events:
                inbound = self._command_in(room_id, event)
                if inbound is not None:
                    await self._dispatch(room_id, event, inbound)
        await asyncio.to_thread(
            write_json_atomic,
            self.sync_file,
            {"user_id": self._client.user_id, "next_batch": resp.next_batch},
        )

    def _observe(self, room_id: str, event: Any) -> None:
        """Note when the bot (re)joined a room: nothing older there is ever a command."""
        if (
            isinstance(event, nio.RoomMemberEvent)
            and event.state_key == self._client.user_id
            and event.membership == "join"
            and event.prev_membership != "join"
        ):
            self._joined_ms[room_id] = max(self._joined_ms.get(room_id, 0), event.server_timestamp)

    def _command_in(self, room_id: str, event: Any) -> Inbound | None:
        """The command in ``event``, or ``None`` when it is not one to execute now."""
        if isinstance(event, nio.MegolmEvent):
            if event.server_timestamp >= self._cutoff(room_id):
                self._warn_undecryptable(room_id, event)
            return None
        if not isinstance(event, nio.RoomMessageText):  # m.notice, emotes, redactions, state
            return None
        if event.sender == self._client.user_id:
            return None
        content = event.source.get("content", {})
        relation = content.get("m.relates_to") or {}
        if "m.new_content" in content or relation.get("rel_type") == "m.replace":
            return None  # an edit: the original was (or was not) the command
        if event.server_timestamp < self._cutoff(room_id):
            return None  # from before this process started or before the bot joined
        if event.event_id in self._ledger:
            return None
        text = event.body.strip()
        prefix = self.command_prefix
        if text[: len(prefix)].casefold() != prefix.casefold():
            return None
        rest = text[len(prefix) :]
        if rest and not rest[0].isspace():
            return None  # "!treatyfoo" is not ours
        return Inbound(
            platform="matrix",
            user=event.sender,
            channel=room_id,
            text=rest.strip(),
            event_id=event.event_id,
        )

    def _cutoff(self, room_id: str) -> int:
        return max(self._started_ms, self._joined_ms.get(room_id, 0))

    def _warn_undecryptable(self, room_id: str, event: Any) -> None:
        if room_id in self._undecryptable_warned:
            return
        self._undecryptable_warned.add(room_id)
        hint = self._crypto_problem or "the sender's device may not have shared its keys yet"
        log.warning(
            "matrix: a message in encrypted room=%s cannot be decrypted event=%s (%s)",
            room_id,
            event.event_id,
            hint,
        )

    async def _dispatch(self, room_id: str, event: Any, inbound: Inbound) -> None:
        """Record the command as handled (at most once, ever), then answer it in a task."""
        self._ledger.add(event.event_id)
        await asyncio.to_thread(
            write_json_atomic, self.ledger_file, {"handled": self._ledger.dump()}
        )
        relation = event.source.get("content", {}).get("m.relates_to") or {}
        thread = relation.get("event_id") if relation.get("rel_type") == "m.thread" else None
        coro = self._answer(room_id, event.event_id, thread, inbound)
        task = asyncio.create_task(coro, name=f"matrix-command:{event.event_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: coro.close())

    async def _answer(
        self, room_id: str, event_id: str, thread: str | None, inbound: Inbound
    ) -> None:
        lock = self._room_locks.setdefault(room_id, asyncio.Lock())
        async with lock, self._command_slots:  # in order within a room
            handler = self._on_command
            if handler is None:
                return
            try:
                answer = await handler(inbound)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "matrix: the command handler failed room=%s event=%s", room_id, event_id
                )
                answer = Answer("", (Paragraph((Span(APOLOGY),)),))
            if answer.elsewhere:
                return
            if answer.direct and self._direct.get(inbound.user) != room_id:
                answer = await self._answer_directly(inbound.user, event_id, answer)
            try:
                await self._post(
                    room_id,
                    reply_content(answer, event_id, thread),
                    transaction_id("reply", event_id),
                    where=f"room {room_id}",
                )
            except DeliveryError as err:
                log.warning("matrix: could not answer event=%s error=%s", event_id, err)

    async def _on_invite(self, room_id: str, info: Any) -> None:
        inviter = None
        for event in info.invite_state:
            if (
                isinstance(event, nio.InviteMemberEvent)
                and event.state_key == self._client.user_id
                and event.membership == "invite"
            ):
                inviter = event.sender
        configured = room_id in self._rooms.values()
        if not configured and inviter not in self.admins:
            if room_id not in self._ignored_invites:
                self._ignored_invites.add(room_id)
                log.info(
                    "matrix: ignoring an invite to room=%s from %s (not a configured room, "
                    "not an admin)",
                    room_id,
                    inviter,
                )
            return
        resp = await self._client.join(room_id)
        if isinstance(resp, nio.JoinResponse):
            self._joined_ms[room_id] = max(self._joined_ms.get(room_id, 0), self._now_ms())
            log.info("matrix: accepted an invite to room=%s from %s", room_id, inviter)
            if not configured:
                log.info(
                    "matrix: room=%s is not in bot.yaml; add it to a channel to use it", room_id
                )
        else:
            log.warning("matrix: could not accept an invite to room=%s error=%s", room_id, resp)

    # -- posting ------------------------------------------------------------------------------

    def _require_room(self, channel: str) -> str:
        room_id = self._rooms.get(channel)
        if room_id is None:
            raise DeliveryError(
                "no Matrix room id is configured for this channel (bot.yaml channels)",
                resource=f"channel {channel}",
                permanent=True,
            )
        return room_id

    def _require_client(self) -> Any:
        if self._client is None:
            raise DeliveryError("the Matrix transport is not connected", resource="matrix")
        return self._client

    async def _ensure_room(self, room_id: str, where: str) -> Any:
        """The client's view of the room, joining it first if needed."""
        client = self._require_client()
        room = client.rooms.get(room_id)
        if room is None:
            try:
                async with asyncio.timeout(self.timeouts.request * 2):
                    resp = await client.join(room_id)
            except _NETWORK as err:
                raise DeliveryError(
                    f"homeserver unreachable: {type(err).__name__}", resource=where
                ) from None
            if not isinstance(resp, nio.JoinResponse):
                raise DeliveryError(
                    f"the bot is not in the room and cannot join it ({resp.status_code}: "
                    f"{resp.message}); invite {client.user_id} to the room",
                    resource=where,
                    permanent=_final(resp),
                )
            self._joined_ms[room_id] = max(self._joined_ms.get(room_id, 0), self._now_ms())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeouts.room_wait):
                    while room_id not in client.rooms:
                        await self._synced.wait()
            room = client.rooms.get(room_id)
            if room is None:
                raise DeliveryError("joined the room, waiting for it to sync", resource=where)
        if room.encrypted and client.olm is None:
            raise DeliveryError(
                "the room is encrypted and this device cannot encrypt: "
                + (self._crypto_problem or "encryption is turned off"),
                resource=where,
            )
        return room

    async def _post(self, room_id: str, content: dict[str, Any], txn: str, *, where: str) -> str:
        """Send one message with a fixed transaction id; return its event id."""
        client = self._require_client()
        await self._ensure_room(room_id, where)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeouts.rate_limit_budget
        while True:
            try:
                async with asyncio.timeout(self.timeouts.request * (self.timeouts.retries + 2)):
                    resp = await client.room_send(
                        room_id,
                        "m.room.message",
                        content,
                        tx_id=txn,
                        ignore_unverified_devices=True,
                    )
            except _NETWORK as err:
                raise DeliveryError(
                    f"homeserver unreachable: {type(err).__name__}", resource=where
                ) from None
            except _NIO_LOCAL as err:
                raise DeliveryError(
                    f"could not prepare the message: {type(err).__name__}: {err}", resource=where
                ) from None
            if isinstance(resp, nio.RoomSendResponse):
                return str(resp.event_id)
            code = resp.status_code
            if code == "M_LIMIT_EXCEEDED" or _http_status(resp) == 429:
                wait = (resp.retry_after_ms or 5_000) / 1000
                if loop.time() + wait > deadline:
                    raise DeliveryError(
                        f"rate limited by the homeserver for {wait:.1f} s more", resource=where
                    )
                log.info("matrix rate limited room=%s waiting_seconds=%.1f", room_id, wait)
                await asyncio.sleep(wait)
                continue
            if _final(resp):
                raise DeliveryError(
                    f"the homeserver refused the message ({code}: {resp.message}); "
                    f"invite {client.user_id} to the room and check its power level",
                    resource=where,
                    permanent=True,
                )
            raise DeliveryError(f"the homeserver refused the message ({resp})", resource=where)

    # -- direct messages ----------------------------------------------------------------------

    async def _answer_directly(self, user: str, event_id: str, answer: Answer) -> Answer:
        """Send ``answer`` to ``user``'s direct messages; return the note for the room."""
        content = notice_content(answer_rich(answer))
        try:
            await self._send_direct(user, content, transaction_id("direct-reply", event_id))
        except DeliveryError as err:
            log.warning("matrix: could not answer directly user=%s error=%s", user, err)
            return Answer("", (Paragraph((Span(DIRECT_FAILED),)),))
        return Answer("", (Paragraph((Span(DIRECT_NOTE),)),))

    async def _send_direct(self, user: str, content: dict[str, Any], txn: str) -> None:
        """Post into ``user``'s direct messages; a room they left, or the bot lost, is
        replaced by a new one once."""
        room_id = await self._direct_room(user)
        where = f"direct messages of {user} (room {room_id})"
        try:
            await self._post(room_id, content, txn, where=where)
        except DeliveryError as err:
            if not err.permanent:
                raise
            log.warning("matrix: direct messages of %s need a new room: %s", user, err)
            room_id = await self._direct_room(user, replacing=room_id)
            await self._post(room_id, content, txn, where=f"direct messages of {user}")

    async def _direct_room(self, user: str, *, replacing: str | None = None) -> str:
        """The room of ``user``'s direct messages, created the first time (one per person)."""
        async with self._direct_lock:
            room_id = self._direct.get(user)
            if room_id is not None and room_id != replacing and self._still_direct(room_id, user):
                return room_id
            room_id = await self._create_direct_room(user)
            self._direct[user] = room_id
            await asyncio.to_thread(write_json_atomic, self.direct_file, {"rooms": self._direct})
            await self._mark_direct(user, room_id)
            return room_id

    def _still_direct(self, room_id: str, user: str) -> bool:
        """Whether the person is still in (or invited to) the room, as far as the bot knows."""
        client = self._client
        room = client.rooms.get(room_id) if client is not None else None
        return room is None or user in room.users

    async def _create_direct_room(self, user: str) -> str:
        client = self._require_client()
        where = f"direct messages of {user}"
        attempts = [[ENCRYPTION_STATE], []] if self.encryption else [[]]
        resp: Any = None
        try:
            for initial_state in attempts:
                async with asyncio.timeout(self.timeouts.request * 2):
                    resp = await client.room_create(
                        is_direct=True,
                        invite=[user],
                        preset=nio.RoomPreset.trusted_private_chat,
                        initial_state=initial_state,
                    )
                if isinstance(resp, nio.RoomCreateResponse):
                    break
                if initial_state:
                    log.warning(
                        "matrix: the homeserver refused an encrypted direct room for %s (%s); "
                        "creating an unencrypted one",
                        user,
                        resp,
                    )
        except _NETWORK as err:
            raise DeliveryError(
                f"homeserver unreachable: {type(err).__name__}", resource=where
            ) from None
        if not isinstance(resp, nio.RoomCreateResponse):
            raise DeliveryError(
                f"cannot create a direct room ({resp.status_code}: {resp.message})",
                resource=where,
                permanent=_final(resp),
            )
        room_id = str(resp.room_id)
        log.info("matrix: created the direct room of user=%s room=%s", user, room_id)
        with contextlib.suppress(TimeoutError):  # the next sync brings it (and its members)
            async with asyncio.timeout(self.timeouts.room_wait):
                while room_id not in client.rooms:
                    await self._synced.wait()
        return room_id

    async def _mark_direct(self, user: str, room_id: str) -> None:
        """Add the room to the bot's ``m.direct`` account data (clients show it as a DM)."""
        client = self._require_client()
        try:
            async with asyncio.timeout(self.timeouts.request * 2):
                listed = await client.list_direct_rooms()
                rooms = dict(listed.rooms) if isinstance(listed, nio.DirectRoomsResponse) else {}
                rooms[user] = [*(r for r in rooms.get(user, []) if r != room_id), room_id]
                _, path = nio.Api.direct_room_list(client.access_token, client.user_id)
                response = await client.send(
                    "PUT", path, json.dumps(rooms), headers={"Content-Type": "application/json"}
                )
                status = response.status
                response.release()
        except _NETWORK as err:
            log.warning("matrix: could not mark room=%s as direct error=%s", room_id, err)
            return
        if status != 200:
            log.warning("matrix: could not mark room=%s as direct status=%s", room_id, status)

    # -- helpers ------------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock.now().timestamp() * 1000)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(*_NETWORK):
            await client.close()
        store = getattr(client, "store", None)
        database = getattr(store, "database", None)
        if database is not None:
            with contextlib.suppress(Exception):
                database.close()
