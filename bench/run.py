"""Side-by-side benchmark: ``treaty-bot once``, lemon24/reader and the sequential feedparser loop
on one loopback feed farm, in one run; plus command-answer latency on a big store.

    python -m bench.run --feeds 1000 --latency-ms 50 --changed 0.1 --in-flight 32 --json out.json

Each client runs as its own process, twice: a cold round (empty state) on the farm's initial
content, then, after ``advance_round()`` changed a fraction of the feeds, a warm round. The farm
is reset between clients, so every client sees the same bytes. For each process: wall time, CPU
time (user + system, from ``wait4``), peak RSS (``ru_maxrss`` of that process), and what the farm
answered (200 / 304 / errors, and the most requests it had in flight at once).

For treaty-bot it also checks that the state file remembers exactly the farm's items after each
round and that the warm round announced exactly the new items that match the keyword; that a
round in which nothing changed leaves the state file untouched; and, with the bot's debug log,
that bodies of feeds without validators are recognised as unchanged instead of parsed.

The network floor of a round is ``feeds / in_flight × latency``: with ``in_flight`` requests
always outstanding, each taking ``latency``, that is the least time the requests need. The
parse floor is the CPU treaty-bot's parser needs for the feeds that changed, spread over every
core. A round's floor is the larger of the two; it leaves out process start-up, which is
measured apart (``treaty-bot check`` on the same configuration: interpreter, imports, config).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.farm import (
    KEYWORD,
    FarmThread,
    FeedFarm,
    RoundChange,
    add_farm_arguments,
    describe,
    settings_from,
)

REPO = Path(__file__).resolve().parent.parent
#: the yardstick: a process that only makes the round's requests (``bench/fetchonly.py``)
FETCH_ONLY = "aiohttp requests alone"
#: A client process still running after this long is killed (seconds).
PROCESS_TIMEOUT = 900.0


@dataclass
class Run:
    """One measured process and what the farm saw while it ran."""

    label: str
    wall: float
    user: float
    sys: float
    maxrss_mib: float
    returncode: int
    requests: int = 0
    ok: int = 0
    not_modified: int = 0
    errors: int = 0
    ok_without_validators: int = 0
    peak_in_flight: int = 0
    peak_per_host: int = 0
    load_before: float = 0.0
    runner_cpu: float = 0.0  # CPU of this process meanwhile: the farm and the watchers
    stdout: str = ""
    stderr: str = ""
    output: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] = field(default_factory=dict)  # see ProcWatch and DirWatch

    tree_user: float = 0.0  # the process and every descendant (parser workers…)
    tree_sys: float = 0.0
    tree_maxrss_mib: float = 0.0  # the largest single process among them

    @property
    def cpu(self) -> float:
        """CPU of the process and all its descendants."""
        return max(self.user + self.sys, self.tree_user + self.tree_sys)

    @property
    def own_cpu(self) -> float:
        return self.user + self.sys


@dataclass
class Client:
    """A client's cold and warm rounds."""

    name: str
    cold: Run
    warm: Run
    change: RoundChange
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu(self) -> float:
        return self.cold.cpu + self.warm.cpu

    @property
    def rss(self) -> float:
        return max(self.cold.maxrss_mib, self.warm.maxrss_mib)

    @property
    def failed(self) -> bool:
        return self.cold.returncode != 0 or self.warm.returncode != 0


#: Runs the measured command and writes its own rusage as JSON. Why a launcher: a child's
#: ``ru_maxrss`` is at least the RSS of the process it was forked from (Linux records the old
#: memory's high-water mark at ``exec``), and this runner holds the whole farm in memory. The
#: launcher is a bare interpreter, far smaller than any client measured, so the figure is the
#: client's own.
LAUNCHER = """
import ctypes, json, os, resource, sys, time
out, argv = sys.argv[1], sys.argv[2:]
# a subreaper: the client's orphaned descendants (a fork server, parser workers) become ours,
# so that their CPU is counted when we reap them
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
started = time.perf_counter()
pid = os.posix_spawnp(argv[0], argv, os.environ)
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - started
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if os.waitpid(-1, os.WNOHANG) == (0, 0):
            time.sleep(0.01)
    except ChildProcessError:
        break
tree = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as f:
    json.dump({"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime,
               "maxrss_kib": ru.ru_maxrss, "code": os.waitstatus_to_exitcode(status),
               "tree_user": tree.ru_utime, "tree_sys": tree.ru_stime,
               "tree_maxrss_kib": tree.ru_maxrss}, f)
"""


