"""Replicas: several `treaty-bot run` on one PostgreSQL database, SIGKILLed and restarted at
random, post every item exactly once: on the console, on the loopback Slack stand-in and on a
real Synapse. And a replica cut off from the database stops before its leases expire.

The feeds grow on every request (``tests.crashfeeds``); the replicas share them out by shard
leases (``replicas.lease`` is 3 s here, so that leases move often within the tests' bounded
time). On the console, the channel is the union of the replicas' standard outputs.

Some kills are aimed at a replica that holds rows in "sending", so that the channel's next
holder must check those rows with the platform before posting them again; each test requires
that such a kill landed. On the console the test stops reading every replica's output (a pipe
holds one page), so whichever prints next blocks in the middle of printing, and the test
kills it once the database shows rows in "sending" written by it. On Slack the stand-in holds
the answer to a post it has made; on Matrix the proxy in front of Synapse holds a send.
"""

from __future__ import annotations

import fcntl
import json
import random
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import quote

import pytest

from tests.conftest import REPO
from tests.crashfeeds import (
    ONCE_TIMEOUT,
    assert_exactly_once,
    bot_command,
    bot_env,
    growing_feeds,
    titles_in,
    write_config,
)
from tests.integration.synapse import Account, Synapse, synapse  # noqa: F401 - the fixture
from tests.pgproxy import PostgresProxy
from tests.postgres import PostgresServer
from tests.test_crash_transports import SlowSends, room_messages

FEEDS = 8
REPLICAS = 3
KILLS = 6
SEED = 20261203
#: A plain kill lands this many seconds after the previous one.
KILL_EVERY = (1.0, 4.0)
#: The deadline of every wait on a condition; it only turns a hang into a failure.
WAIT = 30.0
PAGE = 4096
#: Every time a lease is taken (a new holder, a new token), as the database's clock has it: a
#: trigger of the tests' own, in their own table, since the leases table keeps only the last.
RECORD_TAKES = """
CREATE TABLE public.lease_takes (
    name text, holder text, fence bigint, at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION public.record_take() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.holder IS NOT NULL AND NEW.fence IS DISTINCT FROM OLD.fence THEN
        INSERT INTO public.lease_takes (name, holder, fence)
            VALUES (NEW.name, NEW.holder, NEW.fence);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER record_take AFTER UPDATE ON treaty_bot.leases
    FOR EACH ROW EXECUTE FUNCTION public.record_take();
"""
#: The leases a replica's writer holds, as the database has them (for failure messages).
LEASES_OF = (
    "SELECT name, fence, acquired_at, expires_at FROM treaty_bot.leases"
    " WHERE holder = '{writer}' ORDER BY name"
)


