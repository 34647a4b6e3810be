"""Under load: ``/treaty`` commands at a steady rate while ``treaty-bot run`` polls a farm of
feeds, with Slack and Matrix both connected. Hand-run; it prints figures and writes JSON, and
asserts nothing.

    python -m bench.load --feeds 1000 --latency-ms 50 --duration 120 --rate 20 \\
        --json bench/results/2026-11-28-load-n1000-r20.json

What runs, all on loopback, each stopping by itself:

- the feed farm (``python -m bench.farm``, its own process): ``--feeds`` feeds over 32
  addresses, ``--latency-ms`` before every answer; every ``--advance-every`` seconds the bench
  changes ``--changed`` of them (new items, a quarter of which match the configured keyword, so
  alerts go out to Slack and Matrix while commands arrive);
- the Slack stand-in (``tests/integration/slack_standin.py``, in this process): Web API, Socket
  Mode and response_url, with real request signing;
- a real Synapse (``tests/integration/synapse.py``): the bot's room, and a member who sends
  ``!treaty`` commands at ``--matrix-rate`` and times the bot's replies;
- ``treaty-bot run`` (through ``bench.loopwatch``, which times its event loop from inside;
  ``--no-instrument`` runs ``python -m bot run`` as is), configured with every farm feed at
  ``--every`` (1m, the least the configuration allows), both transports, and its web server
  (``/metrics``, and ``/slack/events`` in ``--slack-mode http``).

Measured:

- **commands**: ``--rate`` slash commands a second, open loop (each is sent at its time whether
  or not the earlier ones were answered), round robin over ``COMMANDS``. Socket Mode: from the
  envelope being written to the WebSocket to the bot's ack read back (the stand-in's
  timestamp); HTTP mode: from the signed POST to ``/slack/events`` to its response. Then the
  time until the answer is POSTed to the command's ``response_url``. Acks are awaited up to
  ``ACK_WAIT`` s, so a late ack is measured rather than lost; Slack itself gives up after 3 s.
- **loop lag**: the bot's own figure, scraped from ``/metrics`` every ``--scrape-every`` s
  (``treatybot_event_loop_lag_seconds``, probed every 0.5 s, and its maximum; a scrape costs
  the bot's loop, so not more often); the round trip of ``/healthz`` every 0.25 s (a client's
  view); and ``bench.loopwatch``'s probe every 10 ms, loop turns busy for 50 ms or more, and
  where the loop's Python stack was while a turn was busy (sampled every 5 ms).
- **Matrix**: the bot's ``/sync`` requests (Synapse's access log: count, per minute, the
  longest gap between two), and the reply latency of the member's ``!treaty`` commands (sent to
  seen in the member's own sync).
- **polls**: ``treatybot_polls_total`` by outcome; requests the farm answered (200/304).
- **the bot's processes**: CPU (user + system) and RSS of the bot and of its descendants
  (the parser fork server and workers), from ``/proc`` every 0.5 s; the same for the farm and
  Synapse, and this process's own CPU, since all share the machine's cores.

Results are given for the whole run and split at the moment the bot finished its first poll of
every feed (the cold round, where every body is parsed) and after it (steady state).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import nio  # type: ignore[import-untyped]

from bench.farm import KEYWORD
from bench.run import REPO, code_version, machine
from tests.integration.slack_standin import (
    APP_TOKEN,
    BOT_TOKEN,
    SIGNING_SECRET,
    SlackStandIn,
    post_signed,
)
from tests.integration.synapse import Account, Synapse, free_port, synapse_missing

#: The commands sent, round robin.
COMMANDS = ("next-session", "clauses", "news 5", "feeds", "status", "sessions 10", "help")
#: How long an ack (or an HTTP answer) is waited for; Slack gives up after 3 s.
ACK_WAIT = 15.0
SLACK_DEADLINE = 3.0
#: How long answers may still arrive after the last command was sent.
DRAIN = 15.0
HEALTH_EVERY = 0.25
PROC_EVERY = 0.5
ALERTS = "C0ALERTS"
OPS = "C0OPSCHAN"
USER = "U0ALICE"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------------------- helpers


def pct(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile ``q`` (0-100) of ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: Sequence[float]) -> dict[str, Any]:
    """count, p50, p90, p99, max and mean of seconds, in ms."""
    if not values:
        return {"count": 0}

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 1)

    return {
        "count": len(values),
        "p50_ms": ms(pct(values, 50)),
        "p90_ms": ms(pct(values, 90)),
        "p99_ms": ms(pct(values, 99)),
        "max_ms": ms(max(values)),
        "mean_ms": ms(sum(values) / len(values)),
    }


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process the bench starts: no proxy, no platform credentials, the
    repository importable; ``extra`` added."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        and not k.startswith(("SLACK_", "MATRIX_", "TREATY_BOT_"))
    }
    env["NO_PROXY"] = env["no_proxy"] = "*"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML flow scalar


# ------------------------------------------------------------------------------- processes


def _pss(pid: int) -> int | None:
    """Proportional set size of a process (shared pages divided among their sharers)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class ProcSample:
    at: float  # seconds since the commands started
    cpu: dict[str, float]  # role -> user + system seconds so far
    rss_mib: dict[str, float]  # role -> resident MiB now


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, cpu seconds, rss bytes) of a process, from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * PAGE


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry))
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class ProcWatch:
    """CPU and RSS of the bot (and its descendants), the farm, Synapse and this process."""

    def __init__(self, roles: dict[str, int], start: float) -> None:
        self.roles = roles
        self.start = start
        self.samples: list[ProcSample] = []
        self.peak_rss: Counter[str] = Counter()
        self.worker_cpu: dict[int, float] = {}  # every descendant of the bot seen, last CPU

    def sample(self) -> None:
        cpu: dict[str, float] = {}
        rss: dict[str, float] = {}
        for role, pid in self.roles.items():
            st = _stat(pid)
            if st is None:
                continue
            cpu[role], rss[role] = st[1], st[2] / 2**20
        bot = self.roles.get("bot")
        if bot is not None:
            tree_rss = rss.get("bot", 0.0)
            for pid in descendants(bot):
                st = _stat(pid)
                if st is not None:
                    self.worker_cpu[pid] = st[1]
                    tree_rss += st[2] / 2**20
            cpu["bot_descendants"] = sum(self.worker_cpu.values())
            rss["bot_tree"] = tree_rss
            if len(self.samples) % 4 == 0:  # every 2 s: smaps_rollup walks the page tables
                pss = [_pss(pid) for pid in (bot, *descendants(bot))]
                rss["bot_tree_pss"] = sum(p for p in pss if p is not None) / 2**20
                if pss[0] is not None:
                    rss["bot_pss"] = pss[0] / 2**20
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench"] = own.ru_utime + own.ru_stime
        for role, value in rss.items():
            self.peak_rss[role] = max(self.peak_rss[role], value)  # type: ignore[assignment]
        self.samples.append(ProcSample(round(time.monotonic() - self.start, 3), cpu, rss))