class ProcWatch:
    """Watches the measured process (the launcher's child) every 5 ms while it runs.

    - ``VmHWM`` of ``/proc/PID/status``: its peak RSS, a cross-check of ``ru_maxrss``;
    - ``wchar`` of ``/proc/PID/io``: bytes it passed to ``write()`` (files, stdout, logs);
    - the largest sum of ``VmRSS`` over the process and its descendants seen at one poll:
      what matters once a client parses in worker processes, where ``ru_maxrss`` gives only
      the largest single process.

    Values are the last read before the process exited, so all are lower bounds.
    """

    def __init__(self, launcher: int, interval: float = 0.005) -> None:
        self.launcher = launcher
        self.interval = interval
        self.hwm_kib = 0
        self.wchar = 0
        self.tree_kib = 0
        self.tree_pss_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="proc-watch", daemon=True)
        self._thread.start()

    def _child(self) -> int | None:
        children = Path(f"/proc/{self.launcher}/task/{self.launcher}/children")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(children.read_text().split()[0])
        return None

    @staticmethod
    def _tree_memory(pid: int) -> tuple[int, int]:
        """Sums of ``VmRSS`` and of ``Pss`` (pages shared between the processes counted once
        in all: a fork server's imports are shared by the workers forked from it), KiB."""
        rss = pss = 0
        todo = [pid]
        while todo:
            current = todo.pop()
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{current}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss += int(line.split()[1])
                for line in Path(f"/proc/{current}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss += int(line.split()[1])
                for task in Path(f"/proc/{current}/task").iterdir():
                    todo.extend(int(c) for c in (task / "children").read_text().split())
        return rss, pss

    def _poll(self) -> None:
        pid: int | None = None
        while not self._stop.is_set():
            pid = pid or self._child()
            if pid is not None:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.hwm_kib = max(self.hwm_kib, int(line.split()[1]))
                    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                        if line.startswith("wchar:"):
                            self.wchar = max(self.wchar, int(line.split()[1]))
                rss, pss = self._tree_memory(pid)
                self.tree_kib = max(self.tree_kib, rss)
                self.tree_pss_kib = max(self.tree_pss_kib, pss)
            self._stop.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        self._thread.join()
        return {
            "vmhwm_kib_at_least": self.hwm_kib,
            "wchar_at_least": self.wchar,
            "tree_rss_kib_at_least": self.tree_kib,
            "tree_pss_kib_at_least": self.tree_pss_kib,
        }


_IN_CLOSE_WRITE = 0x08
_IN_MOVED_TO = 0x80
_EVENT = struct.Struct("iIII")


class DirWatch:
    """Counts, per file name in one directory, the atomic replacements (a rename onto the
    name: ``IN_MOVED_TO``) and the files closed after writing (``IN_CLOSE_WRITE``), with
    Linux inotify through ctypes. Exact, unlike polling: no write is missed. Temporary files
    (``.name.XXXX.tmp``) are counted together under ``<tmp>``."""

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = _IN_CLOSE_WRITE | _IN_MOVED_TO
        if libc.inotify_add_watch(self._fd, os.fsencode(directory), mask) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), f"inotify_add_watch failed on {directory}")
        self.replaced: Counter[str] = Counter()
        self.written: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="dir-watch", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if ready:
                with contextlib.suppress(BlockingIOError):
                    self._parse(os.read(self._fd, 1 << 16))
            elif self._stop.is_set():
                return

    def _parse(self, data: bytes) -> None:
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, offset)
            raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
            offset += _EVENT.size + length
            name = raw.rstrip(b"\0").decode(errors="replace")
            if name.startswith(".") and name.endswith(".tmp"):
                name = "<tmp>"
            if mask & _IN_MOVED_TO:
                self.replaced[name] += 1
            if mask & _IN_CLOSE_WRITE:
                self.written[name] += 1

    def stop(self) -> dict[str, dict[str, int]]:
        time.sleep(0.1)  # let the last events arrive
        self._stop.set()
        self._thread.join()
        os.close(self._fd)
        return {"replaced": dict(self.replaced), "closed_after_write": dict(self.written)}


