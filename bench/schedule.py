"""Fewer requests, sooner alerts: a fixed schedule, adaptive polling and WebSub push, side by
side in one run. Hand-run; it prints figures, writes JSON, and exits 1 only when one of its own
checks fails (a change polled but never alerted, an item posted twice, a push not posted...).

    python -m bench.schedule --feeds 1000 --latency-ms 50 --duration 420 \\
        --json bench/results/2026-12-03-schedule-n1000.json
    python -m bench.schedule --quick            # a smoke run, under 2 minutes
    python -m bench.schedule --report FILE      # the tables of an earlier run again

**Polling.** A loopback feed farm (``bench.farm``, in a thread of this process, every request's
time noted) where ``--changing`` of the feeds (10 %) get one new item every ``--change-every``
seconds, each on its own phase (the changes of all of them spread evenly over that period), and
the others never change. ``treaty-bot run --format jsonl`` (console transport, a fresh TinyDB
state) polls every feed, once with a fixed schedule (``every: 1m, every_max: 1m``) and once
adaptive (``every: 1m``, the default ceiling of 6 x every), one after the other for
``--duration`` seconds each (``--together``: at the same time, on two identical farms). Changes
begin once every changing feed was requested once, and stop ``--tail`` seconds before the end,
so that each change can be polled before the bot stops. Measured per schedule:

- the requests the farm answered: in the whole window, after the first round (each feed's
  first request left out, per hour of the window after the last of them), in the last 180 s;
- the time between two requests of a feed (never-changing feeds: the median of the 1st, 2nd,
  ... gap, which adaptive polling stretches; changing feeds: the mean);
- for every change: the delay from the new version being served to the item's JSON line on the
  bot's standard output (read as it comes), split into the wait for the next poll and the poll
  to the line (fetch, parse, the batched record of ``ROUND_BATCH``, delivery);
- the bot's CPU (its process and its parser workers).

From these it computes (it does not measure) what a fixed schedule would cost for the adaptive
schedule's mean delay, and the mean delay a fixed schedule would give for the adaptive
schedule's requests: a fixed interval T waits T/2 for a change on average, plus the measured
poll-to-line time.

**Push.** A second farm of ``--push-feeds`` feeds, each naming a WebSub hub in a ``Link``
header; the hub is ``tests/integration/websubhub.py`` (written from the W3C Recommendation) in
this process. ``treaty-bot run`` with the Slack transport (Socket Mode) against the Slack
stand-in (``tests/integration/slack_standin.py``, in this process) and ``http.public_url`` its
own loopback address. The feeds are polled every hour, so once the hub has verified every
subscription nothing reaches Slack but by push. Then ``--push-rate`` new items a second, round
robin over the feeds, for ``--push-duration`` seconds: each one is put on the farm and its new
body published through the hub, signed with the subscription's secret. Measured: from the
hub's POST to the callback being sent (and answered: the bot answers once the body is planned
and recorded) to the stand-in receiving the ``chat.postMessage`` that carries the item's title.
Each feed posts to a channel of its own (``--push-channels`` fewer: feeds share them round
robin), so that Slack's pacing (one post a second per channel) is not what is measured; the
report says how many posts came less than 1.05 s after the previous one in their channel.

Every process it starts is stopped by its process id (the bot's parser workers too), on
Ctrl-C as well.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.farm import FarmSettings, FarmThread, FeedFarm
from bench.load import child_env, pct
from bench.replicas import process_table, read_stat, tree
from bench.run import code_version, machine

REPO = Path(__file__).resolve().parent.parent
#: ``bot.scheduler.jittered_early``: a poll is brought forward at random by up to this share.
JITTER = 0.1
#: The configuration's least interval, and the default ceiling of adaptive polling.
EVERY = 60.0
ADAPTIVE_FACTOR = 6
#: Requests counted "at the end" of a window: the last this many seconds.
LAST = 180.0
#: A bot still running this long after SIGTERM is killed.
STOP_WAIT = 30.0
#: How long the bench waits for the bot to start, the first polls, the subscriptions.
START_WAIT = 180.0
#: How long posts may still arrive after the last push.
DRAIN = 30.0
#: Posts to one channel closer than this may have waited for Slack's pacing (1 s).
PACED = 1.05
PR_SET_PDEATHSIG = 1
HUB_LEASE = 3600

MODES = {"fixed": "1m .. 1m", "adaptive": "1m .. 6m"}


class BenchFailed(Exception):
    """The run could not measure what it set out to (a process died, a wait ran out)."""


# ------------------------------------------------------------------------------- helpers


def since(t0: float) -> str:
    return f"[{time.time() - t0:7.1f}s]"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML flow scalar


def summary(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    """count, p50, p90, p99, max and mean of ``values`` times ``scale``."""
    if not values:
        return {"count": 0}

    def r(v: float | None) -> float | None:
        return None if v is None else round(v * scale, digits)

    return {
        "count": len(values),
        "p50": r(pct(values, 50)),
        "p90": r(pct(values, 90)),
        "p99": r(pct(values, 99)),
        "max": r(max(values)),
        "mean": r(sum(values) / len(values)),
    }


def per_hour(count: int, seconds: float) -> float | None:
    return round(count * 3600 / seconds) if seconds > 0 else None


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when this bench dies, however it dies."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


#: (pid, start time) of every process started, for the last-resort clean-up in ``main``.
STARTED: list[tuple[int, int]] = []


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants (those that ended and were waited for
    included)."""
    table = process_table()
    return round(sum(table[p].cpu + table[p].reaped for p in tree(pid, table)), 2)