# ------------------------------------------------------------------------------- the run


@dataclass
class Command:
    i: int
    text: str
    sent: float  # seconds since the commands started (when it was actually sent)
    late_start_ms: float  # how late the bench sent it against its schedule
    ack_ms: float | None = None
    error: str | None = None
    response: int = 0  # the response_url's number in the stand-in
    answer_ms: float | None = None


@dataclass
class MatrixCommand:
    text: str
    sent: float
    event_id: str | None = None
    reply_ms: float | None = None
    error: str | None = None


@dataclass
class Scrape:
    at: float
    took_ms: float
    lag: float | None
    lag_max: float | None
    polls: dict[str, float]
    command_count: dict[str, float]
    command_sum: dict[str, float]
    alerts_sent: dict[str, float]
    outbox: float | None


@dataclass
class State:
    commands: list[Command] = field(default_factory=list)
    matrix: list[MatrixCommand] = field(default_factory=list)
    scrapes: list[Scrape] = field(default_factory=list)
    scrape_errors: int = 0
    bench_lag: list[tuple[float, float]] = field(default_factory=list)
    health: list[tuple[float, float]] = field(default_factory=list)  # (at, round trip)
    advances: list[dict[str, Any]] = field(default_factory=list)
    matrix_alerts_seen: int = 0
    last_metrics: str = ""


WANTED = (
    "treatybot_event_loop_lag_seconds",
    "treatybot_event_loop_lag_max_seconds",
    "treatybot_polls_total",
    "treatybot_command_latency_seconds_count",
    "treatybot_command_latency_seconds_sum",
    "treatybot_alerts_sent_total",
    "treatybot_outbox_depth",
)
_LABEL = re.compile(r'(\w+)="([^"]*)"')

Metrics = dict[str, list[tuple[dict[str, str], float]]]


def parse_metrics(text: str) -> Metrics:
    """The few series the bench reads, from Prometheus text (thousands of per-feed lines are
    skipped without parsing, so that scraping costs this process little)."""
    out: Metrics = {}
    for line in text.splitlines():
        if not line.startswith(WANTED):
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        if name not in WANTED:
            continue
        out.setdefault(name, []).append((dict(_LABEL.findall(labels)), float(value)))
    return out