class Replica:
    """`treaty-bot run --format jsonl` whose output a thread reads, unless ``stall()``."""

    def __init__(self, config: Path, env: dict[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            bot_command(config, "run", "--format", "jsonl"),
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=REPO,
        )
        assert self.proc.stdout is not None
        fcntl.fcntl(self.proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PAGE)
        self.lines: list[bytes] = []
        self.reading = threading.Event()
        self.reading.set()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        while True:
            self.reading.wait()
            line = self.proc.stdout.readline()
            if not line:
                return
            self.lines.append(line)

    def stall(self) -> None:
        """Stop reading its output: the replica blocks once the pipe's page is full."""
        self.reading.clear()

    def end(self, sig: signal.Signals = signal.SIGKILL) -> bytes:
        """Stop it with ``sig``; everything it printed (what was still in the pipe too)."""
        self.proc.send_signal(sig)
        self.proc.wait(timeout=WAIT)
        self.reading.set()
        self.reader.join(timeout=WAIT)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return b"".join(self.lines)


def once_logged(config: Path, env: dict[str, str], log: IO[bytes]) -> bytes:
    """`treaty-bot once --format jsonl`: what it printed; its log goes to ``log``."""
    done = subprocess.run(
        bot_command(config, "once", "--format", "jsonl"),
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        cwd=REPO,
        timeout=ONCE_TIMEOUT,
        check=True,
    )
    return done.stdout


def items_printed(out: bytes) -> list[str]:
    titles: list[str] = []
    for line in out.decode(errors="replace").splitlines():
        try:
            alert = json.loads(line)
        except ValueError:
            continue  # the line a kill cut short was never printed whole
        titles.extend(titles_in(alert["text"]))
    return titles


def sending_rows(postgres: PostgresServer, url: str, pid: int) -> int:
    [(count,)] = postgres.execute(
        url,
        "SELECT count(*) FROM treaty_bot.outbox WHERE state = 'sending'"
        f" AND split_part(written_by, ':', 2) = '{pid}'",
    )
    assert isinstance(count, int)
    return count


def test_replicas_post_every_item_once_across_sigkills(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    rng = random.Random(SEED)
    logs = tmp_path / "replicas.log"
    with growing_feeds(count=FEEDS, per_request=4) as (state, base), logs.open("ab") as log:
        config = write_config(
            tmp_path / "cfg", storage=tmp_path / "data" / "state.json", base=base, count=FEEDS
        )
        with (config / "bot.yaml").open("a") as bot_yaml:
            bot_yaml.write("replicas: {shards: 8, lease: 3s}\n")
        env = bot_env(TREATY_BOT_DATABASE_URL=postgres_url)
        printed: list[str] = []
        # the first poll of each feed only remembers what exists (see tests/test_crash.py)
        printed += items_printed(once_logged(config, env, log))
        replicas = [Replica(config, env, log) for _ in range(REPLICAS)]
        aimed = 0
        try:
            for n in range(KILLS):
                aimed_now = n % 2 == 1
                if aimed_now:  # no replica's output is read: whichever prints next blocks
                    for replica in replicas:
                        replica.stall()
                # a plain kill, anywhere in what a replica does; its shards move, and their
                # new holders poll them and queue what they find
                victim = rng.randrange(REPLICAS)
                time.sleep(rng.uniform(*KILL_EVERY))  # fault injection
                assert replicas[victim].proc.poll() is None, "a replica exited by itself"
                printed += items_printed(replicas[victim].end())
                replicas[victim] = Replica(config, env, log)
                if not aimed_now:
                    continue
                replicas[victim].stall()
                deadline = time.monotonic() + WAIT
                blocked: int | None = None
                while blocked is None and time.monotonic() < deadline:
                    for i, replica in enumerate(replicas):
                        assert replica.proc.poll() is None, "a replica exited by itself"
                        pid = replica.proc.pid
                        if sending_rows(postgres, postgres_url, pid):
                            time.sleep(0.3)  # still so a moment later: blocked mid-print
                            if sending_rows(postgres, postgres_url, pid):
                                blocked = i
                    time.sleep(0.1)  # polling the database, under the deadline above
                if blocked is not None:
                    aimed += 1
                    printed += items_printed(replicas[blocked].end())
                    replicas[blocked] = Replica(config, env, log)
                for replica in replicas:
                    replica.reading.set()
            time.sleep(rng.uniform(*KILL_EVERY))
            for replica in replicas:  # a clean stop hands the leases over at once
                printed += items_printed(replica.end(signal.SIGTERM))
        finally:
            for replica in replicas:
                if replica.proc.poll() is None:
                    replica.proc.kill()
                    replica.proc.wait()
        for _ in range(2):  # clean rounds deliver whatever the kills left behind
            printed += items_printed(once_logged(config, env, log))
        kept = postgres.execute(
            postgres_url,
            "SELECT count(*) FROM treaty_bot.leases l JOIN treaty_bot.replicas r"
            " ON l.holder = r.id WHERE r.stopped_at IS NOT NULL AND l.expires_at > now()",
        )
    summary = logs.read_text(errors="replace")
    assert "replica leases" in summary, summary[-3000:]
    assert_exactly_once(printed, state.snapshot(), minimum=FEEDS * 4)
    assert aimed > 0, "no kill landed while a replica held rows in sending"
    assert "interrupted row checked" in summary  # and such rows were checked before a reprint
    assert kept == [(0,)]  # a replica that stopped cleanly gave its leases back


def with_shards(postgres: PostgresServer, url: str, replicas: list[Replica]) -> int:
    """A replica that holds shards now (once one does)."""
    deadline = time.monotonic() + WAIT
    while True:
        for n, replica in enumerate(replicas):
            if held_by(postgres, url, replica.proc.pid):
                return n
        assert time.monotonic() < deadline, "no replica holds a shard"
        time.sleep(0.1)  # polling the database, under the deadline above


def held_by(
    postgres: PostgresServer, url: str, pid: int, kind: str = "shard:"
) -> list[tuple[str, float]]:
    """The leases (of ``kind``: shards by default, ``""`` for all) that the replica with
    process id ``pid`` holds: (name, expiry as epoch)."""
    rows = postgres.execute(
        url,
        "SELECT name, extract(epoch FROM expires_at) FROM treaty_bot.leases"
        f" WHERE split_part(holder, ':', 2) = '{pid}' AND expires_at > now()"
        f" AND name LIKE '{kind}%' ORDER BY name",
    )
    return [(str(name), float(str(expiry))) for name, expiry in rows]


def database_time(postgres: PostgresServer, url: str) -> float:
    """The database's clock, as epoch."""
    [(now,)] = postgres.execute(url, "SELECT extract(epoch FROM clock_timestamp())")
    return float(str(now))


def wait_until(condition: Callable[[], bool], what: str) -> float:
    """Poll ``condition`` until it holds (under ``WAIT``); the time it held, as epoch."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)  # polling, under the deadline above
    return time.time()


def test_a_replica_cut_off_from_the_database_stops_before_its_lease_expires(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    """The network between one replica and the database drops everything (a proxy holds every
    byte, nothing is closed): that replica stops polling and delivering before its leases
    expire by the database's clock; the other takes its shards once they have expired; what
    the cut-off replica sent meanwhile reaches the database late and writes nothing; it
    rejoins when the network is back. Every item is printed once."""
    with (
        growing_feeds(count=FEEDS, per_request=2) as (state, base),
        PostgresProxy(postgres_url) as proxy,
        (tmp_path / "a.log").open("ab") as log_a,
        (tmp_path / "b.log").open("ab") as log_b,
    ):
        config = write_config(
            tmp_path / "cfg", storage=tmp_path / "data" / "state.json", base=base, count=FEEDS
        )
        with (config / "bot.yaml").open("a") as bot_yaml:
            bot_yaml.write("replicas: {shards: 8, lease: 3s}\n")
        env_a = bot_env(TREATY_BOT_DATABASE_URL=proxy.url)
        env_b = bot_env(TREATY_BOT_DATABASE_URL=postgres_url)
        printed = items_printed(once_logged(config, env_b, log_b))
        postgres.execute(postgres_url, RECORD_TAKES)
        a = Replica(config, env_a, log_a)
        b: Replica | None = None
        try:
            wait_until(lambda: bool(held_by(postgres, postgres_url, a.proc.pid)), "a holds shards")
            b = Replica(config, env_b, log_b)
            pid_b = b.proc.pid
            wait_until(
                lambda: (
                    len(held_by(postgres, postgres_url, pid_b)) == 4
                    and len(held_by(postgres, postgres_url, a.proc.pid)) == 4
                ),
                "the shards are shared out",
            )
            [(writer,)] = postgres.execute(
                postgres_url,
                f"SELECT id FROM treaty_bot.replicas WHERE split_part(id, ':', 2) = '{a.proc.pid}'",
            )
            proxy.hold()  # the cut
            leases = held_by(postgres, postgres_url, a.proc.pid)
            # every lease a holds (its channels' too, taken between heartbeats) runs out by then
            expiry = max(e for _, e in held_by(postgres, postgres_url, a.proc.pid, ""))
            said = "polling and delivery stop"
            stopped = wait_until(
                lambda: said in (tmp_path / "a.log").read_text(errors="replace"), "a stops"
            )
            assert stopped < min(e for _, e in leases), "it stopped after its leases expired"
            taken = wait_until(
                lambda: len(held_by(postgres, postgres_url, pid_b)) == 8, "b takes every shard"
            )
            assert taken >= min(e for _, e in leases)  # only once they had expired
            # the network comes back once every lease a held has run out by the database's
            # clock (read again: a beat the database had received before the cut may have
            # committed after the first reading)
            [(last,)] = postgres.execute(
                postgres_url,
                "SELECT extract(epoch FROM max(expires_at)) FROM treaty_bot.leases"
                f" WHERE holder = '{writer}'",
            )
            expiry = max(expiry, float(str(last))) if last is not None else expiry
            wait_until(lambda: database_time(postgres, postgres_url) > expiry, "a's leases expire")
            proxy.release()  # what a sent meanwhile arrives now
            rejoined = wait_until(
                lambda: bool(held_by(postgres, postgres_url, a.proc.pid)), "a rejoins"
            )
            # the first lease a took anew once the network was back (a channel's, to deliver,
            # may come before its shards, and be given back before they are taken)
            [(first_new,)] = postgres.execute(
                postgres_url,
                "SELECT extract(epoch FROM min(at)) FROM public.lease_takes"
                f" WHERE holder = '{writer}' AND at > to_timestamp({expiry})",
            )
            rejoined_at = float(str(first_new))
            assert expiry <= rejoined_at <= rejoined
            # nothing a wrote landed between its leases' expiry and the first lease it took anew
            between = f"written_by = '{writer}' AND written_at >= to_timestamp({expiry})"
            between += f" AND written_at < to_timestamp({rejoined_at})"
            late = postgres.execute(
                postgres_url,
                f"SELECT 'sources', id, written_at FROM treaty_bot.sources WHERE {between} UNION"
                f" ALL SELECT 'outbox', key, written_at FROM treaty_bot.outbox WHERE {between}",
            )
            assert late == [], (
                f"written by a after its leases expired at {expiry} and before it took one anew"
                f" at {rejoined_at}: {late}; its leases now:"
                f" {postgres.execute(postgres_url, LEASES_OF.format(writer=writer))}; taken:"
                f" {postgres.execute(postgres_url, 'SELECT * FROM public.lease_takes')}"
            )
            printed += items_printed(b.end(signal.SIGTERM))
            printed += items_printed(a.end(signal.SIGTERM))
        finally:
            for replica in (a, b):
                if replica is not None and replica.proc.poll() is None:
                    replica.proc.kill()
                    replica.proc.wait()
        for _ in range(2):
            printed += items_printed(once_logged(config, env_b, log_b))
    assert_exactly_once(printed, state.snapshot(), minimum=FEEDS * 2)


def test_slack_replicas_post_every_item_once_across_sigkills(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    """The same with the loopback Slack stand-in: three replicas connected over Socket Mode,
    one channel per feed (Slack paces posts to a channel, one a second), random SIGKILLs; and
    one kill aimed at the replica that holds a channel while Slack holds the answer to a post
    it has made, so that its row is left in "sending" and must be looked up
    (``conversations.history``) by the channel's next holder rather than posted again."""
    from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

    rng = random.Random(SEED + 2)
    channels = tuple(f"news-{i}" for i in range(4))
    slack_ids = {name: f"C0{name.upper().replace('-', '')}" for name in channels}
    with (
        growing_feeds(count=4, per_request=3) as (state, base),
        SlackStandIn() as slack,
        (tmp_path / "replicas.log").open("ab") as log,
    ):
        for name, channel_id in slack_ids.items():
            slack.add_channel(channel_id, name)
        config = write_config(
            tmp_path / "cfg",
            storage=tmp_path / "data" / "state.json",
            base=base,
            count=4,
            channels={name: {"slack": channel_id} for name, channel_id in slack_ids.items()},
            feed_channels=channels,
        )
        with (config / "bot.yaml").open("a") as bot_yaml:
            bot_yaml.write("replicas: {shards: 8, lease: 3s}\n")
        env = bot_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_API_URL=slack.api_url,
            TREATY_BOT_DATABASE_URL=postgres_url,
        )
        once_logged(config, env, log)  # each feed's first poll only remembers
        replicas = [Replica(config, env, log) for _ in range(REPLICAS)]
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(*KILL_EVERY))  # fault injection: anywhere
                victim = rng.randrange(REPLICAS)
                assert replicas[victim].proc.poll() is None, "a replica exited by itself"
                replicas[victim].end()
                replicas[victim] = Replica(config, env, log)
            # aimed: Slack takes the next post and holds its answer; its sender is killed
            held = slack.inject("chat.postMessage", hold_after=True)
            victim = with_shards(postgres, postgres_url, replicas)  # its shards move, and
            replicas[victim].end()  # their new holders poll them: new items to post
            replicas[victim] = Replica(config, env, log)
            slack.sync(slack.wait_until(lambda: held.waiting > 0, "a post held"))
            [channel_id] = [
                c.params.get("channel")
                for c in slack.calls_to("chat.postMessage")
                if c.status is None and c.error is None
            ]
            name = next(n for n, i in slack_ids.items() if i == channel_id)
            [(holder,)] = postgres.execute(
                postgres_url,
                "SELECT split_part(holder, ':', 2) FROM treaty_bot.leases"
                f" WHERE name = 'out:slack:{name}'",
            )
            victim = next(i for i, r in enumerate(replicas) if str(r.proc.pid) == str(holder))
            replicas[victim].end()
            held.release()
            replicas[victim] = Replica(config, env, log)
            time.sleep(rng.uniform(*KILL_EVERY))
            for replica in replicas:
                replica.end(signal.SIGTERM)
        finally:
            for replica in replicas:
                if replica.proc.poll() is None:
                    replica.proc.kill()
                    replica.proc.wait()
        for _ in range(2):
            once_logged(config, env, log)

        def answered() -> bool:
            return all(
                c.status is not None or c.error is not None
                for c in slack.calls_to("chat.postMessage")
            )

        slack.sync(slack.wait_until(answered, "an answer to every chat.postMessage"))
        posted = [
            title
            for channel_id in slack_ids.values()
            for message in slack.messages(channel_id)
            for title in titles_in(message.text)
        ]
        checks = len(slack.calls_to("conversations.history"))
    assert_exactly_once(posted, state.snapshot(), minimum=4 * 3)
    assert checks > 0, "the row left in sending was not looked up"


