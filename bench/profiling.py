"""Where ``treaty-bot once`` spends its time: the cold, warm and no-change rounds of
``bench.run``, each under py-spy (``pip install py-spy``), which samples every thread (cProfile
and pyinstrument see only the main thread, and treaty-bot parses in worker threads).

    python -m bench.profiling --feeds 1000 --latency-ms 50 --out /tmp/tw-profile

py-spy runs with ``--gil``: a sample is taken from the thread holding the GIL, so the samples
add up to the Python CPU time of the process (C code that releases the GIL, such as zlib,
fsync or socket I/O, is not counted). Each round's stacks are written in py-spy's raw
(collapsed) format, for flamegraph tools and speedscope, and summed here by category.
Profiled runs are slower than measured ones; use the figures as shares, not as timings.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from bench.farm import FarmThread, FeedFarm, add_farm_arguments, settings_from
from bench.run import _child_env, write_config

RATE = 250  # samples per second

#: Categories, tried in order: the first whose marker appears in a stack takes the sample.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up: imports", ("_find_and_load",)),
    ("start-up: config (YAML, validation)", ("bot/configuration/",)),
    ("store: JSON encode + atomic write", ("AtomicJSONStorage.flush", "write_atomically")),
    ("store: open (json.loads, .bak copy)", ("TinyDBStore.__init__",)),
    ("store: codec + TinyDB tables", ("bot/store/", "tinydb/")),
    ("parse: entity check", ("_declares_entities",)),
    ("parse: encoding conversion", ("convert_to_utf8",)),
    ("parse: feedparser", ("feedparser/",)),
    ("parse: text extraction (html_to_text, _clean)", ("bot/sources/feeds.py",)),
    ("poll: body digest", ("_without_new_content",)),
    ("planner: matching, alerts", ("bot/domain/",)),
    ("delivery + console output", ("bot/delivery.py", "bot/transports/")),
    ("logging", ("logging/",)),
    ("HTTP: aiohttp", ("aiohttp/", "yarl/", "multidict/")),
    ("event loop, threads", ("asyncio/", "concurrent/", "threading.py")),
)


def categorise(stack: str) -> str:
    for name, markers in CATEGORIES:
        if any(marker in stack for marker in markers):
            return name
    return "other"


def summarise(raw: Path, top: int = 10) -> str:
    """Seconds and shares per category, and the hottest leaf frames, of a raw py-spy file."""
    by_category: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        by_category[categorise(stack)] += n
        by_leaf[stack.rsplit(";", 1)[-1]] += n
    lines = [f"{raw.name}: {total / RATE:.2f} s of samples with the GIL"]
    for name, n in by_category.most_common():
        lines.append(f"  {n / RATE:6.2f} s  {100 * n / max(total, 1):5.1f} %  {name}")
    lines.append("  hottest leaf frames:")
    for name, n in by_leaf.most_common(top):
        lines.append(f"  {n / RATE:6.2f} s  {name}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiling", description=__doc__)
    add_farm_arguments(parser)
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--out", default=None, help="directory for the raw profiles")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy is not installed: pip install -r bench/requirements.txt", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="tw-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    farm = FeedFarm(settings_from(args))
    env = _child_env()
    script = Path(sys.executable).with_name("treaty-bot")
    bot = [str(script)] if script.exists() else [sys.executable, "-m", "bot"]
    with FarmThread(farm, lifetime=1800):
        config = out / "config"
        state = out / "state" / "treaty-bot.json"
        if state.parent.exists():
            shutil.rmtree(state.parent)
        write_config(config, farm, storage=state, in_flight=args.in_flight, per_host=args.per_host)
        once = [*bot, "once", "--config", str(config), "--format", "jsonl"]
        for name in ("cold", "warm", "no-change"):
            if name == "warm":
                farm.advance_round()
            raw = out / f"{name}.txt"
            record = [spy, "record", "--gil", "-r", str(RATE), "--format", "raw", "-o", str(raw)]
            subprocess.run(
                [*record, "--", *once],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=True,
            )
            print(summarise(raw), flush=True)
    print(f"raw profiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