class Bench:
    def __init__(self, args: argparse.Namespace, farm: FeedFarm, workdir: Path) -> None:
        self.args = args
        self.farm = farm
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.urls = workdir / "urls.txt"
        self.urls.write_text("\n".join(farm.urls()) + "\n")
        self.env = _child_env()
        script = Path(sys.executable).with_name("treaty-bot")
        self.treaty_bot = [str(script)] if script.exists() else [sys.executable, "-m", "bot"]
        self.rep = 1

    def tag(self, label: str) -> str:
        """A label naming the repetition, when there are several."""
        return f"{label} #{self.rep}" if self.args.repeat > 1 else label

    # -- one process ------------------------------------------------------------------------

    def measure(self, label: str, argv: Sequence[str], *, watch: Path | None = None) -> Run:
        """Run ``argv`` to its end through ``LAUNCHER``: its own wall time and rusage. With
        ``watch`` (a directory), also count the files written there while it ran."""
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
        out, err = self.logs / f"{slug}.out", self.logs / f"{slug}.err"
        usage_file = self.logs / f"{slug}.usage.json"
        usage_file.unlink(missing_ok=True)
        self.farm.reset_counts()
        load = os.getloadavg()[0]
        runner_cpu = time.process_time()
        files = DirWatch(watch) if watch is not None else None
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-S", "-c", LAUNCHER, str(usage_file), *argv],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=self.workdir,
                env=self.env,
                start_new_session=True,  # its own process group: the watchdog ends the pair
            )
            watchdog = threading.Timer(PROCESS_TIMEOUT, lambda: os.killpg(proc.pid, signal.SIGKILL))
            watchdog.start()
            watcher = ProcWatch(proc.pid)
            try:
                proc.wait()
            finally:
                watchdog.cancel()
                watched: dict[str, Any] = dict(watcher.stop())
                if files is not None:
                    watched["files"] = files.stop()
        runner_cpu = time.process_time() - runner_cpu
        counts = self.farm.counts()
        try:
            usage = json.loads(usage_file.read_text())
        except (OSError, ValueError):
            usage = {"wall": float("nan"), "user": 0.0, "sys": 0.0, "maxrss_kib": 0, "code": -9}
        run = Run(
            label=label,
            wall=usage["wall"],
            user=usage["user"],
            sys=usage["sys"],
            maxrss_mib=usage["maxrss_kib"] / 1024,  # KiB on Linux
            returncode=usage["code"],
            tree_user=usage.get("tree_user", 0.0),
            tree_sys=usage.get("tree_sys", 0.0),
            tree_maxrss_mib=usage.get("tree_maxrss_kib", 0) / 1024,
            requests=counts.requests,
            ok=counts.ok,
            not_modified=counts.not_modified,
            errors=counts.errors,
            ok_without_validators=counts.ok_without_validators,
            peak_in_flight=counts.peak_in_flight,
            peak_per_host=counts.peak_per_host,
            load_before=load,
            runner_cpu=runner_cpu,
            watch=watched,
            stdout=str(out),
            stderr=str(err),
        )
        if run.returncode != 0:
            tail = err.read_text(errors="replace")[-2000:]
            print(f"!! {label} exited {run.returncode}; stderr ends with:", file=sys.stderr)
            print(tail, file=sys.stderr)
        last = _last_json(out)
        if last is not None:
            run.output = last
        _progress(run)
        return run

    def python(self, *args: str) -> list[str]:
        return [sys.executable, *args]

    # -- treaty-bot -------------------------------------------------------------------------

    def treaty_bot_rounds(self) -> Client:
        config = self.workdir / f"treaty-bot-config-{self.rep}"
        state = self.workdir / f"treaty-bot-state-{self.rep}" / STATE_NAME
        write_config(
            config,
            self.farm,
            storage=state,
            in_flight=self.args.in_flight,
            per_host=self.args.per_host,
        )
        once = [*self.treaty_bot, "once", "--config", str(config), "--format", "jsonl"]
        self.farm.reset()
        cold = self.measure(self.tag("treaty-bot cold"), once, watch=state.parent)
        cold.output = check_state(state, self.farm, Path(cold.stdout), ())
        change = self.farm.advance_round()
        warm = self.measure(self.tag("treaty-bot warm"), once, watch=state.parent)
        warm.output = check_state(state, self.farm, Path(warm.stdout), change.new_matching_links)

        before = stat_files(state.parent)
        quiet = self.measure(self.tag("treaty-bot no-change"), once, watch=state.parent)
        after = stat_files(state.parent)
        quiet.output = {
            "files_changed": diff_files(before, after),
            "state_bytes": state_size(state),
        }

        debug = [*once, "--log-level", "debug"]
        before = stat_files(state.parent)
        verify = self.measure(self.tag("treaty-bot no-change debug"), debug, watch=state.parent)
        after = stat_files(state.parent)
        outcome_of = {
            m.group(1): m.group(2)
            for m in re.finditer(
                r"polled source=(\S+) outcome=(\w+)",
                Path(verify.stderr).read_text(errors="replace"),
            )
        }
        plain = [f.id for f in self.farm.feeds if f.healthy and not f.validators]
        plain_outcomes = Counter(outcome_of.get(feed_id, "not logged") for feed_id in plain)
        verify.output = {
            "outcomes": dict(Counter(outcome_of.values())),
            "outcomes_without_validators": dict(plain_outcomes),
            "files_changed": diff_files(before, after),
            "state_bytes": state_size(state),
        }

        from bench.clients import store_write_times

        writes = store_write_times(state, (1, len(change.feeds)))
        return Client(
            "treaty-bot",
            cold,
            warm,
            change,
            {"no_change": asdict(quiet), "no_change_debug": asdict(verify), "store": writes},
        )

    # -- peers ------------------------------------------------------------------------------

    def reader_rounds(self) -> Client:
        db = self.workdir / f"reader-{self.rep}.sqlite"
        argv = self.python(
            "-m",
            "bench.clients",
            "reader",
            "--db",
            str(db),
            "--urls",
            str(self.urls),
            "--workers",
            str(self.args.in_flight),
        )
        return self._two_rounds("reader", "reader", argv)

    def fetch_only_rounds(self) -> Client:
        state = self.workdir / f"fetch-only-{self.rep}.json"
        state.unlink(missing_ok=True)
        argv = self.python(
            "-m",
            "bench.fetchonly",
            "--urls",
            str(self.urls),
            "--state",
            str(state),
            "--in-flight",
            str(self.args.in_flight),
            "--per-host",
            str(self.args.per_host),
        )
        return self._two_rounds(FETCH_ONLY, "fetch only", argv)

    def sequential_rounds(self) -> Client:
        argv = self.python("-m", "bench.clients", "sequential", "--urls", str(self.urls))
        return self._two_rounds("sequential feedparser", "sequential", argv)

    def _two_rounds(self, name: str, label: str, argv: list[str]) -> Client:
        """A peer's cold round on the farm's first content, then its warm round after a change."""
        self.farm.reset()
        cold = self.measure(self.tag(f"{label} cold"), argv)
        change = self.farm.advance_round()
        warm = self.measure(self.tag(f"{label} warm"), argv)
        return Client(name, cold, warm, change)

    def commands(self) -> Run:
        config = self.workdir / "commands-config"
        state = self.workdir / "commands-state" / "treaty-bot.json"
        write_config(
            config,
            self.farm,
            storage=state,
            in_flight=self.args.in_flight,
            per_host=self.args.per_host,
            calendar="bench-cal",
        )
        clauses = REPO / "config" / "clauses.yaml"
        if clauses.exists():
            shutil.copyfile(clauses, config / "clauses.yaml")
        return self.measure(
            "commands",
            self.python(
                "-m",
                "bench.clients",
                "commands",
                "--config",
                str(config),
                "--seen",
                str(self.args.seen),
                "--sessions",
                str(self.args.sessions),
            ),
        )

    def overhead(self) -> dict[str, Any]:
        """Warm the caches (bytecode, page cache), then time what every process pays before
        its first request: interpreter, imports, configuration."""
        config = self.workdir / "overhead-config"
        write_config(
            config,
            self.farm,
            storage=self.workdir / "overhead-state" / "x.json",
            in_flight=self.args.in_flight,
            per_host=self.args.per_host,
        )
        check = [*self.treaty_bot, "check", "--config", str(config)]
        for argv in (
            # bytecode for every module, as an installed program has after its first run
            self.python("-m", "compileall", "-q", str(REPO / "bot"), str(REPO / "bench")),
            check,
            self.python("-c", "import reader, feedparser, requests"),
            self.python("-c", "import bench.clients"),
        ):
            subprocess.run(argv, env=self.env, cwd=self.workdir, capture_output=True, check=False)
        runs = [self.measure(f"treaty-bot check {k}", check) for k in range(3)]
        imports = self.measure(
            "python import bot.app", self.python("-c", "import bot.app, bot.cli")
        )
        best = min(runs, key=lambda r: r.wall)
        return {
            "treaty_bot_check": asdict(best),
            "import_bot_app": asdict(imports),
        }