def test_matrix_replicas_post_every_item_once_across_sigkills(
    tmp_path: Path,
    postgres: PostgresServer,
    postgres_url: str,
    synapse: Synapse,  # noqa: F811
) -> None:
    """The same with a real Synapse: three replicas, each syncing with its own connection and
    keeping its Matrix state in a directory of its own (one machine each), reach Synapse through
    a loopback proxy that holds every message send a quarter of a second; random SIGKILLs, and
    one aimed at the replica whose send the proxy holds. Synapse keeps one event per
    transaction id, so the bot's own re-check is what must stop a repost: the proxy checks that
    no alert a room lookup showed was sent again."""
    rng = random.Random(SEED + 3)
    bot = synapse.register()
    member = synapse.register()
    channels = tuple(f"news-{i}" for i in range(4))
    rooms = {
        name: synapse.request(
            "POST",
            "/_matrix/client/v3/createRoom",
            {"preset": "private_chat", "invite": [bot.user_id], "name": name},
            token=member.access_token,
        )["room_id"]
        for name in channels
    }
    with (
        growing_feeds(count=4, per_request=3) as (state, base),
        SlowSends(synapse.base_url) as hs,
        (tmp_path / "replicas.log").open("ab") as log,
    ):
        env = bot_env(
            MATRIX_HOMESERVER=hs.url,
            MATRIX_USER_ID=bot.user_id,
            MATRIX_ACCESS_TOKEN=bot.access_token,
            TREATY_BOT_DATABASE_URL=postgres_url,
        )
        configs = []
        for n in range(REPLICAS):  # one machine each: its own data/ directory
            config = write_config(
                tmp_path / f"cfg{n}",
                storage=tmp_path / f"data{n}" / "state.json",
                base=base,
                count=4,
                channels={name: {"matrix": room} for name, room in rooms.items()},
                feed_channels=channels,
            )
            with (config / "bot.yaml").open("a") as bot_yaml:
                bot_yaml.write("replicas: {shards: 8, lease: 3s}\n")
            configs.append(config)
        once_logged(configs[0], env, log)  # joins the rooms; each feed's first poll
        replicas = [Replica(configs[n], env, log) for n in range(REPLICAS)]
        try:
            for _ in range(KILLS):
                time.sleep(rng.uniform(*KILL_EVERY))  # fault injection: anywhere
                victim = rng.randrange(REPLICAS)
                assert replicas[victim].proc.poll() is None, "a replica exited by itself"
                replicas[victim].end()
                replicas[victim] = Replica(configs[victim], env, log)
            # aimed: the proxy holds the next send; the replica delivering that room is killed
            hs.hold_next_send()
            victim = with_shards(postgres, postgres_url, replicas)  # its shards move, and
            replicas[victim].end()  # their new holders poll them: new items to post
            replicas[victim] = Replica(configs[victim], env, log)
            wait_until(hs.holding.is_set, "a send is held")
            holders = postgres.execute(
                postgres_url,
                "SELECT split_part(holder, ':', 2) FROM treaty_bot.leases"
                " WHERE name LIKE 'out:matrix:%' AND expires_at > now()"
                " AND holder IN (SELECT DISTINCT written_by FROM treaty_bot.outbox"
                " WHERE state = 'sending')",
            )
            pids = {str(pid) for (pid,) in holders}
            for n, replica in enumerate(replicas):
                if str(replica.proc.pid) in pids:
                    replica.end()
                    replicas[n] = Replica(configs[n], env, log)
            hs.release()
            hs.wait_idle()
            time.sleep(rng.uniform(*KILL_EVERY))
            for replica in replicas:
                replica.end(signal.SIGTERM)
        finally:
            hs.release()
            for replica in replicas:
                if replica.proc.poll() is None:
                    replica.proc.kill()
                    replica.proc.wait()
        for _ in range(2):
            once_logged(configs[0], env, log)
        hs.wait_idle()
    posted: list[str] = []
    for room_id in rooms.values():
        for event in room_messages(synapse, room_id, member.access_token):
            if event.get("type") == "m.room.message" and event.get("sender") == bot.user_id:
                posted.extend(titles_in(str(event.get("content", {}).get("body", ""))))
    assert_exactly_once(posted, state.snapshot(), minimum=4 * 3)
    assert pids, "no replica held a row in sending when its send was held"
    assert hs.lookups > 0, "the row left in sending was not looked up"
    assert hs.resent_found == [], f"{len(hs.resent_found)} delivered rows were sent again"


