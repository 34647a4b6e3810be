"""`kill -9` at random moments loses no alert and posts none twice, on Slack and on Matrix.

The real `treaty-bot run` process posts the items of feeds that grow on every request
(``tests.crashfeeds``) to the loopback Slack stand-in, or to a real Synapse, and is SIGKILLed at
a random moment of each run; clean `treaty-bot once` rounds then deliver what the kills left
behind. Rows that a kill left in ``sending`` are reconciled through the platform (Slack: the
outbox key in the message metadata of ``conversations.history``; Matrix: the transaction id
and the event's alert field), so what the platform shows at the end must be every item served
after each feed's first poll, each exactly once. The platform outlives every bot process: the
stand-in runs in this test process, Synapse for the whole session.

Each poll brings several new items per feed, one channel per feed: Slack paces posts to a
channel (one a second), and the bot reaches Synapse through a loopback proxy that holds every
message send a quarter of a second, so a channel's rows take long enough to post that many
kills land between their "sending" and "sent" marks. One more run is killed while the
platform holds the answer to a send it has taken on, so that at least one row is left in
"sending" whatever the timing; each test checks that the platform was asked about it. A
poll that follows kills which lost the records of earlier polls can bring more than
``max_new_items``: those come as grouped messages, and each item they list counts as posted.

A kill lands 0.5–3 s after the run started: mostly after the transport connected (the stand-in
saw the Socket Mode connection; the bot logged ``matrix connected``), when it polls and posts,
sometimes counted from the spawn, so that start-up is hit too.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from bot.transports.matrix import ALERT_FIELD, transaction_id
from tests.crashfeeds import (
    FEEDS,
    assert_exactly_once,
    bot_env,
    growing_feeds,
    once,
    start_run,
    titles_in,
    write_config,
)
from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn
from tests.integration.synapse import Synapse, synapse  # noqa: F401 - the fixture

KILLS = 12
SEED = 20261129
#: A kill lands this many seconds after the run started (fault injection, seeded).
KILL_WINDOW = (0.5, 3.0)
#: How often the moment is counted from the spawn rather than from the connection.
FROM_SPAWN = 0.25
#: The deadline of every wait on a condition; it only turns a hang into a failure.
WAIT = 30.0
#: Items a feed gains per request: one poll queues several rows for one channel, which Slack
#: paces (a post a second), so that kills land between the rows' "sending" and "sent" marks.
PER_REQUEST = 3
#: One logical channel per feed (posts to different channels are not paced together).
CHANNELS = tuple(f"news-{i}" for i in range(FEEDS))


class Runs:
    """The bot processes of one test, each with its own log; every one is killed at the end."""

    def __init__(self, logs: Path, config: Path, env: dict[str, str]) -> None:
        self.logs = logs
        self.config = config
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []
        logs.mkdir()

    def log(self, name: str) -> Path:
        return self.logs / f"{len(list(self.logs.iterdir())):02d}-{name}.log"

    def once(self) -> None:
        path = self.log("once")
        with path.open("wb") as out:
            try:
                once(self.config, self.env, log=out)
            except subprocess.CalledProcessError as err:
                pytest.fail(f"treaty-bot once exited with {err.returncode}:\n{tail(path)}")

    def run(self) -> tuple[subprocess.Popen[bytes], Path]:
        path = self.log("run")
        with path.open("wb") as out:
            proc = start_run(self.config, self.env, log=out)
        self.procs.append(proc)
        return proc, path

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def summary(self) -> str:
        return "\n".join(f"--- {p.name}\n{tail(p, 15)}" for p in sorted(self.logs.iterdir()))


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


#: Called just before a run is spawned; returns what waits until that run is connected.
Connected = Callable[[], Callable[[subprocess.Popen[bytes], Path], None]]


def kill_at_random_moments(
    runs: Runs, rng: random.Random, connected: Connected, kills: int = KILLS
) -> None:
    """``kills`` runs, each SIGKILLed at a random moment (from the spawn or the connection)."""
    for _ in range(kills):
        from_spawn = rng.random() < FROM_SPAWN
        delay = rng.uniform(*KILL_WINDOW)
        wait = connected()
        proc, log = runs.run()
        if not from_spawn:
            wait(proc, log)
        time.sleep(delay)  # fault injection: the kill lands anywhere in what the bot does
        assert proc.poll() is None, f"the bot exited by itself:\n{tail(log)}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def kill_while_held(runs: Runs, held: Callable[[], bool], release: Callable[[], None]) -> None:
    """One run SIGKILLed while the platform holds a message send it has taken on (``held()``):
    whatever the timing of the random kills, at least one row is left in "sending" with its
    message on the platform, so the next run must look it up rather than post it again."""
    proc, log = runs.run()
    deadline = time.monotonic() + WAIT
    try:
        while not held():
            assert proc.poll() is None, f"the bot exited by itself:\n{tail(log)}"
            assert time.monotonic() < deadline, f"no message send was held:\n{tail(log)}"
            time.sleep(0.05)  # polling a flag of the stand-in, under the deadline above
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        release()


def wait_for_log(proc: subprocess.Popen[bytes], log: Path, text: str) -> None:
    """Wait until the bot's log says ``text`` (it must not exit meanwhile)."""
    deadline = time.monotonic() + WAIT
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, f"the bot exited before it said {text!r}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"the bot did not say {text!r}:\n{tail(log)}"
        time.sleep(0.05)  # polling a file, under the deadline above