def by_label(metrics: Metrics, name: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in metrics.get(name, []):
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def single(metrics: Metrics, name: str) -> float | None:
    values = metrics.get(name, [])
    return values[0][1] if values else None


class LoadBench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.state = State()
        self.start = 0.0  # time.monotonic() when the commands started
        self.start_wall = 0.0
        self.http_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.matrix_room = ""
        self.bot_account: Account | None = None
        self.member: nio.AsyncClient | None = None
        self.pending_replies: dict[str, MatrixCommand] = {}
        self.stop = asyncio.Event()
        self.farm_base = ""
        self.timeline: dict[str, float] = {}
        self.t0 = time.monotonic()
        self.end = 0.0
        self.slack = SlackStandIn()  # replaced by the running one

    def since(self) -> float:
        return time.monotonic() - self.start

    def mark(self, what: str) -> None:
        self.timeline[what] = round(time.monotonic() - self.t0, 3)
        print(f"  [{self.timeline[what]:7.1f}s] {what}", flush=True)

    # -- set-up -------------------------------------------------------------------------------

    def spawn_farm(self, urls: Path) -> None:
        a = self.args
        log = (self.workdir / "farm.log").open("wb")
        self.procs["farm"] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.farm",
                "--feeds",
                str(a.feeds),
                "--latency-ms",
                str(a.latency_ms),
                "--changed",
                str(a.changed),
                "--duration",
                str(a.duration + 600),
                "--write-urls",
                str(urls),
                "--seed",
                str(a.seed),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=REPO,
        )
        log.close()

    async def start_farm(self) -> list[str]:
        urls = self.workdir / "urls.txt"
        self.spawn_farm(urls)
        deadline = time.monotonic() + 180
        while not urls.exists() or not urls.read_text().endswith("\n"):
            if self.procs["farm"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the farm did not start: see " + str(self.workdir / "farm.log"))
            await asyncio.sleep(0.1)
        lines = urls.read_text().split()
        port = lines[0].split(":")[2].split("/")[0]
        self.farm_base = f"http://127.0.0.1:{port}"
        return lines

    async def start_matrix(self) -> Synapse | None:
        if self.args.no_matrix:
            return None
        why = synapse_missing()
        if why is not None:
            raise RuntimeError(why + " (or run with --no-matrix)")
        directory = self.workdir / "synapse"
        directory.mkdir()
        synapse = Synapse(directory)
        await asyncio.to_thread(synapse.start)
        self.procs["synapse"] = synapse._proc  # type: ignore[assignment]
        self.bot_account = await asyncio.to_thread(synapse.register, "treatybot")
        member = await asyncio.to_thread(synapse.register, "member")
        client = nio.AsyncClient(
            synapse.base_url,
            member.user_id,
            device_id=member.device_id,
            config=nio.AsyncClientConfig(request_timeout=30, max_timeout_retry_wait_time=0.5),
        )
        client.restore_login(member.user_id, member.device_id, member.access_token)
        resp = await client.room_create(invite=[self.bot_account.user_id])
        self.matrix_room = str(resp.room_id)
        client.add_event_callback(self._on_matrix_event, (nio.RoomMessage,))
        self.member = client
        return synapse

    async def _on_matrix_event(self, room: Any, event: Any) -> None:
        content = event.source.get("content", {})
        replied = ((content.get("m.relates_to") or {}).get("m.in_reply_to") or {}).get("event_id")
        if replied and replied in self.pending_replies:
            command = self.pending_replies.pop(replied)
            command.reply_ms = round((self.since() - command.sent) * 1000, 1)
        elif self.bot_account is not None and event.sender == self.bot_account.user_id:
            self.state.matrix_alerts_seen += 1

    def write_config(self, urls: list[str], member: str) -> Path:
        a = self.args
        config = self.workdir / "config"
        config.mkdir()
        storage = self.workdir / "data" / "treaty-bot.json"
        storage.parent.mkdir()
        alerts = f"{{slack: {ALERTS}" + (
            f", matrix: {yaml_str(self.matrix_room)}}}" if self.matrix_room else "}"
        )
        (config / "bot.yaml").write_text(
            "timezone: Europe/Vienna\n"
            f"storage: {yaml_str(str(storage))}\n"
            f"channels:\n  alerts: {alerts}\n  ops: {{slack: {OPS}}}\n"
            f"slack: {{mode: {a.slack_mode}}}\n"
            f"http: {{host: 127.0.0.1, port: {self.http_port}}}\n"
            f"admins: {{slack: [{USER}], matrix: [{yaml_str(member)}]}}\n"
            "fetch:\n"
            "  timeout: 30s\n"
            f"  per_host: {a.per_host}\n"
            f"  max_in_flight: {a.in_flight}\n"
        )
        lines = [
            "defaults:",
            f"  every: {a.every}",
            "  channels: [alerts]",
            f"  match: [{yaml_str(KEYWORD)}]",
            "feeds:",
        ]
        lines += [f"  - {{id: feed-{i:04d}, url: {yaml_str(url)}}}" for i, url in enumerate(urls)]
        (config / "feeds.yaml").write_text("\n".join(lines) + "\n")
        for name in ("sessions.yaml", "clauses.yaml"):  # the shipped ones (no calendar URLs)
            shutil.copy(REPO / "config" / name, config / name)
        return config

    def start_bot(self, config: Path) -> None:
        a = self.args
        env = child_env()
        env["SLACK_BOT_TOKEN"] = BOT_TOKEN
        env["SLACK_API_URL"] = self.slack.api_url
        if a.slack_mode == "socket":
            env["SLACK_APP_TOKEN"] = APP_TOKEN
        else:
            env["SLACK_SIGNING_SECRET"] = SIGNING_SECRET
        if self.bot_account is not None and self.member is not None:
            env["MATRIX_HOMESERVER"] = self.member.homeserver
            env["MATRIX_USER_ID"] = self.bot_account.user_id
            env["MATRIX_ACCESS_TOKEN"] = self.bot_account.access_token
        bot = ["run", "--config", str(config)]
        if a.no_instrument:
            argv = [sys.executable, "-m", "bot", *bot]
        else:
            argv = [
                sys.executable,
                "-m",
                "bench.loopwatch",
                "--out",
                str(self.workdir / "loopwatch.json"),
                "--",
                *bot,
            ]
        with (self.workdir / "bot.log").open("wb") as log:
            self.procs["bot"] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO
            )

    async def wait_ready(self, session: aiohttp.ClientSession) -> None:
        deadline = time.monotonic() + 120
        bot = self.procs["bot"]

        def check() -> None:
            if bot.poll() is not None:
                raise RuntimeError(f"the bot exited ({bot.returncode}): see the bot.log")
            if time.monotonic() > deadline:
                raise RuntimeError("the bot was not ready within 120 s")

        while True:
            check()
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"http://127.0.0.1:{self.http_port}/healthz") as r:
                    await r.read()
                    break
            await asyncio.sleep(0.1)
        self.mark("bot: web server up")
        if self.args.slack_mode == "socket":
            while not self.slack.sockets:
                check()
                await asyncio.sleep(0.05)
        else:
            while not any(c.status for c in self.slack.calls_to("auth.test")):
                check()
                await asyncio.sleep(0.05)
        self.mark("bot: slack connected")
        if self.member is not None and self.bot_account is not None:
            while True:
                check()
                resp = await self.member.joined_members(self.matrix_room)
                members = getattr(resp, "members", [])
                if any(m.user_id == self.bot_account.user_id for m in members):
                    break
                await asyncio.sleep(0.2)
            self.mark("bot: joined the Matrix room")
            # the bot ignores commands older than its first sync: give it a moment
            await asyncio.sleep(1.0)

    # -- load ---------------------------------------------------------------------------------

    async def slack_commands(self, session: aiohttp.ClientSession) -> None:
        a = self.args
        total = int(a.duration * a.rate)
        tasks: list[asyncio.Task[None]] = []
        for i in range(total):
            due = i / a.rate
            wait = due - self.since()
            if wait > 0:
                await asyncio.sleep(wait)
            text = COMMANDS[i % len(COMMANDS)]
            late = max(0.0, self.since() - due)
            tasks.append(
                asyncio.create_task(self._one_command(session, i, text, round(late * 1000, 1)))
            )
        await asyncio.gather(*tasks)

    async def _one_command(
        self, session: aiohttp.ClientSession, i: int, text: str, late_ms: float
    ) -> None:
        slash = self.slack.slash_command(text, user=USER, channel=ALERTS)
        command = Command(i, text, 0.0, late_ms, response=slash.response)
        self.state.commands.append(command)
        sent = time.monotonic()
        command.sent = round(sent - self.start, 4)
        try:
            if self.args.slack_mode == "socket":
                ack = await self.slack.send_envelope(
                    "slash_commands", slash.payload, deadline=ACK_WAIT
                )
                command.ack_ms = round((ack.arrived - sent) * 1000, 2)
            else:
                reply = await post_signed(
                    session,
                    f"http://127.0.0.1:{self.http_port}/slack/events",
                    form=slash.payload,
                    deadline=ACK_WAIT,
                )
                if reply.status != 200:
                    command.error = f"HTTP {reply.status}"
                command.ack_ms = round((reply.arrived - sent) * 1000, 2)
        except (AssertionError, TimeoutError) as err:
            command.error = f"no ack: {err}"[:200]
        except (aiohttp.ClientError, OSError) as err:
            command.error = f"{type(err).__name__}: {err}"[:200]

    async def matrix_commands(self) -> None:
        if self.member is None or self.args.matrix_rate <= 0:
            return
        every = 1 / self.args.matrix_rate
        n = 0
        while self.since() < self.args.duration:
            text = "!treaty " + COMMANDS[n % len(COMMANDS)]
            command = MatrixCommand(text, round(self.since(), 4))
            self.state.matrix.append(command)
            try:
                resp = await self.member.room_send(
                    self.matrix_room, "m.room.message", {"msgtype": "m.text", "body": text}
                )
                event_id = getattr(resp, "event_id", None)
                if event_id is None:
                    command.error = str(resp)[:200]
                else:
                    command.event_id = str(event_id)
                    self.pending_replies[command.event_id] = command
            except Exception as err:  # keep sending; the error is in the results
                command.error = f"{type(err).__name__}: {err}"[:200]
            n += 1
            await asyncio.sleep(max(0.0, (n * every) - self.since()))

    async def member_sync(self) -> None:
        if self.member is None:
            return
        with contextlib.suppress(asyncio.CancelledError):
            await self.member.sync_forever(timeout=3000)

    async def advance(self, session: aiohttp.ClientSession) -> None:
        every = self.args.advance_every
        if every <= 0:
            return
        k = 1
        while k * every < self.args.duration:
            await asyncio.sleep(max(0.0, k * every - self.since()))
            at = round(self.since(), 2)
            async with session.post(f"{self.farm_base}/_farm/advance") as r:
                data = await r.json()
            data["at"] = at
            self.state.advances.append(data)
            print(f"  [{at:7.1f}s after start] farm round {data['round']}: {data}", flush=True)
            k += 1

    async def scrape(self, session: aiohttp.ClientSession) -> None:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    text = await r.text()
            except (aiohttp.ClientError, OSError, TimeoutError):
                self.state.scrape_errors += 1
            else:
                took = time.monotonic() - began
                m = parse_metrics(text)
                self.state.last_metrics = text
                self.state.scrapes.append(
                    Scrape(
                        at=round(began - self.start, 3),
                        took_ms=round(took * 1000, 2),
                        lag=single(m, "treatybot_event_loop_lag_seconds"),
                        lag_max=single(m, "treatybot_event_loop_lag_max_seconds"),
                        polls=by_label(m, "treatybot_polls_total", "outcome"),
                        command_count=by_label(
                            m, "treatybot_command_latency_seconds_count", "platform"
                        ),
                        command_sum=by_label(
                            m, "treatybot_command_latency_seconds_sum", "platform"
                        ),
                        alerts_sent=by_label(m, "treatybot_alerts_sent_total", "transport"),
                        outbox=single(m, "treatybot_outbox_depth"),
                    )
                )
            await asyncio.sleep(max(0.0, self.args.scrape_every - (time.monotonic() - began)))

    async def probe_health(self, session: aiohttp.ClientSession) -> None:
        """The round trip of ``/healthz`` every 0.25 s: the loop's lag as a client sees it."""
        url = f"http://127.0.0.1:{self.http_port}/healthz"
        while not self.stop.is_set():
            began = time.monotonic()
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                    await r.read()
                self.state.health.append((round(began - self.start, 3), time.monotonic() - began))
            await asyncio.sleep(max(0.0, HEALTH_EVERY - (time.monotonic() - began)))

    async def watch_procs(self, watch: ProcWatch) -> None:
        while not self.stop.is_set():
            await asyncio.to_thread(watch.sample)
            await asyncio.sleep(PROC_EVERY)

    async def own_lag(self) -> None:
        """This process's event loop: a late loop here would inflate the measured acks."""
        loop = asyncio.get_running_loop()
        while not self.stop.is_set():
            began = loop.time()
            await asyncio.sleep(0.01)
            lag = loop.time() - began - 0.01
            self.state.bench_lag.append((round(self.since(), 3), lag))

    # -- the whole run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        a = self.args
        self.t0 = time.monotonic()
        self.start = self.t0
        print(f"work directory: {self.workdir}", flush=True)
        urls = await self.start_farm()
        self.mark(f"farm: {len(urls)} feeds at {self.farm_base}")
        synapse: Synapse | None = None
        watch: ProcWatch | None = None
        results: dict[str, Any] = {}
        background: list[asyncio.Task[None]] = []
        try:
            synapse = await self.start_matrix()
            if synapse is not None:
                self.mark(f"synapse: {synapse.base_url}, room {self.matrix_room}")
            async with SlackStandIn() as slack, aiohttp.ClientSession() as session:
                self.slack = slack
                slack.add_channel(ALERTS, "alerts")
                slack.add_channel(OPS, "ops")
                member = self.member.user_id if self.member is not None else "@nobody:localhost"
                config = self.write_config(urls, member)
                spawned = time.monotonic()
                self.start_bot(config)
                self.mark("bot: started")
                roles = {k: p.pid for k, p in self.procs.items()}
                self.start = spawned
                watch = ProcWatch(roles, spawned)
                background += [
                    asyncio.create_task(self.watch_procs(watch)),
                    asyncio.create_task(self.scrape(session)),
                    asyncio.create_task(self.member_sync()),
                ]
                await self.wait_ready(session)
                ready_after = time.monotonic() - spawned
                self.start = time.monotonic()
                self.start_wall = time.time()
                for s in watch.samples:
                    s.at = round(s.at - ready_after, 3)
                watch.start = self.start
                for sc in self.state.scrapes:
                    sc.at = round(sc.at - ready_after, 3)
                background.append(asyncio.create_task(self.own_lag()))
                background.append(asyncio.create_task(self.probe_health(session)))
                self.mark(
                    f"load: {a.rate:g} commands/s for {a.duration:g}s over Slack "
                    f"({a.slack_mode} mode), Matrix {a.matrix_rate:g}/s"
                )
                load = [
                    asyncio.create_task(self.slack_commands(session)),
                    asyncio.create_task(self.matrix_commands()),
                    asyncio.create_task(self.advance(session)),
                ]
                await asyncio.gather(*load)
                self.mark("load: all sent; draining answers")
                for _ in range(int(DRAIN / 0.2)):
                    if not self.pending_replies and self._answers_done():
                        break
                    await asyncio.sleep(0.2)
                self.end = self.since()
                await asyncio.sleep(0.5)
                answered: dict[Any, float] = {}
                for call in slack.calls_to("response_url"):
                    answered.setdefault(call.params.get("n"), call.at)
                for cmd in self.state.commands:
                    if cmd.response in answered:
                        at = answered[cmd.response] - self.start
                        cmd.answer_ms = round((at - cmd.sent) * 1000, 1)
                posted = {ch: len(slack.messages(ch)) for ch in (ALERTS, OPS)}
                hwm = {role: vm_hwm_mib(pid) for role, pid in roles.items()}
                stats: dict[str, Any] = {}
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.farm_base}/_farm/stats") as r:
                        stats = await r.json()
                self.stop.set()
                bot_code = await self.stop_bot()
                self.mark(f"bot: stopped (exit {bot_code})")
                results = self.analyse(watch, synapse, posted, hwm, stats, bot_code, ready_after)
        finally:
            self.stop.set()
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if self.member is not None:
                await self.member.close()
            await self.stop_bot()
            farm = self.procs.get("farm")
            if farm is not None and farm.poll() is None:
                farm.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(farm.wait, 20)
                except subprocess.TimeoutExpired:
                    farm.kill()
            if synapse is not None:
                await asyncio.to_thread(synapse.stop)
        return results

    def _answers_done(self) -> bool:
        responses = {c.params.get("n") for c in self.slack.calls_to("response_url")}
        return all(c.response in responses for c in self.state.commands if c.error is None)

    async def stop_bot(self) -> int | None:
        bot = self.procs.get("bot")
        if bot is None:
            return None
        if bot.poll() is None:
            bot.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(bot.wait, 30)
            except subprocess.TimeoutExpired:
                bot.kill()
                await asyncio.to_thread(bot.wait)
        return bot.returncode

    # -- analysis -----------------------------------------------------------------------------

    def synapse_syncs(self, synapse: Synapse | None) -> dict[str, Any]:
        if synapse is None or self.bot_account is None:
            return {}
        user = self.bot_account.user_id
        pattern = re.compile(
            r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*\{" + re.escape(user) + r"\} "
            r"Processed request: ([\d.]+)sec.* \"GET /_matrix/client/v3/sync\?([^ ]*) "
        )
        syncs: list[tuple[float, float, bool]] = []  # (seconds since start at the end, took)
        for line in synapse.log_path.read_text(errors="replace").splitlines():
            m = pattern.match(line)
            if m is None:
                continue
            when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
            end = when + int(m.group(2)) / 1000 - self.start_wall
            syncs.append((end, float(m.group(3)), "timeout=0" in m.group(4)))
        during = [s for s in syncs if 0 <= s[0] <= self.end]
        ends = [s[0] for s in during]
        # the longest time during the run with no sync of the bot's open at Synapse
        gaps = [b - took - a for (a, _, _), (b, took, _) in itertools.pairwise(during)]
        minutes = self.end / 60
        return {
            "bot_syncs_total": len(syncs),
            "bot_syncs_during_load": len(during),
            "per_minute": round(len(during) / minutes, 1) if minutes else None,
            "longest_gap_between_syncs_s": round(max(gaps), 3) if gaps else None,
            "sync_duration_s_max": round(max((s[1] for s in during), default=0.0), 3),
            "first_and_last": [round(ends[0], 1), round(ends[-1], 1)] if ends else [],
        }

    def analyse(
        self,
        watch: ProcWatch,
        synapse: Synapse | None,
        posted: dict[str, int],
        hwm: dict[str, float | None],
        farm: dict[str, Any],
        bot_code: int | None,
        ready_after: float,
    ) -> dict[str, Any]:
        a = self.args
        st = self.state
        feeds = a.feeds
        # when the bot had polled every feed once (the cold round)
        cold_end: float | None = None
        for sc in st.scrapes:
            if sum(sc.polls.values()) >= feeds:
                cold_end = sc.at
                break

        def window(t: float, part: str) -> bool:
            if part == "all":
                return True
            if cold_end is None:
                return part == "cold"
            return t < cold_end if part == "cold" else t >= cold_end

        commands: dict[str, Any] = {}
        for part in ("all", "cold", "steady"):
            cmds = [c for c in st.commands if window(c.sent, part)]
            acked = [c.ack_ms / 1000 for c in cmds if c.ack_ms is not None and c.error is None]
            answers = [c.answer_ms / 1000 for c in cmds if c.answer_ms is not None]
            commands[part] = {
                "sent": len(cmds),
                "acked": len(acked),
                "acked_within_3s": sum(1 for v in acked if v < SLACK_DEADLINE),
                "acked_over_1s": sum(1 for v in acked if v >= 1.0),
                "errors": Counter((c.error or "")[:60] for c in cmds if c.error),
                "ack": summary_ms(acked),
                "answered": len(answers),
                "answer": summary_ms(answers),
            }
        per_command = {
            text: summary_ms([c.ack_ms / 1000 for c in st.commands if c.text == text and c.ack_ms])
            | {
                "answer_p50_ms": (
                    summary_ms(
                        [c.answer_ms / 1000 for c in st.commands if c.text == text and c.answer_ms]
                    ).get("p50_ms")
                )
            }
            for text in COMMANDS
        }
        late = [c.late_start_ms / 1000 for c in st.commands]
        # the bot's own lag figure: one value per probe (0.5 s); consecutive equal scrapes are one
        distinct: list[tuple[float, float]] = []
        for sc in st.scrapes:
            if sc.lag is not None and (not distinct or sc.lag != distinct[-1][1]):
                distinct.append((sc.at, sc.lag))
        metrics_lag: dict[str, Any] = {}
        for part in ("all", "cold", "steady"):
            values = [v for t, v in distinct if 0 <= t <= self.end and window(t, part)]
            metrics_lag[part] = summary_ms(values)
        health: dict[str, Any] = {}
        for part in ("all", "cold", "steady"):
            values = [v for t, v in st.health if 0 <= t <= self.end and window(t, part)]
            health[part] = summary_ms(values) | {"over_100ms": sum(1 for v in values if v > 0.1)}
        last = st.scrapes[-1] if st.scrapes else None
        first_loaded = next((sc for sc in st.scrapes if sc.at >= 0), None)
        metrics: dict[str, Any] = {
            "scrapes": len(st.scrapes),
            "scrape_errors": st.scrape_errors,
            "scrape_round_trip": summary_ms([sc.took_ms / 1000 for sc in st.scrapes]),
            "loop_lag_probes": metrics_lag,
            "healthz_round_trip": health,
            "loop_lag_max_since_start_ms": round((last.lag_max or 0) * 1000, 1) if last else None,
            "loop_lag_max_before_load_ms": round((first_loaded.lag_max or 0) * 1000, 1)
            if first_loaded
            else None,
            "polls_by_outcome": last.polls if last else {},
            "polls_total": sum(last.polls.values()) if last else 0,
            "commands_answered": last.command_count if last else {},
            "command_handler_mean_ms": {
                k: round(last.command_sum.get(k, 0) / v * 1000, 1)
                for k, v in last.command_count.items()
                if v
            }
            if last
            else {},
            "alerts_sent": last.alerts_sent if last else {},
            "outbox_depth_at_end": last.outbox if last else None,
        }
        # polls over time: every 10 s
        timeline = []
        next_at = 0.0
        for sc in st.scrapes:
            if sc.at >= next_at:
                timeline.append((round(sc.at, 1), int(sum(sc.polls.values())), sc.lag_max))
                next_at += 10
        metrics["polls_every_10s"] = timeline
        # processes
        procs: dict[str, Any] = {}
        samples = [s for s in watch.samples if s.at >= 0]
        if samples:
            first, final = samples[0], samples[-1]
            span = final.at - first.at
            roles = set(final.cpu).union(*(set(x.rss_mib) for x in samples))
            for role in sorted(roles):
                cpu = final.cpu.get(role, 0.0) - first.cpu.get(role, 0.0)
                rss_values = [s.rss_mib[role] for s in samples if role in s.rss_mib]
                procs[role] = {
                    "cpu_s_during_load": round(cpu, 2),
                    "cpu_share_of_one_core": round(cpu / span, 3) if span else None,
                    "cpu_s_total": round(final.cpu.get(role, 0.0), 2),
                    "rss_mib_max_sampled": round(max(rss_values), 1) if rss_values else None,
                    "rss_mib_at_end": round(rss_values[-1], 1)
                    if role in final.rss_mib or role.endswith("_pss")  # PSS: every 4th sample
                    else None,
                }
            # the busiest 10 s of the bot
            busiest = 0.0
            for i, s in enumerate(samples):
                j = next((k for k in range(i, len(samples)) if samples[k].at >= s.at + 10), None)
                if j is None:
                    break
                busiest = max(
                    busiest,
                    (samples[j].cpu.get("bot", 0) - s.cpu.get("bot", 0)) / (samples[j].at - s.at),
                )
            procs["bot"]["cpu_share_busiest_10s"] = round(busiest, 3)
            procs["span_s"] = round(span, 1)
            # after the first poll of every feed: what the bot costs while it keeps up
            after = [x for x in samples if cold_end is not None and x.at >= cold_end]
            if len(after) >= 2 and after[-1].at > after[0].at:
                steady_span = after[-1].at - after[0].at
                for role in ("bot", "bot_descendants"):
                    if role in procs:
                        used = after[-1].cpu.get(role, 0.0) - after[0].cpu.get(role, 0.0)
                        procs[role]["cpu_share_after_first_round"] = round(used / steady_span, 3)
                pss = [x.rss_mib["bot_tree_pss"] for x in after if "bot_tree_pss" in x.rss_mib]
                if pss and "bot_tree_pss" in procs:
                    procs["bot_tree_pss"]["mib_max_after_first_round"] = round(max(pss), 1)
        for role, value in hwm.items():
            if role in procs and value is not None:
                procs[role]["vm_hwm_mib"] = round(value, 1)
        bench_lag = [v for t, v in st.bench_lag if t <= self.end]
        loopwatch = self.loopwatch(cold_end)
        matrix_replies = [m.reply_ms / 1000 for m in st.matrix if m.reply_ms is not None]
        matrix = {
            "commands_sent": len(st.matrix),
            "replied": len(matrix_replies),
            "errors": [m.error for m in st.matrix if m.error][:10],
            "reply": summary_ms(matrix_replies),
            "replies_by_time": [(m.sent, m.reply_ms) for m in st.matrix],
            "bot_messages_seen_by_member": st.matrix_alerts_seen,
            "synapse": self.synapse_syncs(synapse),
        }
        return {
            "bench": "load",
            "argv": sys.argv[1:],
            "settings": {k: v for k, v in vars(a).items() if k not in ("json", "workdir", "keep")},
            "commands_sent_round_robin": list(COMMANDS),
            "code": code_version(),
            "machine": machine(),
            "load_at_end": os.getloadavg(),
            "timeline_s": self.timeline,
            "bot_ready_after_s": round(ready_after, 2),
            "cold_round_done_at_s": cold_end,
            "load_seconds": round(self.end, 1),
            "bot_exit_code": bot_code,
            "slack": {
                "mode": a.slack_mode,
                "commands": commands,
                "per_command": per_command,
                "bench_send_delay": summary_ms(late),
                "alerts_posted": posted,
            },
            "matrix": matrix,
            "bot_metrics": metrics,
            "loopwatch": loopwatch,
            "processes": procs,
            "bench_own_loop_lag": summary_ms(bench_lag),
            "bench_own_loop_lag_over_50ms": [
                (t, round(v * 1000, 1)) for t, v in st.bench_lag if v > 0.05
            ],
            "farm": {k: v for k, v in farm.items() if k != "by_host"},
            "advances": st.advances,
            "commands_log": [asdict(c) for c in st.commands],
        }

    def loopwatch(self, cold_end: float | None) -> dict[str, Any]:
        path = self.workdir / "loopwatch.json"
        if self.args.no_instrument or not path.exists():
            return {}
        data: dict[str, Any] = json.loads(path.read_text())
        offset = data["started_unix"] - self.start_wall  # loopwatch time -> load time
        lag = data["lag"]
        per_second = {int(k) + offset: v for k, v in lag["max_per_second_ms"].items()}
        listed = [(t + offset, seconds * 1000) for t, seconds in lag["listed"]]
        for part in ("all", "cold", "steady"):

            def inside(t: float, part: str = part) -> bool:
                if not 0 <= t <= self.end:
                    return False
                if part == "all":
                    return True
                if cold_end is None:
                    return part == "cold"
                return t < cold_end if part == "cold" else t >= cold_end

            seconds = [v / 1000 for t, v in per_second.items() if inside(t)]
            data[f"per_second_max_{part}"] = summary_ms(seconds)
            data[f"over_100ms_{part}"] = sum(1 for t, ms in listed if inside(t) and ms > 100)
            data[f"over_50ms_{part}"] = sum(1 for t, ms in listed if inside(t) and ms > 50)
        # the loop turns that stalled it during the load, and where its stack was meanwhile
        slow = [t for t in data["turns"]["slow"] if 0 <= t["at"] + offset <= self.end]
        longest: Counter[str] = Counter()
        leaf: Counter[str] = Counter()
        frames: Counter[str] = Counter()
        for turn in slow:
            turn["at_load_s"] = round(turn["at"] + offset, 2)
            longest[turn["longest"]] += 1
            leaf.update(turn["leaf"])
            frames.update(turn["frames"])
        data["during_load"] = {
            "slow_turns": len(slow),
            "slow_turns_over_100ms": sum(1 for t in slow if t["busy_ms"] > 100),
            "busiest_turns": sorted(slow, key=lambda t: -t["busy_ms"])[:12],
            "over_100ms_by_longest_callback": dict(
                Counter(t["longest"] for t in slow if t["busy_ms"] > 100).most_common(10)
            ),
            "longest_callback_of_slow_turns": dict(longest.most_common(15)),
            "stack_samples_leaf": dict(leaf.most_common(25)),
            "stack_samples_any_frame": dict(frames.most_common(60)),
        }
        data["offset_s"] = round(offset, 3)
        data["before_load_max_ms"] = max((ms for t, ms in listed if t < 0), default=0.0)
        return data