def wait_for_text(path: Path, text: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while text not in path.read_text(errors="replace"):
        assert proc.poll() is None, f"the replica exited:\n{path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} in {path.name}"
        time.sleep(0.05)  # polling a log file, under the deadline above


def test_slack_replicas_answer_a_command_once_even_when_it_comes_again_to_another(
    tmp_path: Path, postgres: PostgresServer, postgres_url: str
) -> None:
    """Slack spreads envelopes over the app's connections, and retries one that was not
    acknowledged in time, maybe on another connection: the command's trigger id is claimed in
    the database, and only the replica that claimed it first answers."""
    from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

    with SlackStandIn() as slack, growing_feeds(count=1) as (_, base):
        slack.add_channel("C0ALERTS", "alerts")
        logs = [tmp_path / f"replica-{n}.log" for n in range(2)]
        config = write_config(
            tmp_path / "cfg",
            storage=tmp_path / "data" / "state.json",
            base=base,
            count=1,
            channels={"alerts": {"slack": "C0ALERTS"}},
        )
        env = bot_env(
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_APP_TOKEN=APP_TOKEN,
            SLACK_API_URL=slack.api_url,
            TREATY_BOT_DATABASE_URL=postgres_url,
        )
        replicas: list[subprocess.Popen[bytes]] = []
        try:
            for n, path in enumerate(logs):
                with path.open("ab") as log:
                    replicas.append(
                        subprocess.Popen(
                            bot_command(config, "run"), stdout=log, stderr=log, env=env, cwd=REPO
                        )
                    )
                slack.sync(slack.wait_connected(n + 1))  # socket n is replica n's
            command = slack.slash_command("help", user="U0ALICE", channel="C0ALERTS")
            slack.sync(slack.send_command(command, socket=0))
            slack.sync(slack.wait_response(command.response))
            slack.sync(slack.send_command(command, retry_attempt=1, socket=1))
            wait_for_text(logs[1], "command answered by another replica", replicas[1])
            # and one the second replica gets first is answered by it
            other = slack.slash_command("help", user="U0BOB", channel="C0ALERTS")
            slack.sync(slack.send_command(other, socket=1))
            slack.sync(slack.wait_response(other.response))
        finally:
            for proc in replicas:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=WAIT)
        assert len(slack.responses[command.response]) == 1
        assert len(slack.responses[other.response]) == 1


