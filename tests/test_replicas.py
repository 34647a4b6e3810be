"""Three `treaty-bot run` replicas on one PostgreSQL database, SIGKILLed and restarted at
random: every item is posted exactly once.

The console transport is the channel: the union of the replicas' standard outputs. The feeds
grow on every request (``tests.crashfeeds``); the replicas share them out by shard leases
(``replicas.lease`` is 3 s here, so that leases move often within the test's bounded time).

Some kills are aimed: the test stops reading one replica's output (its pipe holds one page),
so the replica blocks in the middle of printing, with rows marked "sending" in the database;
the test waits until the database shows such rows written by that process, and kills it
then. Its channels go to another replica, which must check the rows it finds in "sending"
(through the journal the replicas share on this machine) before printing them again. The
test requires that at least one kill landed that way.
"""

from __future__ import annotations

import fcntl
import json
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

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
from tests.pgproxy import PostgresProxy
from tests.postgres import PostgresServer

FEEDS = 8
REPLICAS = 3
KILLS = 10
SEED = 20261203
#: A plain kill lands this many seconds after the previous one.
KILL_EVERY = (1.0, 4.0)
#: The deadline of every wait on a condition; it only turns a hang into a failure.
WAIT = 30.0
PAGE = 4096


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


def printing(postgres: PostgresServer, url: str, replicas: list[Replica]) -> int | None:
    """The replica that holds the channel's lease, once one does."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        holders = postgres.execute(
            url,
            "SELECT split_part(holder, ':', 2) FROM treaty_bot.leases"
            " WHERE name LIKE 'out:console:%' AND expires_at > now()",
        )
        pids = {int(str(pid)) for (pid,) in holders}
        for n, replica in enumerate(replicas):
            if replica.proc.pid in pids:
                return n
        time.sleep(0.1)  # polling the database, under the deadline above
    return None


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
        aimed = stalls = 0
        try:
            for n in range(KILLS):
                stalled: int | None = None
                if n % 2:  # aimed: the replica that prints stops being read
                    stalled = printing(postgres, postgres_url, replicas)
                    if stalled is not None:
                        replicas[stalled].stall()
                # a plain kill, anywhere in what a replica does; its shards move, their new
                # holders poll them, and what they find is printed by the channel's holder
                victim = rng.choice([i for i in range(REPLICAS) if i != stalled])
                time.sleep(rng.uniform(*KILL_EVERY))  # fault injection
                assert replicas[victim].proc.poll() is None, "a replica exited by itself"
                printed += items_printed(replicas[victim].end())
                replicas[victim] = Replica(config, env, log)
                if stalled is None:
                    continue
                replica = replicas[stalled]
                stalls += 1
                deadline = time.monotonic() + WAIT
                while sending_rows(postgres, postgres_url, replica.proc.pid) == 0:
                    assert replica.proc.poll() is None, "a replica exited by itself"
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)  # polling the database, under the deadline above
                else:
                    aimed += 1
                printed += items_printed(replica.end())
                replicas[stalled] = Replica(config, env, log)
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
            proxy.release()  # what a sent meanwhile arrives now
            rejoined = wait_until(
                lambda: bool(held_by(postgres, postgres_url, a.proc.pid)), "a rejoins"
            )
            [(first_new,)] = postgres.execute(
                postgres_url,
                "SELECT extract(epoch FROM min(acquired_at)) FROM treaty_bot.leases"
                f" WHERE holder = '{writer}'",
            )
            rejoined_at = float(str(first_new))
            assert expiry <= rejoined_at <= rejoined
            # nothing a wrote landed between its leases' expiry and the leases it took anew
            between = f"written_by = '{writer}' AND written_at BETWEEN to_timestamp({expiry})"
            between += f" AND to_timestamp({rejoined_at})"
            late = postgres.execute(
                postgres_url,
                f"SELECT (SELECT count(*) FROM treaty_bot.sources WHERE {between})"
                f" + (SELECT count(*) FROM treaty_bot.outbox WHERE {between})",
            )
            assert late == [(0,)]
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