class Bot:
    """One ``treaty-bot run``: its process, and its standard output read line by line, each
    JSON line with the ``time.time()`` it was read at."""

    def __init__(self, name: str, work: Path) -> None:
        self.name = name
        self.work = work
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[tuple[float, dict[str, Any]]] = []
        self.other_lines = 0
        self._reader: asyncio.Task[None] | None = None
        self.cpu_s: float | None = None

    async def start(self, config: Path, env: dict[str, str], *, jsonl: bool) -> None:
        argv = [sys.executable, "-m", "bot", "run", "--config", str(config)]
        if jsonl:
            argv += ["--format", "jsonl"]
        with (self.work / f"{self.name}.log").open("wb") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=REPO,
                limit=1 << 22,
                start_new_session=True,  # a Ctrl-C reaches this bench only, which stops it
                preexec_fn=_die_with_parent,
            )
        st = read_stat(self.proc.pid)
        if st is not None:
            STARTED.append((self.proc.pid, st.start))
        self._reader = asyncio.create_task(self._read(), name=f"read:{self.name}")

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            at = time.time()
            if raw.startswith(b"{"):
                with contextlib.suppress(ValueError):
                    self.lines.append((at, json.loads(raw)))
                    continue
            self.other_lines += 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def check(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise BenchFailed(
                f"the {self.name} bot exited ({self.proc.returncode}): see {self.name}.log"
            )

    async def wait_ready(self, port: int) -> None:
        """Until the bot's web server answers ``/healthz``."""
        deadline = time.monotonic() + START_WAIT
        async with aiohttp.ClientSession() as session:
            while True:
                self.check()
                if time.monotonic() > deadline:
                    raise BenchFailed(f"the {self.name} bot did not start: see {self.name}.log")
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        await resp.read()
                        return
                await asyncio.sleep(0.1)

    async def stop(self) -> int | None:
        """SIGTERM (a clean stop), SIGKILL after ``STOP_WAIT``; then any descendant left over
        (each known by its pid and start time) is killed."""
        proc = self.proc
        if proc is None:
            return None
        if proc.returncode is None:
            table = await asyncio.to_thread(process_table)
            family = [(p, table[p].start) for p in tree(proc.pid, table) if p != proc.pid]
            self.cpu_s = await asyncio.to_thread(tree_cpu, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_WAIT):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            deadline = time.monotonic() + 5
            for pid, start in family:
                while (st := read_stat(pid)) is not None and st.start == start:
                    if time.monotonic() > deadline:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        break
                    await asyncio.sleep(0.05)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(5):
                    await self._reader
        return proc.returncode


@contextlib.asynccontextmanager
async def farm_running(farm: FeedFarm, lifetime: float) -> AsyncIterator[FeedFarm]:
    runner = FarmThread(farm, lifetime=lifetime)
    await asyncio.to_thread(runner.__enter__)
    try:
        yield farm
    finally:
        await asyncio.to_thread(runner.__exit__, None, None, None)


# ------------------------------------------------------------------------------- polling


@dataclass
class Change:
    feed: str
    title: str
    at: float  # time.time() when the new version was served
    late_s: float  # how late against its schedule the bench made it


@dataclass
class PollRun:
    mode: str
    farm: FeedFarm
    work: Path
    changing: list[str]
    port: int = field(default_factory=free_port)
    changes: list[Change] = field(default_factory=list)
    started: float = 0.0
    ready: float = 0.0
    changes_from: float | None = None
    end: float = 0.0
    exit_code: int | None = None
    cpu_s: float | None = None


def write_poll_config(run: PollRun, args: argparse.Namespace) -> Path:
    config = run.work / "config"
    config.mkdir(parents=True)
    (config / "bot.yaml").write_text(
        "timezone: UTC\n"
        f"storage: {yaml_str(str(run.work / 'state.json'))}\n"
        "channels:\n  alerts: {}\n"
        f"http: {{host: 127.0.0.1, port: {run.port}}}\n"
        "fetch:\n"
        "  timeout: 30s\n"
        f"  per_host: {args.per_host}\n"
        f"  max_in_flight: {args.in_flight}\n"
    )
    lines = ["defaults:", f"  every: {args.every}"]
    if run.mode == "fixed":
        lines.append(f"  every_max: {args.every}")
    lines += ["  channels: [alerts]", "feeds:"]
    lines += [f"  - {{id: {f.id}, url: {yaml_str(run.farm.url(f))}}}" for f in run.farm.feeds]
    (config / "feeds.yaml").write_text("\n".join(lines) + "\n")
    return config


def change_events(
    run: PollRun, args: argparse.Namespace, start: float, last: float
) -> list[tuple[float, str]]:
    """When each changing feed changes: every ``change_every`` seconds from its own phase, the
    phases spread evenly over that period, from ``start`` until ``last``."""
    order = list(run.changing)
    random.Random(f"{args.seed}:phases").shuffle(order)
    cadence = args.change_every
    events = []
    for j, feed in enumerate(order):
        due = start + j * cadence / len(order)
        while due <= last:
            events.append((due, feed))
            due += cadence
    return sorted(events)


async def make_changes(run: PollRun, events: list[tuple[float, str]]) -> None:
    for k, (due, feed) in enumerate(events):
        wait = due - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        done = await asyncio.to_thread(run.farm.advance_feeds, [feed], f"change {k + 1}")
        run.changes.append(Change(feed, done.titles[0][1], done.at, round(done.at - due, 4)))


async def wait_first_requests(run: PollRun, bot: Bot, deadline: float) -> None:
    """Until every changing feed was requested once: a change before a feed's first poll
    would be part of what the bot takes as already there."""
    wanted = set(run.changing)
    while True:
        bot.check()
        log = await asyncio.to_thread(run.farm.request_log)
        if wanted <= set(log):
            return
        if time.time() > deadline:
            raise BenchFailed(f"{run.mode}: not every changing feed was polled once in time")
        await asyncio.sleep(0.5)


async def measure_polling(
    mode: str, args: argparse.Namespace, work: Path, t0: float
) -> dict[str, Any]:
    settings = FarmSettings(
        feeds=args.feeds, latency_ms=args.latency_ms, new_per_change=1, seed=args.seed
    )
    farm = await asyncio.to_thread(FeedFarm, settings, log_requests=True)
    healthy = [f.id for f in farm.feeds if f.healthy]
    count = round(args.changing * len(healthy))
    changing = sorted(random.Random(f"{args.seed}:changing").sample(healthy, count))
    run = PollRun(mode, farm, work / mode, changing)
    run.work.mkdir(parents=True)
    bot = Bot(mode, run.work)
    async with farm_running(farm, args.duration + 900):
        config = write_poll_config(run, args)
        try:
            run.started = time.time()
            await bot.start(config, child_env(), jsonl=True)
            await bot.wait_ready(run.port)
            run.ready = time.time()
            run.end = run.ready + args.duration
            print(f"  {since(t0)} {mode}: bot ready after {run.ready - run.started:.1f} s")
            await wait_first_requests(run, bot, run.ready + START_WAIT)
            run.changes_from = max(time.time(), run.ready + 2.0) + 1.0
            events = change_events(run, args, run.changes_from, run.end - args.tail)
            print(
                f"  {since(t0)} {mode}: every changing feed polled once; {len(events)} changes "
                f"over {len(changing)} feeds until {args.tail:g} s before the end"
            )
            changer = asyncio.create_task(make_changes(run, events))
            try:
                while time.time() < run.end:
                    bot.check()
                    if changer.done():
                        changer.result()  # an error of the bench's own
                    await asyncio.sleep(min(1.0, max(0.0, run.end - time.time())))
            finally:
                changer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await changer
            run.exit_code = await bot.stop()
            run.cpu_s = bot.cpu_s
            print(f"  {since(t0)} {mode}: bot stopped (exit {run.exit_code})")
        finally:
            await bot.stop()
    return analyse_polling(run, bot, args)


def analyse_polling(run: PollRun, bot: Bot, args: argparse.Namespace) -> dict[str, Any]:
    farm = run.farm
    every = EVERY * _minutes(args.every)
    ceiling = every if run.mode == "fixed" else ADAPTIVE_FACTOR * every
    log = {f: sorted(t for t in ts if t <= run.end) for f, ts in farm.request_log().items()}
    window = run.end - run.ready
    requests = sum(len(ts) for ts in log.values())
    firsts = [ts[0] for ts in log.values() if ts]
    first_round_end = max(firsts) if firsts else run.ready
    after_first = requests - len(firsts)
    last = sum(1 for ts in log.values() for t in ts if t > run.end - LAST)
    per_minute = Counter(int((t - run.ready) // 60) for ts in log.values() for t in ts)
    changing = set(run.changing)

    # the time between two requests of a feed
    quiet_gaps: dict[int, list[float]] = {}
    changing_gaps: list[float] = []
    all_gaps: list[float] = []
    first_gaps: list[float] = []
    for feed, ts in log.items():
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        all_gaps += gaps[1:]  # the first gap is spread over the interval (SETTLE_SPREAD)
        first_gaps.extend(gaps[:1])
        if feed in changing:
            changing_gaps += [
                b - a
                for a, b in itertools.pairwise(ts)
                if run.changes_from is not None and a >= run.changes_from
            ]
        else:
            for k, gap in enumerate(gaps, 1):
                quiet_gaps.setdefault(k, []).append(gap)
    quiet_median = {
        str(k): round(statistics.median(v), 2)
        for k, v in sorted(quiet_gaps.items())
        if len(v) >= max(1, len(log) - len(changing)) // 2
    }
    changing_mean = statistics.fmean(changing_gaps) if changing_gaps else None
    quiet_count = len(farm.feeds) - len(changing)
    steady_quiet = quiet_count * 3600 / ceiling  # the jitter moves no mean
    steady = None
    if changing_mean is not None:
        steady = round(steady_quiet + len(changing) * 3600 / changing_mean)
    elif not changing:
        steady = round(steady_quiet)

    # every change: when a poll fetched it, when its line came
    seen: dict[tuple[str, str], list[float]] = {}
    for at, line in bot.lines:
        seen.setdefault((str(line.get("source")), str(line.get("title"))), []).append(at)
    made = {(c.feed, c.title) for c in run.changes}
    unexpected = [k for k in seen if k not in made]
    latency = farm.settings.latency_ms / 1000
    delays: list[float] = []
    waits: list[float] = []
    processing: list[float] = []
    missing: list[dict[str, Any]] = []
    twice = not_polled = 0
    rows = []
    for c in run.changes:
        fetched = next((t for t in log.get(c.feed, []) if t > c.at - latency), None)
        printed = seen.get((c.feed, c.title), [])
        if len(printed) > 1:
            twice += 1
        first = printed[0] if printed else None
        if first is not None:
            delays.append(first - c.at)
            if fetched is not None and fetched <= first:
                waits.append(max(0.0, fetched - c.at))
                processing.append(first - fetched)
        elif fetched is not None and fetched < run.end - 3.0:
            missing.append({"feed": c.feed, "title": c.title, "at": round(c.at - run.ready, 2)})
        else:
            not_polled += 1
        rows.append(
            (
                c.feed,
                round(c.at - run.ready, 3),
                None if fetched is None else round(fetched - run.ready, 3),
                None if first is None else round(first - run.ready, 3),
            )
        )
    # the jitter only brings polls forward; a poll's fetch and batched record come on top
    bound = every + 2.0
    return {
        "mode": run.mode,
        "schedule": MODES[run.mode],
        "every_s": every,
        "ceiling_s": ceiling,
        "feeds": len(farm.feeds),
        "changing_feeds": len(changing),
        "ready_after_s": round(run.ready - run.started, 2),
        "window_s": round(window, 1),
        "changes_from_s": None
        if run.changes_from is None
        else round(run.changes_from - run.ready, 1),
        "bot_exit_code": run.exit_code,
        "bot_cpu_s": run.cpu_s,
        "requests": {
            "window": requests,
            "first_round": len(firsts),
            "first_round_ended_s": round(first_round_end - run.ready, 2),
            "after_first_round": after_first,
            "last_180s": last,
            "per_minute": [per_minute.get(m, 0) for m in range(math.ceil(window / 60))],
        },
        "per_hour": {
            "window": per_hour(requests, window),
            "after_first_round": per_hour(after_first, run.end - first_round_end),
            "last_180s": per_hour(last, min(LAST, window)),
            "steady_computed": steady,
        },
        "gaps": {
            "never_changing_median_by_rank_s": quiet_median,
            "never_changing_max_s": round(max(g for v in quiet_gaps.values() for g in v), 2)
            if quiet_gaps
            else None,
            "changing_mean_s": None if changing_mean is None else round(changing_mean, 2),
            "changing": summary(changing_gaps),
            "min_s": round(min(all_gaps), 2) if all_gaps else None,
            "first": summary(first_gaps),
            "mean_s": round(statistics.fmean(all_gaps), 2) if all_gaps else None,
        },
        "changes": {
            "made": len(run.changes),
            "alerted": len(delays),
            "missing": len(missing),
            "missing_list": missing[:20],
            "not_polled_before_the_end": not_polled,
            "alerted_twice": twice,
            "bench_late_s_max": round(max((c.late_s for c in run.changes), default=0.0), 3),
        },
        "delay_s": summary(delays),
        "wait_for_poll_s": summary(waits),
        "poll_to_line_s": summary(processing),
        "within_every": sum(1 for d in delays if d <= every),
        "polled_within_every": sum(1 for w in waits if w <= every),
        "within_every_pct": round(100 * sum(1 for d in delays if d <= every) / len(delays), 1)
        if delays
        else None,
        "within_bound": sum(1 for d in delays if d <= bound),
        "bound_s": round(bound, 1),
        "lines": len(bot.lines),
        "unexpected_lines": len(unexpected),
        "unexpected_sample": [list(k) for k in unexpected[:5]],
        "farm": {k: v for k, v in farm.counts().as_dict().items() if k != "by_host"},
        "changes_log": rows,
    }


def _minutes(text: str) -> float:
    from bot.domain.durations import parse_duration

    return parse_duration(text).total_seconds() / EVERY


def computed(fixed: dict[str, Any] | None, adaptive: dict[str, Any] | None) -> dict[str, Any]:
    """What a fixed schedule would give at the adaptive schedule's mean delay or requests:
    computed from the measured figures (a fixed interval T waits T/2 for a change on average;
    the poll to the line is taken as measured)."""
    out: dict[str, Any] = {"how": "computed, not measured: mean delay = T/2 + poll to line"}
    if fixed is None or adaptive is None:
        return out
    feeds = fixed["feeds"]
    means = [r["poll_to_line_s"].get("mean") for r in (fixed, adaptive)]
    overhead = statistics.fmean([v for v in means if v is not None] or [0.0])
    out["poll_to_line_mean_s"] = round(overhead, 2)
    gap = fixed["gaps"]["changing_mean_s"] or fixed["gaps"]["mean_s"]
    if gap:
        out["fixed_mean_delay_predicted_s"] = round(gap / 2 + overhead, 2)
        out["fixed_mean_delay_measured_s"] = fixed["delay_s"].get("mean")
    mean = adaptive["delay_s"].get("mean")
    if mean is not None and mean > overhead:
        interval = 2 * (mean - overhead)
        out["same_mean_delay"] = {
            "adaptive_mean_delay_s": mean,
            "fixed_interval_s": round(interval, 1),
            "requests_per_hour": round(feeds * 3600 / interval),
            "configurable": interval >= EVERY,
        }
    for name in ("after_first_round", "steady_computed"):
        budget = adaptive["per_hour"].get(name)
        if budget:
            interval = feeds * 3600 / budget
            out[f"same_requests_{name}"] = {
                "requests_per_hour": budget,
                "fixed_interval_s": round(interval, 1),
                "mean_delay_s": round(interval / 2 + overhead, 1),
            }
    return out


# ------------------------------------------------------------------------------- push


@dataclass
class Push:
    n: int
    feed: str
    title: str
    due: float  # monotonic
    sent: float = 0.0
    answered: float = 0.0
    statuses: list[int] = field(default_factory=list)
    error: str | None = None


async def measure_push(args: argparse.Namespace, work: Path, t0: float) -> dict[str, Any]:
    from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn
    from tests.integration.websubhub import WebSubHub

    n = args.push_feeds
    channels = max(1, min(args.push_channels or n, n))
    settings = FarmSettings(
        feeds=n, latency_ms=args.latency_ms, new_per_change=1, seed=args.seed + 1
    )
    farm = await asyncio.to_thread(FeedFarm, settings, log_requests=True)
    run_dir = work / "push"
    run_dir.mkdir(parents=True)
    port = free_port()
    bot = Bot("push", run_dir)
    pushes: list[Push] = []
    # Slack channel ids and the configuration's names for them: push-000 is C0PUSH000
    channel_of = {f.id: f"C0PUSH{i % channels:03d}" for i, f in enumerate(farm.feeds)}
    name_of = {f.id: f"push-{i % channels:03d}" for i, f in enumerate(farm.feeds)}
    async with WebSubHub(lease_seconds=HUB_LEASE) as hub, SlackStandIn() as slack:
        farm.advertise_hub(hub.url)
        for i in range(channels):
            slack.add_channel(f"C0PUSH{i:03d}", f"push-{i:03d}")
        async with farm_running(farm, args.push_duration + 900):
            config = run_dir / "config"
            config.mkdir()
            names = "\n".join(f"  push-{i:03d}: {{slack: C0PUSH{i:03d}}}" for i in range(channels))
            (config / "bot.yaml").write_text(
                "timezone: UTC\n"
                f"storage: {yaml_str(str(run_dir / 'state.json'))}\n"
                f"channels:\n{names}\n"
                "slack: {mode: socket}\n"
                f"http: {{host: 127.0.0.1, port: {port}, "
                f"public_url: {yaml_str(f'http://127.0.0.1:{port}')}}}\n"
            )
            feeds = ["defaults:", "  every: 1h", "feeds:"]
            feeds += [
                f"  - {{id: {f.id}, url: {yaml_str(farm.url(f))}, channels: [{name_of[f.id]}]}}"
                for f in farm.feeds
            ]
            (config / "feeds.yaml").write_text("\n".join(feeds) + "\n")
            env = child_env(
                {
                    "SLACK_BOT_TOKEN": BOT_TOKEN,
                    "SLACK_APP_TOKEN": APP_TOKEN,
                    "SLACK_API_URL": slack.api_url,
                }
            )
            try:
                started = time.monotonic()
                await bot.start(config, env, jsonl=False)
                await bot.wait_ready(port)
                while not slack.sockets:
                    bot.check()
                    if time.monotonic() - started > START_WAIT:
                        raise BenchFailed("the push bot did not connect to the Slack stand-in")
                    await asyncio.sleep(0.05)
                topics = {f.id: farm.url(f) for f in farm.feeds}
                try:
                    await hub.wait_until(
                        lambda: all(hub.subscribed(t) is not None for t in topics.values()),
                        within=START_WAIT,
                    )
                except TimeoutError:
                    raise BenchFailed(
                        f"{len(hub.subscriptions)} of {n} feeds subscribed at the hub in time"
                    ) from None
                subscribed = time.monotonic()
                print(
                    f"  {since(t0)} push: {n} subscriptions verified "
                    f"{subscribed - started:.1f} s after the bot started; publishing "
                    f"{args.push_rate:g} a second for {args.push_duration:g} s"
                )
                first_polls = {f: len(ts) for f, ts in farm.request_log().items()}
                content_type = {
                    f.id: "application/atom+xml" if f.kind == "atom" else "application/rss+xml"
                    for f in farm.feeds
                }
                total = int(args.push_rate * args.push_duration)
                begin = time.monotonic() + 0.5
                tasks = []
                for i in range(total):
                    feed = farm.feeds[i % n]
                    push = Push(i + 1, feed.id, "", begin + i / args.push_rate)
                    pushes.append(push)
                    await asyncio.sleep(max(0.0, push.due - time.monotonic()))
                    bot.check()
                    tasks.append(
                        asyncio.create_task(
                            publish(farm, hub, push, topics[feed.id], content_type[feed.id])
                        )
                    )
                await asyncio.gather(*tasks)
                wanted = {p.n for p in pushes}
                with contextlib.suppress(AssertionError):  # the missing ones are reported
                    await slack.wait_until(
                        lambda: wanted <= set(posted_pushes(slack.calls_to("chat.postMessage"))),
                        "every pushed item posted",
                        DRAIN,
                    )
                polls_after = {
                    f: len(ts) - first_polls.get(f, 0) for f, ts in farm.request_log().items()
                }
                calls = slack.calls_to("chat.postMessage")
                exit_code = await bot.stop()
                print(f"  {since(t0)} push: bot stopped (exit {exit_code})")
            finally:
                await bot.stop()
    return analyse_push(
        args, pushes, calls, channel_of, polls_after, exit_code, bot.cpu_s, subscribed - started
    )


async def publish(farm: FeedFarm, hub: Any, push: Push, topic: str, content_type: str) -> None:
    """Put a new item on the farm's feed, then POST its new body through the hub."""
    done = await asyncio.to_thread(farm.advance_feeds, [push.feed], f"push {push.n}")
    push.title = done.titles[0][1]
    body = next(f for f in farm.feeds if f.id == push.feed).version.body
    push.sent = time.monotonic()
    try:
        push.statuses = await hub.publish(topic, body, content_type=content_type)
    except (aiohttp.ClientError, OSError) as err:
        push.error = f"{type(err).__name__}: {err}"[:200]
    push.answered = time.monotonic()


_PUSH = re.compile(r"\(push (\d+)\)")


def post_text(call: Any) -> str:
    return str(call.params.get("text") or "") + json.dumps(call.params.get("blocks") or "")


def posted_pushes(calls: Sequence[Any]) -> dict[int, list[Any]]:
    """The posts of each push, by the number in its title."""
    found: dict[int, list[Any]] = {}
    for call in calls:
        for number in {int(m) for m in _PUSH.findall(post_text(call))}:
            found.setdefault(number, []).append(call)
    return found


def analyse_push(
    args: argparse.Namespace,
    pushes: list[Push],
    calls: list[Any],
    channel_of: dict[str, str],
    polls_after: dict[str, int],
    exit_code: int | None,
    cpu_s: float | None,
    subscribed_after: float,
) -> dict[str, Any]:
    by_number = posted_pushes(calls)
    from_sent, from_answered, round_trip = [], [], []
    missing, twice, wrong_channel, title_missing = [], 0, 0, 0
    for p in pushes:
        round_trip.append(p.answered - p.sent)
        posts = by_number.get(p.n, [])
        if not posts:
            missing.append(p.n)
            continue
        twice += len(posts) > 1
        post = posts[0]
        wrong_channel += post.params.get("channel") != channel_of[p.feed]
        title_missing += p.title not in post_text(post)
        from_sent.append(post.at - p.sent)
        from_answered.append(post.at - p.answered)
    # Slack's pacing: posts that came soon after the previous one in their channel
    per_channel: dict[str, list[float]] = {}
    for call in calls:
        per_channel.setdefault(str(call.params.get("channel")), []).append(call.at)
    gaps = [b - a for ats in per_channel.values() for a, b in itertools.pairwise(ats)]
    statuses = Counter(s for p in pushes for s in p.statuses)
    return {
        "feeds": args.push_feeds,
        "channels": len(set(channel_of.values())),
        "rate_per_s": args.push_rate,
        "duration_s": args.push_duration,
        "subscribed_after_s": round(subscribed_after, 2),
        "published": len(pushes),
        "hub_post_statuses": {str(k): v for k, v in statuses.items()},
        "publish_errors": [p.error for p in pushes if p.error][:10],
        "posted": len(from_sent),
        "missing": len(missing),
        "missing_list": missing[:20],
        "posted_twice": twice,
        "wrong_channel": wrong_channel,
        "title_not_in_post": title_missing,
        "posts_total": len(calls),
        "from_sent_ms": summary(from_sent, 1000, 1),
        "from_answered_ms": summary(from_answered, 1000, 1),
        "hub_post_round_trip_ms": summary(round_trip, 1000, 1),
        "within_3s_of_sent": sum(1 for v in from_sent if v < 3.0),
        "posts_after_less_than_1_05s_in_channel": sum(1 for g in gaps if g < PACED),
        "min_gap_in_a_channel_s": round(min(gaps), 3) if gaps else None,
        "polls_of_pushed_feeds_after_the_first": sum(polls_after.values()),
        "bot_exit_code": exit_code,
        "bot_cpu_s": cpu_s,
    }


# ------------------------------------------------------------------------------- checks


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(what: str, holds: bool, measured: Any) -> None:
        out.append({"check": what, "holds": bool(holds), "measured": measured})

    for mode, r in (results.get("polling") or {}).items():
        if mode not in MODES:
            continue
        c = r["changes"]
        add(
            f"{mode}: every feed requested in the first round",
            r["requests"]["first_round"] == r["feeds"],
            f"{r['requests']['first_round']} of {r['feeds']}",
        )
        add(
            f"{mode}: every change a later poll fetched was alerted, once",
            c["missing"] == 0 and c["alerted_twice"] == 0,
            f"{c['alerted']} alerted, {c['missing']} missing, {c['alerted_twice']} twice, "
            f"{c['not_polled_before_the_end']} not polled again before the end",
        )
        add(
            f"{mode}: nothing alerted but the changes",
            r["unexpected_lines"] == 0,
            f"{r['unexpected_lines']} other lines",
        )
        floor = r["every_s"] * (1 - JITTER) - 0.5
        add(
            f"{mode}: after its second poll, no feed polled sooner than its floor less the "
            f"jitter ({floor:.1f} s)",
            r["gaps"]["min_s"] is None or r["gaps"]["min_s"] >= floor,
            f"least gap {r['gaps']['min_s']} s",
        )
        add(f"{mode}: the bot stopped cleanly", r["bot_exit_code"] == 0, r["bot_exit_code"])
        # the first gap is spread over the interval: from the second on
        ranks = list(r["gaps"]["never_changing_median_by_rank_s"].values())[1:]
        if mode == "adaptive" and len(ranks) >= 2:
            add(
                "adaptive: a never-changing feed's interval never shrinks and grows (median gaps)",
                all(b >= a * (1 - JITTER) - 1 for a, b in itertools.pairwise(ranks))
                and ranks[-1] > 1.5 * ranks[0],
                ranks,
            )
        if mode == "fixed" and ranks:
            add(
                "fixed: a never-changing feed's interval stays at every (median gaps)",
                all(abs(v - r["every_s"]) <= r["every_s"] * JITTER for v in ranks),
                ranks,
            )
    p = results.get("push")
    if p:
        add(
            "push: every publication answered 202 by the bot",
            p["hub_post_statuses"] == {"202": p["published"]} and not p["publish_errors"],
            p["hub_post_statuses"],
        )
        add(
            "push: every pushed item posted once, in its feed's channel, with its title",
            p["missing"] == 0
            and p["posted_twice"] == 0
            and p["wrong_channel"] == 0
            and p["title_not_in_post"] == 0
            and p["posts_total"] == p["published"],
            f"{p['posted']} of {p['published']} posted, {p['posted_twice']} twice, "
            f"{p['posts_total']} posts in all",
        )
        add(
            "push: no pushed feed polled after its first poll (every post came by push)",
            p["polls_of_pushed_feeds_after_the_first"] == 0,
            p["polls_of_pushed_feeds_after_the_first"],
        )
        add("push: the bot stopped cleanly", p["bot_exit_code"] == 0, p["bot_exit_code"])
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    polling = results.get("polling") or {}
    fixed, adaptive = polling.get("fixed"), polling.get("adaptive")
    if fixed and adaptive:
        ratios = {
            k: round(fixed["per_hour"][k] / adaptive["per_hour"][k], 2)
            for k in ("window", "after_first_round", "last_180s", "steady_computed")
            if fixed["per_hour"].get(k) and adaptive["per_hour"].get(k)
        }
        out.append(
            {
                "target": "adaptive polling at least halves the requests of the fixed schedule "
                "(90 % of feeds never change)",
                "met": ratios.get("after_first_round", 0) >= 2,
                "measured": f"fixed / adaptive requests: {ratios}",
                "ratios": ratios,
            }
        )
    for mode, r in (("adaptive", adaptive), ("fixed", fixed)):
        if r and r["delay_s"].get("count"):
            out.append(
                {
                    "target": f"{mode}: every change alerted within its feed's every "
                    f"({r['every_s']:g} s)",
                    "met": r["within_every"] == r["changes"]["made"],
                    "measured": f"{r['within_every']} of {r['changes']['made']} "
                    f"({r['within_every_pct']} %); max {r['delay_s']['max']} s; polled within "
                    f"every: {r.get('polled_within_every', '-')} of {r['changes']['alerted']}",
                }
            )
    p = results.get("push")
    if p and p["from_sent_ms"].get("count"):
        out.append(
            {
                "target": "a pushed item reaches the Slack stand-in within 3 s of the hub's "
                "delivery (p99)",
                "met": p["from_sent_ms"]["p99"] < 3000 and p["missing"] == 0,
                "measured": f"p99 {p['from_sent_ms']['p99']} ms from the hub's POST sent, "
                f"{p['from_answered_ms']['p99']} ms from its answer",
            }
        )
    return out


# ------------------------------------------------------------------------------- report


def _f(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def _stats(s: dict[str, Any], unit: str) -> str:
    if not s.get("count"):
        return "-"
    return " / ".join(_f(s.get(k), "", 1) for k in ("p50", "p99", "max", "mean")) + unit


def report(r: dict[str, Any]) -> str:
    s = r["settings"]
    out = [""]
    polling = r.get("polling") or {}
    modes = [m for m in MODES if m in polling]
    if modes:
        first = polling[modes[0]]
        out += [
            f"Polling: {first['feeds']} feeds ({first['changing_feeds']} change every "
            f"{s['change_every']:g} s, {first['feeds'] - first['changing_feeds']} never; farm "
            f"latency {s['latency_ms']:g} ms), {s['duration']:g} s each, "
            + ("at the same time" if s.get("together") else "one after the other"),
            "",
            f"{'':52}" + "".join(f"{m + ' (' + polling[m]['schedule'] + ')':>36}" for m in modes),
        ]

        def row(label: str, get: Callable[[dict[str, Any]], str]) -> None:
            out.append(f"  {label:<50}" + "".join(f"{get(polling[m]):>36}" for m in modes))

        row("requests in the window", lambda x: _f(x["requests"]["window"]))
        row("  per hour, whole window", lambda x: _f(x["per_hour"]["window"]))
        row(
            "  per hour after the first round",
            lambda x: _f(x["per_hour"]["after_first_round"]),
        )
        row(f"  per hour, last {LAST:g} s", lambda x: _f(x["per_hour"]["last_180s"]))
        row("  per hour, steady state (computed)", lambda x: _f(x["per_hour"]["steady_computed"]))
        row(
            "never-changing feeds: 1st, 2nd... gap (median, s)",
            lambda x: ", ".join(
                f"{v:.0f}" for v in x["gaps"]["never_changing_median_by_rank_s"].values()
            ),
        )
        row(
            "changing feeds: gap between polls (mean, s)",
            lambda x: _f(x["gaps"]["changing_mean_s"]),
        )
        row(
            "changes made / alerted / missing / twice",
            lambda x: (
                f"{x['changes']['made']} / {x['changes']['alerted']} / "
                f"{x['changes']['missing']} / {x['changes']['alerted_twice']}"
            ),
        )
        row("delay to the line, p50 / p99 / max / mean (s)", lambda x: _stats(x["delay_s"], ""))
        row("  waiting for the poll", lambda x: _stats(x["wait_for_poll_s"], ""))
        row("  the poll to the line", lambda x: _stats(x["poll_to_line_s"], ""))
        row(
            "alerted within every (60 s)",
            lambda x: f"{_f(x['within_every'])} ({_f(x['within_every_pct'])} %)",
        )
        row(
            "  the poll that read it came within every",
            lambda x: _f(x.get("polled_within_every")),
        )
        row(
            "alerted within every + 2 s",
            lambda x: f"{_f(x['within_bound'])} (<= {x['bound_s']:g} s)",
        )
        row("bot CPU, process and workers (s)", lambda x: _f(x["bot_cpu_s"]))
        for m in modes:
            out.append(
                f"  requests per minute of the window, {m}: {polling[m]['requests']['per_minute']}"
            )
        c = polling.get("computed") or {}
        if "same_mean_delay" in c:
            d = c["same_mean_delay"]
            out += [
                "",
                f"A fixed schedule ({c['how']}; poll to line {c['poll_to_line_mean_s']:g} s):",
                f"  the fixed run's mean delay predicted so: "
                f"{_f(c.get('fixed_mean_delay_predicted_s'), ' s', 1)}, measured "
                f"{_f(c.get('fixed_mean_delay_measured_s'), ' s', 1)}",
                f"  for the adaptive run's mean delay ({d['adaptive_mean_delay_s']:g} s): every "
                f"{d['fixed_interval_s']:g} s, {_f(d['requests_per_hour'])} requests/hour"
                + ("" if d["configurable"] else " (under the 1m the configuration allows)"),
            ]
            for name, label in (
                ("after_first_round", "after its first round"),
                ("steady_computed", "in its steady state, computed"),
            ):
                e = c.get(f"same_requests_{name}")
                if e:
                    out.append(
                        f"  for the adaptive run's requests {label} "
                        f"({_f(e['requests_per_hour'])}/hour): every {e['fixed_interval_s']:g} s, "
                        f"mean delay {e['mean_delay_s']:g} s"
                    )
    p = r.get("push")
    if p:
        out += [
            "",
            f"Push: {p['feeds']} feeds subscribed at the hub ({p['subscribed_after_s']:g} s after "
            f"the bot started), {p['published']} items published at {p['rate_per_s']:g}/s for "
            f"{p['duration_s']:g} s, {p['channels']} Slack channels",
            f"  published / posted / missing / twice: {p['published']} / {p['posted']} / "
            f"{p['missing']} / {p['posted_twice']}; hub's POSTs answered "
            f"{p['hub_post_statuses']}",
            f"  hub's POST sent -> chat.postMessage at the stand-in, p50 / p99 / max / mean: "
            f"{_stats(p['from_sent_ms'], ' ms')}",
            f"  hub's POST answered -> chat.postMessage:                      "
            f"{_stats(p['from_answered_ms'], ' ms')}",
            f"  the hub's POST (the bot plans and records before it answers):  "
            f"{_stats(p['hub_post_round_trip_ms'], ' ms')}",
            f"  posts less than {PACED:g} s after the previous one in their channel: "
            f"{p['posts_after_less_than_1_05s_in_channel']} (least gap "
            f"{_f(p['min_gap_in_a_channel_s'], ' s', 2)}); polls of pushed feeds after the "
            f"first: {p['polls_of_pushed_feeds_after_the_first']}; bot CPU {_f(p['bot_cpu_s'])} s",
        ]
    out += ["", "Targets"]
    for t in r.get("targets", []):
        out.append(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['measured']}")
    out += ["", "Checks of the harness"]
    for c in r.get("checks", []):
        out.append(f"  [{'ok' if c['holds'] else 'FAILED'}] {c['check']}: {c['measured']}")
    m = r["machine"]
    out.append(
        f"\n{r.get('seconds', 0):.0f} s in all; {m['cores']} cores, Python {m['python']}; "
        f"load average at the start {m['load_at_start'][0]:.2f}"
    )
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.schedule",
        description="Fixed vs adaptive polling vs WebSub push, side by side.",
    )
    p.add_argument("--feeds", type=int, default=1000)
    p.add_argument("--latency-ms", type=float, default=50.0, help="farm delay per response")
    p.add_argument(
        "--changing", type=float, default=0.1, help="fraction of feeds that change (the rest never)"
    )
    p.add_argument(
        "--change-every", type=float, default=120.0, help="seconds between two changes of a feed"
    )
    p.add_argument("--duration", type=float, default=420.0, help="seconds of each schedule's run")
    p.add_argument(
        "--tail",
        type=float,
        default=150.0,
        help="no change in the last N seconds of a run (each change can be polled before it ends)",
    )
    p.add_argument("--every", default="1m", help="the feeds' floor (1m is the least allowed)")
    p.add_argument(
        "--together",
        action="store_true",
        help="run the fixed and the adaptive schedule at the same time, on two identical farms",
    )
    p.add_argument("--push-feeds", type=int, default=100)
    p.add_argument("--push-rate", type=float, default=2.0, help="items pushed a second")
    p.add_argument("--push-duration", type=float, default=120.0)
    p.add_argument(
        "--push-channels", type=int, default=0, help="Slack channels (0: one per pushed feed)"
    )
    p.add_argument("--in-flight", type=int, default=32, help="fetch.max_in_flight")
    p.add_argument("--per-host", type=int, default=2, help="fetch.per_host")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--skip-polling", action="store_true")
    p.add_argument("--skip-push", action="store_true")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run under 2 minutes: 50 feeds, 75 s, together; 10 pushed feeds for 10 s",
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write every figure here")
    p.add_argument("--workdir", type=Path, help="keep configurations, states and logs here")
    p.add_argument("--report", type=Path, metavar="FILE", help="the tables of an earlier run")
    return p


@contextlib.contextmanager
def workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    directory = Path(tempfile.mkdtemp(prefix="treaty-bot-schedule-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def run_all(args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    main_task = asyncio.current_task()
    assert main_task is not None
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []

    def interrupt(sig: int) -> None:
        if not interrupted:  # once: a second Ctrl-C must not cut the clean-up short
            interrupted.append(sig)
            main_task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt, sig)
    t0 = time.time()
    if not args.skip_polling:
        polling: dict[str, Any] = {}
        results["polling"] = polling
        if args.together:
            fixed, adaptive = await asyncio.gather(
                measure_polling("fixed", args, work, t0),
                measure_polling("adaptive", args, work, t0),
            )
            polling["fixed"], polling["adaptive"] = fixed, adaptive
        else:
            for mode in MODES:
                polling[mode] = await measure_polling(mode, args, work, t0)
        polling["computed"] = computed(polling.get("fixed"), polling.get("adaptive"))
    if not args.skip_push:
        results["push"] = await measure_push(args, work, t0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report is not None:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.quick:
        args.feeds, args.duration, args.change_every, args.tail = 50, 75.0, 20.0, 10.0
        args.together = True
        args.push_feeds, args.push_duration = 10, 10.0
    results: dict[str, Any] = {
        "bench": "schedule",
        "argv": list(sys.argv[1:] if argv is None else argv),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "code": code_version(),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("json", "workdir", "report")
        },
    }
    print(f"load average at the start: {results['machine']['load_at_start']}")
    t0 = time.time()
    code = 0
    with workdir(args.workdir) as work:
        try:
            asyncio.run(run_all(args, work, results))
        except asyncio.CancelledError:
            print("\ninterrupted: every process stopped", file=sys.stderr)
            code = 130
        except BenchFailed as err:
            print(f"\nthe run failed: {err} (work directory: {work})", file=sys.stderr)
            code = 2
        finally:
            for pid, start in STARTED:  # the last resort: nothing outlives the bench
                st = read_stat(pid)
                if st is not None and st.start == start:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        if code and args.workdir is None:
            kept = Path(tempfile.mkdtemp(prefix="treaty-bot-schedule-failed-"))
            shutil.copytree(work, kept, dirs_exist_ok=True)
            print(f"logs kept in {kept}", file=sys.stderr)
    if code:
        return code
    results["seconds"] = round(time.time() - t0, 1)
    results["checks"] = checks(results)
    results["targets"] = targets(results)
    print(report(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, separators=(",", ":")) + "\n")
        print(f"\nall figures: {args.json}")
    return 0 if all(c["holds"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