# ------------------------------------------------------------------------------- helpers


def _child_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
        and not k.startswith(("SLACK_", "MATRIX_", "TREATY_BOT_"))
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # measured processes use bytecode as installed
    env["NO_PROXY"] = env["no_proxy"] = "*"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _last_json(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def _progress(run: Run) -> None:
    print(
        f"   {run.label:<30} wall {run.wall:7.2f}s  cpu {run.cpu:6.2f}s  "
        f"rss {run.maxrss_mib:6.1f} MiB  "
        f"all (PSS) {run.watch.get('tree_pss_kib_at_least', 0) / 1024:6.1f} MiB  "
        f"200 {run.ok:5d}  304 {run.not_modified:5d}  "
        f"err {run.errors:3d}  in flight {run.peak_in_flight:3d}"
        + (f"  state written {_state_writes(run)}x" if "files" in run.watch else ""),
        flush=True,
    )


STATE_NAME = "treaty-bot.json"


def _state_writes(run: Run | dict[str, Any]) -> int:
    """How many times the state file was replaced during a run (inotify, exact)."""
    watch = run.watch if isinstance(run, Run) else run.get("watch", {})
    return int(watch.get("files", {}).get("replaced", {}).get(STATE_NAME, 0))


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML flow scalar


def write_config(
    directory: Path,
    farm: FeedFarm,
    *,
    storage: Path,
    in_flight: int,
    per_host: int,
    calendar: str | None = None,
) -> None:
    """bot.yaml and feeds.yaml for every farm feed (and sessions.yaml with one calendar)."""
    directory.mkdir(parents=True, exist_ok=True)
    storage.parent.mkdir(parents=True, exist_ok=True)
    (directory / "bot.yaml").write_text(
        "timezone: Europe/Vienna\n"
        f"storage: {_yaml_str(str(storage))}\n"
        "channels:\n  alerts: {}\n  ops: {}\n"
        "http: {host: 127.0.0.1, port: 0}\n"
        "fetch:\n"
        "  timeout: 30s\n"
        f"  per_host: {per_host}\n"
        f"  max_in_flight: {in_flight}\n"
    )
    lines = [
        "defaults:",
        "  every: 15m",
        "  channels: [alerts]",
        f"  match: [{_yaml_str(KEYWORD)}]",
        "feeds:",
    ]
    lines += [f"  - {{id: {f.id}, url: {_yaml_str(farm.url(f))}}}" for f in farm.feeds]
    (directory / "feeds.yaml").write_text("\n".join(lines) + "\n")
    sessions = "sessions: []\n"
    if calendar:
        (directory / "bench.ics").write_text("BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n")
        sessions = f"calendars:\n  - {{id: {calendar}, url: bench.ics}}\n" + sessions
    (directory / "sessions.yaml").write_text(sessions)


def check_state(
    state: Path, farm: FeedFarm, stdout: Path, expected_links: Sequence[str]
) -> dict[str, Any]:
    """Does the state file remember exactly the farm's items, and were exactly the expected
    new items announced (one ``news`` alert each)?"""
    from bot.store.tinydb_store import TinyDBStore

    data = json.loads(state.read_text())
    store = TinyDBStore(state, read_only=True)  # seen keys live in files of their own
    try:
        seen = {source: set(r.feed.seen) for source, r in store.sources().items()}
    finally:
        store.close()
    expected = farm.expected_keys()
    missing = sum(len(keys - seen.get(fid, set())) for fid, keys in expected.items())
    unexpected = sum(len(seen.get(fid, set()) - keys) for fid, keys in expected.items())
    wrong_feeds = sum(1 for fid, keys in expected.items() if seen.get(fid, set()) != keys)
    alerts = []
    for line in stdout.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                alerts.append(json.loads(line))
            except ValueError:
                continue
    news = [a for a in alerts if a.get("kind") == "news"]
    announced = Counter(str(a.get("url")) for a in news)
    wanted = Counter(expected_links)
    outbox = Counter(
        str(doc.get("state")) for doc in data.get("outbox", {}).values() if isinstance(doc, dict)
    )
    right = (
        missing == 0
        and unexpected == 0
        and announced == wanted
        and sum(outbox.values()) == outbox.get("sent", 0)
    )
    return {
        "seen_keys": sum(len(v) for v in seen.values()),
        "expected_keys": sum(len(v) for v in expected.values()),
        "missing_keys": missing,
        "unexpected_keys": unexpected,
        "feeds_wrong": wrong_feeds,
        "news_alerts": len(news),
        "expected_news_alerts": len(expected_links),
        "alerts_not_expected": sum((announced - wanted).values()),
        "alerts_missing": sum((wanted - announced).values()),
        "other_alerts": len(alerts) - len(news),
        "outbox": dict(outbox),
        "state_bytes": state_size(state),
        "all_right": right,
    }


def state_size(state: Path) -> int:
    """Bytes of the state: the main file and the files of seen keys beside it."""
    seen = state.with_name(state.name + ".seen")
    files = [state, *(seen.iterdir() if seen.is_dir() else ())]
    return sum(p.stat().st_size for p in files)


def stat_files(directory: Path) -> dict[str, tuple[int, int, int]]:
    return {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def diff_files(
    before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
) -> list[str]:
    """Names of files created, removed, replaced or modified."""
    return sorted(n for n in set(before) | set(after) if before.get(n) != after.get(n))


def calibrate_parse(farm: FeedFarm, sample: int = 40) -> dict[str, float]:
    """CPU per feed (ms, this thread) of treaty-bot's parser and of feedparser's defaults."""
    import io

    import feedparser

    from bot.sources.feeds import parse_feed

    feeds = [f for f in farm.feeds if f.healthy][:sample]
    results: dict[str, float] = {}
    for name, parse in (
        (
            "treaty_bot_parse_feed_ms",
            lambda body, ctype: parse_feed(body, ctype),
        ),
        (
            "feedparser_defaults_ms",
            lambda body, ctype: feedparser.parse(
                io.BytesIO(body), response_headers={"content-type": ctype}
            ),
        ),
    ):
        times = []
        for feed in feeds:
            ctype = "application/atom+xml" if feed.kind == "atom" else "application/rss+xml"
            best = float("inf")
            for _ in range(3):  # the least of three: noise only ever adds
                started = time.thread_time()
                parse(feed.version.body, ctype)
                best = min(best, time.thread_time() - started)
            times.append(best)
        results[name] = round(statistics.mean(times) * 1000, 2)
    return results


def code_version() -> dict[str, Any]:
    """The commit measured, and the files of bot/ that differ from it (the tree is shared)."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "subject": git("log", "-1", "--format=%s")[:120],
        "bot_files_changed": git("status", "--porcelain", "--", "bot").splitlines(),
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": platform.platform(),
        "load_at_start": os.getloadavg(),
    }


# ------------------------------------------------------------------------------- analysis


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def analyse(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    farm = results["farm"]
    feeds = farm["feeds"]
    latency = args.latency_ms / 1000
    cores = results["machine"]["cores"] or 1
    parse_ms = results["parse"]["treaty_bot_parse_feed_ms"] / 1000
    healthy = feeds - farm["broken"] - farm["hanging"]
    changed = round(args.changed * healthy)
    network = feeds / args.in_flight * latency
    floors = {
        "network_s": round(network, 3),
        "parse_cold_s": round(healthy * parse_ms / cores, 3),
        "parse_warm_s": round(changed * parse_ms / cores, 3),
    }
    floors["cold_s"] = max(floors["network_s"], floors["parse_cold_s"])
    floors["warm_s"] = max(floors["network_s"], floors["parse_warm_s"])
    startup = results.get("overhead", {}).get("treaty_bot_check", {}).get("wall")
    floors["startup_s"] = round(startup, 3) if startup else None
    clients = {
        name: c for name, c in results["clients"].items() if "cold" in c and not c.get("failed")
    }
    pairs: list[dict[str, Any]] = []

    def pair(a: str, b: str) -> None:
        if a in clients and b in clients:
            x, y = clients[a], clients[b]
            pairs.append(
                {
                    "pair": f"{b} / {a}",
                    "cold_wall": _ratio(y["cold"]["wall"], x["cold"]["wall"]),
                    "warm_wall": _ratio(y["warm"]["wall"], x["warm"]["wall"]),
                    "cpu_both": _ratio(y["cpu"], x["cpu"]),
                    "peak_rss": _ratio(y["rss"], x["rss"]),
                }
            )

    pair("treaty-bot", "reader")
    pair("treaty-bot", "sequential feedparser")
    pair("reader", "sequential feedparser")
    pair(FETCH_ONLY, "treaty-bot")
    for name in ("treaty-bot", FETCH_ONLY, "reader", "sequential feedparser"):
        if name in clients:
            c = clients[name]
            pairs.append(
                {
                    "pair": f"{name} / floor",
                    "cold_wall": _ratio(c["cold"]["wall"], floors["cold_s"]),
                    "warm_wall": _ratio(c["warm"]["wall"], floors["warm_s"]),
                    "cpu_both": None,
                    "peak_rss": None,
                }
            )
    return {"floors": floors, "pairs": pairs, "targets": targets(results, floors)}


def targets(results: dict[str, Any], floors: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    clients = results["clients"]
    tb = clients.get("treaty-bot")
    rd = clients.get("reader")
    if rd is not None and rd.get("failed"):
        rd = None  # a client that did not finish its rounds is no yardstick

    def add(target: str, measured: str, holds: bool | None) -> None:
        out.append({"target": target, "measured": measured, "holds": holds})

    if tb is None or tb.get("failed"):
        return out
    warm, cold = tb["warm"]["wall"], tb["cold"]["wall"]
    alone = clients.get(FETCH_ONLY)
    yardstick = (
        f"; the requests alone in an aiohttp process: {alone['warm']['wall']:.2f} s = "
        f"{alone['warm']['wall'] / floors['warm_s']:.2f} x"
        if alone and not alone.get("failed")
        else ""
    )
    add(
        "warm round (whole process) <= 1.3 x floor",
        f"{warm:.2f} s = {warm / floors['warm_s']:.2f} x {floors['warm_s']:.2f} s" + yardstick,
        warm <= 1.3 * floors["warm_s"],
    )
    check_cold = tb["cold"]["output"]
    check_warm = tb["warm"]["output"]
    right = (
        bool(check_cold.get("all_right"))
        and bool(check_warm.get("all_right"))
        and bool(tb["extra"].get("every_repetition_right", True))
    )
    if rd is not None:
        rw, rc = rd["warm"]["wall"], rd["cold"]["wall"]
        add(
            "warm round >= 1.6 x faster than reader",
            f"reader {rw:.2f} s / treaty-bot {warm:.2f} s = {rw / warm:.2f} x",
            rw / warm >= 1.6,
        )
        add(
            "cold round >= 2.5 x faster than reader",
            f"reader {rc:.2f} s / treaty-bot {cold:.2f} s = {rc / cold:.2f} x",
            rc / cold >= 2.5,
        )
        add(
            "CPU of both rounds <= 1/2 of reader's",
            f"treaty-bot {tb['cpu']:.2f} s / reader {rd['cpu']:.2f} s = "
            f"{tb['cpu'] / rd['cpu']:.2f}",
            tb["cpu"] <= 0.5 * rd["cpu"],
        )
    add(
        "every item's alert state right (cold and warm)",
        f"cold: {check_cold.get('seen_keys')}/{check_cold.get('expected_keys')} keys, "
        f"{check_cold.get('news_alerts')} alerts (0 expected); warm: "
        f"{check_warm.get('seen_keys')}/{check_warm.get('expected_keys')} keys, "
        f"{check_warm.get('news_alerts')}/{check_warm.get('expected_news_alerts')} alerts",
        right,
    )
    tree_mib = max(tb[r]["watch"].get("tree_rss_kib_at_least", 0) for r in ("cold", "warm")) / 1024
    tree_pss = max(tb[r]["watch"].get("tree_pss_kib_at_least", 0) for r in ("cold", "warm")) / 1024
    add(
        "peak RSS <= 80 MiB",
        f"main process {tb['rss']:.1f} MiB; all its processes at once (parser workers "
        f"included): RSS summed {tree_mib:.1f} MiB, PSS (shared pages counted once) "
        f"{tree_pss:.1f} MiB",
        tb["rss"] <= 80,
    )
    debug = tb["extra"]["no_change_debug"]["output"]
    outcomes = debug.get("outcomes_without_validators", {})
    plain = results["farm"]["without_validators"]
    add(
        "an unchanged body without validators is not parsed again",
        f"no-change round, the {plain} healthy feeds without validators: "
        + ", ".join(f"{n} '{outcome}'" for outcome, n in sorted(outcomes.items())),
        outcomes.get("unchanged", 0) == plain,
    )
    no_change = tb["extra"]["no_change"]
    quiet = no_change["output"].get("files_changed", [])
    writes = _state_writes(no_change)
    add(
        "a round in which nothing changed writes nothing to the store",
        f"state file written {writes} times; files changed in the state directory: "
        f"{', '.join(quiet) or 'none'} (.bak: the copy of the whole state made at every start)",
        STATE_NAME not in quiet and writes == 0,
    )
    commands = clients.get("commands")
    if commands:
        answers = commands.get("answers", {}).get("all", {})
        p99 = answers.get("p99_ms")
        if p99 is not None:
            add(
                f"command answers p99 < 20 ms with {commands.get('seen', 0):,} seen items",
                f"p50 {answers.get('p50_ms')} ms, p99 {p99} ms",
                p99 < 20,
            )
    small = tb["extra"]["store"]
    one, hundred = (
        small.get("commit_1_changed_bytes"),
        small.get(f"commit_{tb['change']['feeds']}_changed_bytes"),
    )
    if one and hundred and small.get("bytes"):
        big = (commands or {}).get("writes", {})
        at_big = (
            f"; at {big.get('seen_keys')} seen keys: 1 changed feed "
            f"{big.get('commit_1_changed_bytes', 0) / 1024:.0f} KiB, "
            f"{big.get('commit_1_changed_ms_median')} ms"
            if big
            else ""
        )
        add(
            "store work per round grows with changed items, not with items ever seen",
            f"one commit on the {small['bytes'] / 2**20:.2f} MiB state ({small.get('seen_keys')} "
            f"seen keys): 1 changed feed {one / 1024:.0f} KiB, "
            f"{small.get('commit_1_changed_ms_median')} ms; {tb['change']['feeds']} changed "
            f"feeds {hundred / 1024:.0f} KiB" + at_big,
            one < 0.25 * small["bytes"] and hundred < small["bytes"],
        )
    return out


# ------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    lines = []
    farm = results["farm"]
    lines.append(
        f"farm: {farm['feeds']} feeds ({farm['rss']} RSS, {farm['atom']} Atom; "
        f"{farm['without_validators']} without validators; {farm['broken']} broken), "
        f"{farm['items_per_feed']} items, median body {farm['body_kib_median']} KiB, "
        f"{farm['hosts']} hosts, {farm['latency_ms']:g} ms latency"
    )
    lines.append("")
    lines.append(
        "| client | cold round | warm round | CPU, both rounds | peak RSS "
        "| cold 200/304 | warm 200/304 | peak in flight |"
    )
    lines.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, c in results["clients"].items():
        if "cold" not in c:
            continue
        cold, warm = c["cold"], c["warm"]
        if c.get("failed"):
            name += " (FAILED: see logs)"
        lines.append(
            f"| {name} | {cold['wall']:.2f} s | {warm['wall']:.2f} s | {c['cpu']:.2f} s "
            f"| {c['rss']:.1f} MiB | {cold['ok']}/{cold['not_modified']} "
            f"| {warm['ok']}/{warm['not_modified']} "
            f"| {max(cold['peak_in_flight'], warm['peak_in_flight'])} |"
        )
    analysis = results["analysis"]
    fl = analysis["floors"]
    lines.append("")
    lines.append(
        f"floors: network {fl['network_s']} s (feeds / in flight x latency); parse cold "
        f"{fl['parse_cold_s']} s, warm {fl['parse_warm_s']} s (parse CPU / cores); "
        f"round floor cold {fl['cold_s']} s, warm {fl['warm_s']} s; process start-up "
        f"(treaty-bot check) {fl['startup_s']} s"
    )
    lines.append("")
    lines.append("| ratio | cold wall | warm wall | CPU both | peak RSS |")
    lines.append("| --- | --- | --- | --- | --- |")
    for p in analysis["pairs"]:
        cells = [
            "-" if p[k] is None else f"{p[k]:.2f}"
            for k in ("cold_wall", "warm_wall", "cpu_both", "peak_rss")
        ]
        lines.append(f"| {p['pair']} | " + " | ".join(cells) + " |")
    tb = results["clients"].get("treaty-bot")
    if tb:
        store = tb["extra"]["store"]
        lines.append("")
        lines.append(
            "| treaty-bot round | wall | CPU (all processes) | peak RSS (main process) "
            "| PSS of all processes at once | 200/304 | state file written "
            "| state size after | write() bytes |"
        )
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rounds = (
            ("cold", tb["cold"]),
            ("warm (after changes)", tb["warm"]),
            ("no change", tb["extra"]["no_change"]),
            ("no change, debug log", tb["extra"]["no_change_debug"]),
        )
        for name, r in rounds:
            size = r["output"].get("state_bytes", 0) / 2**20
            wchar = r["watch"].get("wchar_at_least", 0) / 2**20
            cpu = max(r["user"] + r["sys"], r.get("tree_user", 0) + r.get("tree_sys", 0))
            tree = r["watch"].get("tree_pss_kib_at_least", 0) / 1024
            lines.append(
                f"| {name} | {r['wall']:.2f} s | {cpu:.2f} s "
                f"| {r['maxrss_mib']:.1f} MiB | {tree:.1f} MiB | {r['ok']}/{r['not_modified']} "
                f"| {_state_writes(r)} x | {size:.2f} MiB | {wchar:.1f} MiB |"
            )
        quiet = tb["extra"]["no_change"]["output"]["files_changed"]
        lines.append(
            f"files changed by the no-change round: {', '.join(quiet) or 'none'}; one commit "
            f"on the state after the warm round ({store['bytes'] / 2**20:.2f} MiB): "
            + ", ".join(
                f"{k.split('_')[1]} changed feed(s) {v} ms, "
                f"{store.get(k.replace('_ms_median', '_bytes'), 0) / 1024:.0f} KiB written"
                for k, v in store.items()
                if k.startswith("commit_") and k.endswith("_ms_median")
            )
            + f"; open {store['open_ms_median']} ms"
        )
    commands = results["clients"].get("commands")
    if commands and "answers" in commands:
        a = commands["answers"]
        lines.append("")
        lines.append(
            f"commands ({commands['seen']} seen items, {commands['sessions']} sessions, "
            f"{commands['feeds']} feeds): all p50 {a['all']['p50_ms']} ms, p99 "
            f"{a['all']['p99_ms']} ms"
        )
        lines.append("| command | p50 ms | p99 ms |")
        lines.append("| --- | --- | --- |")
        for text, m in a["per_command"].items():
            lines.append(f"| `{text}` | {m['p50_ms']} | {m['p99_ms']} |")
        pieces = commands["pieces"]
        lines.append(
            f"store open (read-only) {pieces['store_open_read_only_ms_median']} ms; reads: "
            + ", ".join(f"{k} p50 {v['p50_ms']} ms" for k, v in pieces["reads"].items())
            + f"; plan_reminders over {pieces['plan_reminders']['events']} events p50 "
            f"{pieces['plan_reminders']['p50_ms']} ms, p99 {pieces['plan_reminders']['p99_ms']} ms"
        )
        w = commands["writes"]
        lines.append(
            f"big store: {w['bytes'] / 2**20:.1f} MiB, open {w['open_ms_median']} ms, commit of "
            f"1 changed feed {w['commit_1_changed_ms_median']} ms, of 100: "
            f"{w.get('commit_100_changed_ms_median')} ms"
        )
    lines.append("")
    lines.append("| target | measured | holds |")
    lines.append("| --- | --- | --- |")
    for t in analysis["targets"]:
        verdict = {True: "yes", False: "**no**", None: "?"}[t["holds"]]
        lines.append(f"| {t['target']} | {t['measured']} | {verdict} |")
    return "\n".join(lines)


def _right(run: Run) -> bool:
    return bool(run.output.get("all_right", True)) and run.returncode == 0


def best_of(reps: Sequence[Client]) -> Client:
    """The fastest cold and the fastest warm round of the repetitions (on a shared machine
    noise only ever adds time); the checks of every repetition are kept."""
    cold = min((c.cold for c in reps), key=lambda r: r.wall)
    warm = min((c.warm for c in reps), key=lambda r: r.wall)
    extra = dict(reps[-1].extra)
    extra["repetitions"] = [
        {
            "cold_wall": c.cold.wall,
            "warm_wall": c.warm.wall,
            "cold_cpu": c.cold.cpu,
            "warm_cpu": c.warm.cpu,
            "cold_rss": c.cold.maxrss_mib,
            "warm_rss": c.warm.maxrss_mib,
            "right": _right(c.cold) and _right(c.warm),
        }
        for c in reps
    ]
    extra["every_repetition_right"] = all(r["right"] for r in extra["repetitions"])
    return Client(reps[0].name, cold, warm, reps[0].change, extra)


def _client_dict(c: Client) -> dict[str, Any]:
    return {
        "cold": asdict(c.cold),
        "warm": asdict(c.warm),
        "cpu": c.cpu,
        "rss": max(
            [c.rss] + [max(r["cold_rss"], r["warm_rss"]) for r in c.extra.get("repetitions", [])]
        ),
        "failed": c.failed,
        "change": {
            "round": c.change.round,
            "feeds": len(c.change.feeds),
            "new_items": c.change.new_items,
            "new_matching": len(c.change.new_matching_links),
        },
        "extra": c.extra,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="treaty-bot vs reader vs sequential feedparser, side by side on a feed farm",
    )
    add_farm_arguments(parser)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=32,
        help="requests in flight: treaty-bot fetch.max_in_flight and reader's workers",
    )
    parser.add_argument("--per-host", type=int, default=2, help="treaty-bot fetch.per_host")
    parser.add_argument("--seen", type=int, default=100_000, help="seen items for commands")
    parser.add_argument("--sessions", type=int, default=500, help="sessions for commands")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every client N times, interleaved; report the fastest of each round",
    )
    parser.add_argument("--skip-reader", action="store_true")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument(
        "--skip-fetch-only", action="store_true", help="do not measure the aiohttp yardstick"
    )
    parser.add_argument("--skip-commands", action="store_true")
    parser.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    parser.add_argument(
        "--report",
        metavar="FILE",
        help="measure nothing: print the report of a --json FILE of an earlier run again",
    )
    parser.add_argument("--workdir", metavar="DIR", help="keep state, logs and configs here")
    parser.add_argument(
        "--lifetime", type=float, default=3600.0, help="the farm stops itself after this (s)"
    )
    args = parser.parse_args(argv)
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        first = parser.parse_args(shlex.split(earlier["command"])[3:])  # its own options
        earlier["analysis"] = analyse(earlier, first)
        print(report(earlier))
        return 0

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tw-bench-"))
    if args.workdir and workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    farm = FeedFarm(settings_from(args))
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.run", *(argv if argv else sys.argv[1:])]),
        "machine": machine(),
        "code": code_version(),
        "clients": {},
    }
    started = time.perf_counter()
    try:
        with FarmThread(farm, lifetime=args.lifetime):
            bench = Bench(args, farm, workdir)
            results["farm"] = describe(farm)
            results["parse"] = calibrate_parse(farm)
            print(f"workdir {workdir}; farm {results['farm']}", flush=True)
            print(f"parse CPU per feed: {results['parse']}", flush=True)
            results["overhead"] = bench.overhead()
            plan = [("treaty-bot", bench.treaty_bot_rounds)]
            if not args.skip_fetch_only:
                plan.append((FETCH_ONLY, bench.fetch_only_rounds))
            if not args.skip_reader:
                plan.append(("reader", bench.reader_rounds))
            if not args.skip_sequential:
                plan.append(("sequential feedparser", bench.sequential_rounds))
            measured: dict[str, list[Client]] = {name: [] for name, _ in plan}
            for rep in range(1, args.repeat + 1):  # interleaved, so that noise hits all alike
                bench.rep = rep
                for name, rounds in plan:
                    measured[name].append(rounds())
            for name, reps in measured.items():
                results["clients"][name] = _client_dict(best_of(reps))
            if not args.skip_commands:
                run = bench.commands()
                results["clients"]["commands"] = {**run.output, "process": asdict(run)}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["machine"]["load_at_end"] = os.getloadavg()
    results["analysis"] = analyse(results, args)
    text = report(results)
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
