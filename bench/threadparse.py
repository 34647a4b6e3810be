"""How late the event loop wakes while feeds are parsed in a thread of the bot's process.

Once the parser workers have stopped (``bot.sources.parsing``: fewer than 60 large bodies a
minute), a changed feed is parsed in a thread. This measures what that costs the loop: the
farm's own feed bodies (70-90 KB, RSS and Atom) are parsed one after the other in a thread
while a probe on the loop sleeps 1 ms again and again and records by how much each sleep
overran; the same probe runs first with nothing else to do, side by side in one process.

    python -m bench.threadparse --feeds 20 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.farm import FarmSettings, FeedFarm
from bot.sources.feeds import parse_feed

PROBE = 0.001


async def _probe(lags: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        began = time.perf_counter()
        await asyncio.sleep(PROBE)
        lags.append(time.perf_counter() - began - PROBE)


def _summary(lags: Sequence[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


async def measure(bodies: list[tuple[bytes, str]], repeat: int, idle_s: float) -> dict[str, Any]:
    parse_ms = []
    for body, kind in bodies:  # on their own first: what one parse costs
        began = time.perf_counter()
        parse_feed(body, kind)
        parse_ms.append((time.perf_counter() - began) * 1000)
    stop = asyncio.Event()
    idle: list[float] = []
    probe = asyncio.create_task(_probe(idle, stop))
    await asyncio.sleep(idle_s)
    stop.set()
    await probe
    stop = asyncio.Event()
    busy: list[float] = []
    probe = asyncio.create_task(_probe(busy, stop))
    began = time.perf_counter()
    for _ in range(repeat):
        for body, kind in bodies:
            await asyncio.to_thread(parse_feed, body, kind)
    parsing_s = time.perf_counter() - began
    stop.set()
    await probe
    return {
        "bodies": len(bodies),
        "body_kb_median": round(statistics.median(len(b) for b, _ in bodies) / 1000, 1),
        "parse_ms_median": round(statistics.median(parse_ms), 2),
        "switch_interval_ms": round(sys.getswitchinterval() * 1000, 2),
        "probe_idle": _summary(idle),
        "probe_while_parsing_in_a_thread": _summary(busy),
        "parses": repeat * len(bodies),
        "parsing_s": round(parsing_s, 2),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.threadparse", description=__doc__)
    p.add_argument("--feeds", type=int, default=20, help="farm feeds whose bodies are parsed")
    p.add_argument("--repeat", type=int, default=5, help="times each body is parsed")
    p.add_argument("--idle", type=float, default=1.0, help="seconds of the probe alone")
    p.add_argument("--json", metavar="FILE", help="write the figures here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    farm = FeedFarm(FarmSettings(feeds=args.feeds))
    bodies = [
        (
            f.version.body,
            "application/atom+xml" if f.kind == "atom" else "application/rss+xml",
        )
        for f in farm.feeds
    ]
    results = asyncio.run(measure(bodies, args.repeat, args.idle))
    idle, busy = results["probe_idle"], results["probe_while_parsing_in_a_thread"]
    print(
        f"{results['bodies']} bodies (median {results['body_kb_median']} KB), one parse "
        f"{results['parse_ms_median']} ms at the median; switch interval "
        f"{results['switch_interval_ms']} ms\n"
        f"loop probe (1 ms sleeps), late by    p50      p99      max      count\n"
        f"  idle                                {idle['p50_ms']:<8} {idle['p99_ms']:<8} "
        f"{idle['max_ms']:<8} {idle['count']}\n"
        f"  while parsing in a thread           {busy['p50_ms']:<8} {busy['p99_ms']:<8} "
        f"{busy['max_ms']:<8} {busy['count']}  ({results['parses']} parses in "
        f"{results['parsing_s']} s)"
    )
    if args.json:
        with open(args.json, "w") as out:
            out.write(json.dumps(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