def say(hs: Synapse, room_id: str, account: Account, text: str) -> str:
    """``account`` posts ``text`` in the room; the event's id."""
    path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/"
    path += secrets.token_hex(8)
    body = {"msgtype": "m.text", "body": text}
    event_id: str = hs.request("PUT", path, body, token=account.access_token)["event_id"]
    return event_id


def replies_by(hs: Synapse, room_id: str, sender: str, token: str) -> dict[str, int]:
    """How many replies ``sender`` made in the room to each event, by the id of that event."""
    replies: dict[str, int] = {}
    for event in room_messages(hs, room_id, token):
        relates = event.get("content", {}).get("m.relates_to") or {}
        answered = (relates.get("m.in_reply_to") or {}).get("event_id")
        if event.get("type") == "m.room.message" and event.get("sender") == sender and answered:
            replies[answered] = replies.get(answered, 0) + 1
    return replies


def left_to_another(logs: list[Path]) -> int:
    """How many Matrix commands the replicas left to another one that had claimed them first."""
    said = "command answered by another replica platform=matrix"
    return sum(path.read_text(errors="replace").count(said) for path in logs)


@pytest.mark.parametrize("machines", [2, 1])
def test_matrix_replicas_logged_in_with_a_password_are_two_devices_and_answer_once(
    tmp_path: Path,
    postgres: PostgresServer,
    postgres_url: str,
    synapse: Synapse,  # noqa: F811
    machines: int,
) -> None:
    """Two replicas log in with MATRIX_PASSWORD, each keeping its Matrix state in a directory
    of its own (on two machines, each its data/ directory; on one, the second process takes
    the next free directory, data/matrix.2): they are two devices of the bot, each with its
    own session and crypto store. Both sync the room and read every command; the event id is
    claimed in the database, so each command gets exactly one answer, and the other replica
    logs that another replica answered it.

    A replica reads as commands only what arrives after its first sync (what that sync brings
    may be from before the start, so none of it is executed): the member speaks once both
    replicas have logged "matrix connected", which they do after that sync."""
    bot = synapse.register()
    member = synapse.register()
    room = synapse.request(
        "POST",
        "/_matrix/client/v3/createRoom",
        {"preset": "private_chat", "invite": [bot.user_id], "name": "alerts"},
        token=member.access_token,
    )["room_id"]
    synapse.request(  # the bot is in the room before either replica starts
        "POST", f"/_matrix/client/v3/join/{quote(room, safe='')}", {}, token=bot.access_token
    )
    logs = [tmp_path / f"replica-{n}.log" for n in range(2)]
    data = [tmp_path / f"data{n % machines}" for n in range(2)]
    held = [data[0] / "matrix", data[1] / "matrix" if machines == 2 else data[1] / "matrix.2"]
    with growing_feeds(count=1) as (_, base):
        env = bot_env(
            MATRIX_HOMESERVER=synapse.base_url,
            MATRIX_USER_ID=bot.user_id,
            MATRIX_PASSWORD=bot.password,
            TREATY_BOT_DATABASE_URL=postgres_url,
        )
        replicas: list[Replica] = []
        try:
            for n, path in enumerate(logs):
                config = write_config(
                    tmp_path / f"cfg{n}",
                    storage=data[n] / "state.json",
                    base=base,
                    count=1,
                    channels={"alerts": {"matrix": room}},
                )
                with path.open("ab") as log:
                    replicas.append(Replica(config, env, log))
            for path, replica in zip(logs, replicas, strict=True):
                wait_for_text(path, "matrix connected", replica.proc)
            commands = [say(synapse, room, member, "!treaty next-session")]
            wait_until(lambda: left_to_another(logs) == 1, "one replica leaves it to the other")
            for command in ("sessions", "clauses", "feeds", "news", "help"):  # in a row
                commands.append(say(synapse, room, member, f"!treaty {command}"))
            wait_until(lambda: left_to_another(logs) == 6, "both replicas read every command")
            # the replica that claimed a command answers it; the other never does
            wait_until(
                lambda: (
                    set(commands)
                    <= set(replies_by(synapse, room, bot.user_id, member.access_token))
                ),
                "every command has an answer",
            )
            listed = synapse.request("GET", "/_matrix/client/v3/devices", token=bot.access_token)
        finally:
            for replica in replicas:
                replica.end(signal.SIGTERM)
    replies = replies_by(synapse, room, bot.user_id, member.access_token)
    assert [replies[command] for command in commands] == [1] * 6
    devices = [json.loads((d / "session.json").read_text())["device_id"] for d in held]
    assert devices[0] != devices[1], "the replicas share a device"
    assert bot.device_id not in devices  # each logged in anew
    assert set(devices) <= {d["device_id"] for d in listed["devices"]}
    for folder, device in zip(held, devices, strict=True):  # and keeps its own device's keys
        stores = [p.name for p in (folder / "crypto").glob("*.db")]
        assert stores == [f"{bot.user_id}_{device}.db"]