# ------------------------------------------------------------------------------- report


def _f(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    out = [
        "",
        f"treaty-bot run under load: {s['feeds']} feeds every {s['every']} "
        f"(farm latency {s['latency_ms']:g} ms), {s['rate']:g} Slack commands/s "
        f"({r['slack']['mode']} mode) and {s['matrix_rate']:g} Matrix commands/s "
        f"for {r['load_seconds']} s; bot ready {r['bot_ready_after_s']} s after start; "
        f"first poll of every feed done {_f(r['cold_round_done_at_s'])} s into the load",
        "",
        "Slack commands        sent  acked  <3s   >=1s  ack p50   p99      max      "
        "answer p50  p99",
    ]
    for part, c in r["slack"]["commands"].items():
        ack, ans = c["ack"], c["answer"]
        out.append(
            f"  {part:<18} {c['sent']:6d} {c['acked']:6d} {c['acked_within_3s']:5d} "
            f"{c['acked_over_1s']:5d}  {_f(ack.get('p50_ms'), 'ms'):8} "
            f"{_f(ack.get('p99_ms'), 'ms'):8} {_f(ack.get('max_ms'), 'ms'):8} "
            f"{_f(ans.get('p50_ms'), 'ms'):11} {_f(ans.get('p99_ms'), 'ms')}"
        )
        if c["errors"]:
            out.append(f"    errors: {dict(c['errors'])}")
    out.append(
        f"  bench's own send delay p99 {_f(r['slack']['bench_send_delay'].get('p99_ms'), 'ms')}, "
        f"own loop lag max {_f(r['bench_own_loop_lag'].get('max_ms'), 'ms')}"
    )
    m = r["bot_metrics"]
    out += ["", "Loop lag, the bot's /metrics (scraped gauge)          count  p50    p99    max"]
    for part, v in m["loop_lag_probes"].items():
        out.append(
            f"  {part:<50} {v.get('count', 0):5d}  {_f(v.get('p50_ms'), 'ms'):6} "
            f"{_f(v.get('p99_ms'), 'ms'):6} {_f(v.get('max_ms'), 'ms')}"
        )
    out.append(
        "/healthz round trip every 0.25 s                       count  p50    p99    max  >100ms"
    )
    for part, v in m["healthz_round_trip"].items():
        out.append(
            f"  {part:<50} {v.get('count', 0):5d}  {_f(v.get('p50_ms'), 'ms'):6} "
            f"{_f(v.get('p99_ms'), 'ms'):6} {_f(v.get('max_ms'), 'ms'):7} {v.get('over_100ms', 0)}"
        )
    out.append(
        f"  treatybot_event_loop_lag_max_seconds at the end: "
        f"{_f(m['loop_lag_max_since_start_ms'], 'ms')} "
        f"(before the load started: {_f(m['loop_lag_max_before_load_ms'], 'ms')})"
    )
    lw = r.get("loopwatch") or {}
    if lw:
        out.append(
            "Loop lag, bench.loopwatch (probe every 10 ms; per-second maxima)   p50    p99    "
            "max    probes >50ms >100ms"
        )
        for part in ("all", "cold", "steady"):
            v = lw[f"per_second_max_{part}"]
            out.append(
                f"  {part:<64} {_f(v.get('p50_ms'), 'ms'):6} {_f(v.get('p99_ms'), 'ms'):6} "
                f"{_f(v.get('max_ms'), 'ms'):6} {lw[f'over_50ms_{part}']:6d} "
                f"{lw[f'over_100ms_{part}']:6d}"
            )
        dl = lw["during_load"]
        out.append(
            f"  loop turns busy >= {lw['stall_seconds'] * 1000:g} ms during the load: "
            f"{dl['slow_turns']} ({dl['slow_turns_over_100ms']} over 100 ms); their longest "
            "callbacks: "
            + ", ".join(
                f"{k} ({v})" for k, v in list(dl["longest_callback_of_slow_turns"].items())[:5]
            )
        )
        if dl["stack_samples_leaf"]:
            out.append(
                "  where the loop thread was in those turns (innermost frame, 5 ms samples): "
                + ", ".join(f"{k} {v}" for k, v in list(dl["stack_samples_leaf"].items())[:8])
            )
        gc = lw["gc"]
        out.append(f"  gc: collections {gc['collections']}, max ms {gc['max_ms']}")
    mx = r["matrix"]
    syn = mx.get("synapse") or {}
    out += [
        "",
        f"Matrix: {mx['replied']}/{mx['commands_sent']} commands answered, reply "
        f"p50 {_f(mx['reply'].get('p50_ms'), 'ms')} p99 {_f(mx['reply'].get('p99_ms'), 'ms')} "
        f"max {_f(mx['reply'].get('max_ms'), 'ms')}; bot /sync requests during the load "
        f"{syn.get('bot_syncs_during_load', '-')} ({syn.get('per_minute', '-')}/min), longest gap "
        f"{syn.get('longest_gap_between_syncs_s', '-')} s",
        f"Polls: {m['polls_total']} by the bot ({m['polls_by_outcome']}); farm answered "
        f"{r['farm'].get('requests', '-')} (200: {r['farm'].get('ok', '-')}, 304: "
        f"{r['farm'].get('not_modified', '-')}); alerts sent {m['alerts_sent']}",
        "",
        "Processes (during the load)   CPU s   share of a core  RSS max MiB",
    ]
    for role, p in r["processes"].items():
        if isinstance(p, dict) and role != "bot_tree":
            out.append(
                f"  {role:<26} {p['cpu_s_during_load']:7.1f}  {_f(p['cpu_share_of_one_core']):>8}"
                f"        {_f(p['rss_mib_max_sampled'])}"
                + (f" (VmHWM {p['vm_hwm_mib']})" if "vm_hwm_mib" in p else "")
            )
    if "bot_tree" in r["processes"]:
        out.append(
            f"  bot + descendants: RSS max {_f(r['processes']['bot_tree']['rss_mib_max_sampled'])} "
            "MiB (sum of resident sets, shared pages counted in each)"
        )
    if "bot_tree_pss" in r["processes"]:
        tree = r["processes"]["bot_tree_pss"]
        alone = r["processes"].get("bot_pss", {})
        out.append(
            f"  bot + descendants: PSS max {_f(tree['rss_mib_max_sampled'])} MiB "
            "(shared pages divided among the processes; sampled every 2 s); after the first "
            f"round max {_f(tree.get('mib_max_after_first_round'))}, at the end "
            f"{_f(tree.get('rss_mib_at_end'))} (the bot alone {_f(alone.get('rss_mib_at_end'))})"
        )
    if "bot" in r["processes"]:
        out.append(
            f"  bot's busiest 10 s: {r['processes']['bot']['cpu_share_busiest_10s']:.2f} of a core"
        )
        steady = [
            f"{role} {r['processes'][role]['cpu_share_after_first_round']:.3f}"
            for role in ("bot", "bot_descendants")
            if "cpu_share_after_first_round" in r["processes"].get(role, {})
        ]
        if steady:
            out.append("  CPU after the first round, share of a core: " + ", ".join(steady))
    out.append(f"  load average at the end: {[round(x, 2) for x in r['load_at_end']]}")
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.load",
        description="Commands at a steady rate while treaty-bot run polls a feed farm.",
    )
    p.add_argument("--feeds", type=int, default=1000)
    p.add_argument("--latency-ms", type=float, default=50.0, help="farm delay per response")
    p.add_argument("--every", default="1m", help="feeds' poll interval (1m is the least allowed)")
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    p.add_argument("--rate", type=float, default=20.0, help="Slack commands per second")
    p.add_argument("--slack-mode", choices=["socket", "http"], default="socket")
    p.add_argument(
        "--matrix-rate", type=float, default=0.5, help="Matrix commands per second (0: none)"
    )
    p.add_argument("--no-matrix", action="store_true", help="no Synapse, Slack only")
    p.add_argument(
        "--advance-every",
        type=float,
        default=60.0,
        help="change --changed of the feeds every N s of load (0: never)",
    )
    p.add_argument("--changed", type=float, default=0.1, help="fraction of feeds changed a round")
    p.add_argument("--in-flight", type=int, default=32, help="fetch.max_in_flight")
    p.add_argument("--per-host", type=int, default=2, help="fetch.per_host")
    p.add_argument(
        "--scrape-every",
        type=float,
        default=5.0,
        help="seconds between scrapes of /metrics (each one costs the bot's loop)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--no-instrument", action="store_true", help="run python -m bot as is (no loopwatch)"
    )
    p.add_argument("--json", metavar="FILE", help="write every figure here")
    p.add_argument("--workdir", metavar="DIR", help="keep configs, logs and state here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=False)
        keep = True
    else:
        workdir = Path(tempfile.mkdtemp(prefix="treaty-load-"))
        keep = False
    bench = LoadBench(args, workdir)
    results = asyncio.run(bench.run())  # on an error, the work directory is kept
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, separators=(",", ":"), default=str) + "\n")
        print(f"\nall figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