# ----------------------------------------------------------------------------- Slack


def quiet_until_soon() -> tuple[dict[str, str], datetime]:
    """Quiet hours that began an hour ago and end at the first minute at least 30 s away."""
    now = datetime.now(UTC)
    end = (now + timedelta(seconds=30)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    frm = (now - timedelta(hours=1)).strftime("%H:%M")
    return {"from": frm, "to": end.strftime("%H:%M"), "timezone": "UTC"}, end


@pytest.mark.parametrize("quiet", [False, True], ids=["immediate", "quiet-hours"])
def test_slack_posts_every_item_once_across_sigkills(tmp_path: Path, quiet: bool) -> None:
    """With quiet hours, the kills also land while alerts are held and while the held ones
    are released as grouped messages at the end of the quiet hours."""
    rng = random.Random(SEED)
    slack_ids = {name: f"C0{name.upper().replace('-', '')}" for name in CHANNELS}
    hours, quiet_end = quiet_until_soon()
    with growing_feeds(per_request=PER_REQUEST) as (state, base), SlackStandIn() as slack:
        for name, channel_id in slack_ids.items():
            slack.add_channel(channel_id, name)
        config = write_config(
            tmp_path / "cfg",
            storage=tmp_path / "data" / "state.json",
            base=base,
            channels={
                name: {"slack": channel_id, **({"quiet": hours} if quiet else {})}
                for name, channel_id in slack_ids.items()
            },
            feed_channels=CHANNELS,
        )
        env = bot_env(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN, SLACK_API_URL=slack.api_url
        )

        def connected() -> Callable[[subprocess.Popen[bytes], Path], None]:
            count = slack.connections + 1  # the next Socket Mode connection is the run's

            def wait(proc: subprocess.Popen[bytes], log: Path) -> None:
                try:
                    slack.sync(slack.wait_connected(count))
                except AssertionError as err:
                    pytest.fail(f"{err}:\n{tail(log)}")

            return wait

        runs = Runs(tmp_path / "logs", config, env)
        try:
            runs.once()  # records each feed's first, empty, poll
            kill_at_random_moments(runs, rng, connected)
            if quiet:  # on until the quiet hours are over and their release is under way
                while datetime.now(UTC) < quiet_end + timedelta(seconds=2):
                    kill_at_random_moments(runs, rng, connected, kills=2)
                kill_at_random_moments(runs, rng, connected, kills=4)
            held = slack.inject("chat.postMessage", hold_after=True)  # posted, answer held
            kill_while_held(runs, lambda: held.waiting > 0, held.release)
            for _ in range(2):
                runs.once()  # clean rounds deliver whatever the kills left behind
        finally:
            runs.close()

        def answered() -> bool:
            return all(
                c.status is not None or c.error is not None
                for c in slack.calls_to("chat.postMessage")
            )

        # a post whose sender was killed is still answered (and so recorded) by the stand-in
        slack.sync(slack.wait_until(answered, "an answer to every chat.postMessage"))
        posted: list[str] = []
        releases = 0
        for channel_id in slack_ids.values():
            for message in slack.messages(channel_id):
                titles = titles_in(message.text)  # one, or each item of a grouped message
                assert titles, message.text
                posted.extend(titles)
                releases += "held during the channel" in message.text.casefold()
        checks = len(slack.calls_to("conversations.history"))
        print(f"slack: {len(posted)} posts, {checks} history checks\n{runs.summary()}")
    assert_exactly_once(posted, state.snapshot(), minimum=FEEDS * 3)
    # and the kills did leave rows in "sending", which were looked up before any repost
    assert checks > 0, "no kill landed between a row's sending and sent marks"
    assert (releases > 0) == quiet  # what the quiet hours held came as their release


# ----------------------------------------------------------------------------- Matrix

#: How long the proxy holds each message send: a group of rows then takes long enough to post
#: that kills land between its "sending" and "sent" marks (Synapse alone answers in ~20 ms).
SEND_DELAY = 0.25
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class SlowSends:
    """A reverse proxy on loopback in front of Synapse that holds every message send a while.

    Latency injection only: every request goes on to Synapse unchanged, also a send whose bot
    was killed while it was held (as a request already on the wire would). ``orphaned`` counts
    those, ``lookups`` the reads of a room's messages (the bot's ``was_delivered``);
    ``wait_idle`` waits until no send is held or on its way.

    It also watches what makes a send safe to repeat. Synapse answers a send whose transaction
    id it already has with the event it made the first time, so the room alone cannot tell a
    repost the bot avoided from one Synapse absorbed. ``repeated`` counts the sends with a
    transaction id sent before; ``found`` holds the transaction ids of the alerts that a lookup
    showed in a room (what ``was_delivered`` sees), and ``resent_found`` the sends of one of
    those after it was shown: a row the bot's re-check found delivered and sent again.
    """

    def __init__(self, upstream: str, delay: float = SEND_DELAY) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay = delay
        self.port = 0
        self.sends = 0
        self.orphaned = 0
        self.lookups = 0
        self.repeated = 0
        self.sent_txns: set[str] = set()
        self.found: set[str] = set()
        self.resent_found: list[str] = []
        self.holding = threading.Event()  # a send is held until release()
        self._hold_next = False
        self._released: asyncio.Event | None = None
        self._in_flight = 0
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> SlowSends:
        self._thread.start()
        assert self._ready.wait(WAIT), "the proxy did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)

    def hold_next_send(self) -> None:
        """Hold the next message send (after its delay) until ``release()``."""
        self._hold_next = True

    def release(self) -> None:
        """Let a held send go on to Synapse (safe from any thread; nothing if none is held)."""
        self._hold_next = False
        if self._loop is not None and self._released is not None:
            self._loop.call_soon_threadsafe(self._released.set)

    def wait_idle(self) -> None:
        with self._changed:
            idle = self._changed.wait_for(lambda: self._in_flight == 0, WAIT)
        assert idle, f"{self._in_flight} message send(s) still on their way to Synapse"

    def _count(self, change: int) -> None:
        with self._changed:
            self._in_flight += change
            self._changed.notify_all()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._released = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:

            async def forward(request: web.Request) -> web.StreamResponse:
                body = await request.read()
                send = request.method == "PUT" and "/send/m.room.message/" in request.path
                lookup = request.method == "GET" and request.path.endswith("/messages")
                if lookup:
                    self.lookups += 1  # was_delivered reads the room's recent messages
                if send:
                    self.sends += 1
                    txn = request.path.rsplit("/", 1)[-1]
                    self.repeated += txn in self.sent_txns
                    self.sent_txns.add(txn)
                    if txn in self.found:
                        self.resent_found.append(txn)
                    self._count(+1)
                try:
                    if send:
                        await asyncio.sleep(self.delay)  # latency injection, see SEND_DELAY
                        if self._hold_next and self._released is not None:
                            self._hold_next = False
                            self.holding.set()
                            await self._released.wait()
                    async with session.request(
                        request.method,
                        URL(self.upstream + request.raw_path, encoded=True),
                        data=body,
                        headers={
                            k: v
                            for k, v in request.headers.items()
                            if k.lower() not in _HOP_HEADERS
                        },
                        allow_redirects=False,
                    ) as upstream:
                        payload = await upstream.read()
                        if lookup and upstream.status == 200:
                            self.found |= shown_alerts(payload, upstream.headers)
                        answer = web.Response(status=upstream.status, body=payload)
                        for name in ("Content-Type", "Content-Encoding"):
                            if name in upstream.headers:
                                answer.headers[name] = upstream.headers[name]
                    if send and (request.transport is None or request.transport.is_closing()):
                        self.orphaned += 1  # Synapse has it; the bot that sent it is gone
                    return answer
                finally:
                    if send:
                        self._count(-1)

            app = web.Application(client_max_size=10 * 1024**2)
            app.router.add_route("*", "/{tail:.*}", forward)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = runner.addresses[0][1]
            self._ready.set()
            try:
                await self._stop.wait()
            finally:
                await runner.cleanup()


def shown_alerts(payload: bytes, headers: Any) -> set[str]:
    """The transaction ids of the alerts in a page of a room's messages: each event's own
    (Synapse shows it to the device that sent it) and the one its alert field implies."""
    if headers.get("Content-Encoding") == "gzip":
        payload = gzip.decompress(payload)
    txns: set[str] = set()
    for event in json.loads(payload).get("chunk", []):
        txn = event.get("unsigned", {}).get("transaction_id")
        if isinstance(txn, str):
            txns.add(txn)
        marker = event.get("content", {}).get(ALERT_FIELD)
        if isinstance(marker, dict) and isinstance(marker.get("key"), str):
            txns.add(transaction_id("alert", marker["key"]))
    return txns


def room_messages(hs: Synapse, room_id: str, token: str) -> list[dict[str, Any]]:
    """Every event of the room's timeline, oldest first, as a member reads them."""
    events: list[dict[str, Any]] = []
    start: str | None = None
    while True:
        query = {"dir": "b", "limit": "500"}
        if start is not None:
            query["from"] = start
        page = hs.request(
            "GET",
            f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/messages?{urlencode(query)}",
            token=token,
        )
        events.extend(page.get("chunk", []))
        end = page.get("end")
        if not page.get("chunk") or end is None or end == start:
            return list(reversed(events))
        start = end


def test_matrix_posts_every_item_once_across_sigkills(
    tmp_path: Path,
    synapse: Synapse,  # noqa: F811
) -> None:
    rng = random.Random(SEED + 1)
    bot = synapse.register()
    member = synapse.register()
    rooms = {
        name: synapse.request(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "private_chat", "invite": [bot.user_id], "name": name},
            token=member.access_token,
        )["room_id"]
        for name in CHANNELS
    }
    with growing_feeds(per_request=PER_REQUEST) as (state, base), SlowSends(synapse.base_url) as hs:
        config = write_config(
            tmp_path / "cfg",
            storage=tmp_path / "data" / "state.json",
            base=base,
            channels={name: {"matrix": room_id} for name, room_id in rooms.items()},
            feed_channels=CHANNELS,
        )
        env = bot_env(
            MATRIX_HOMESERVER=hs.url,
            MATRIX_USER_ID=bot.user_id,
            MATRIX_ACCESS_TOKEN=bot.access_token,
        )

        def connected() -> Callable[[subprocess.Popen[bytes], Path], None]:
            def wait(proc: subprocess.Popen[bytes], log: Path) -> None:
                wait_for_log(proc, log, "matrix connected")

            return wait

        runs = Runs(tmp_path / "logs", config, env)
        try:
            runs.once()  # joins the rooms and records each feed's first, empty, poll
            kill_at_random_moments(runs, rng, connected)
            hs.hold_next_send()
            kill_while_held(runs, hs.holding.is_set, hs.release)
            hs.wait_idle()  # the held send reaches Synapse before the next run looks for it
            for _ in range(2):
                runs.once()  # clean rounds deliver whatever the kills left behind
        finally:
            hs.release()
            runs.close()
        hs.wait_idle()  # a send whose bot was killed still arrives: counted with the rest

    posted: list[str] = []
    for room_id in rooms.values():
        for event in room_messages(synapse, room_id, member.access_token):
            if event.get("type") != "m.room.message" or event.get("sender") != bot.user_id:
                continue
            titles = titles_in(str(event.get("content", {}).get("body", "")))
            assert titles, event
            posted.extend(titles)
    print(
        f"matrix: {len(posted)} posts, {hs.sends} sends ({hs.repeated} repeated), "
        f"{hs.orphaned} orphaned, {hs.lookups} lookups showing {len(hs.found)} alerts\n"
        f"{runs.summary()}"
    )
    assert_exactly_once(posted, state.snapshot(), minimum=FEEDS * 3)
    # and the kills did leave rows in "sending", which were looked up before any repost
    assert hs.lookups > 0, "no kill landed between a row's sending and sent marks"
    # the exactly-once above holds even if the bot reposts (Synapse keeps one event per
    # transaction id): the bot's own re-check must be what stops a repost of a delivered row
    assert hs.resent_found == [], f"{len(hs.resent_found)} delivered rows were sent again"
