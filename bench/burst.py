"""A burst is not a flood: a burst of new items over many feeds, posted to the Slack stand-in
by ``treaty-bot once``. Hand-run; it prints figures (and JSON with ``--json``), and checks
that every item of the burst reached Slack exactly once.

    python -m bench.burst --feeds 50 --new-per-feed 10 --max-new-items 5

What runs, all on loopback, each stopping by itself:

- the feed farm (``bench.farm``, in a thread of this process): ``--feeds`` feeds of 35
  generated items each (RSS 2.0 and Atom, with HTML summaries), served from 32 addresses;
- the Slack stand-in (``tests/integration/slack_standin.py``, in a thread of this process):
  the Web API and Socket Mode. With ``--strict-rate`` (0.9 s by default) it refuses, with a
  429 as Slack does, a post to a channel that comes sooner than that after the previous one;
- ``treaty-bot once`` twice, each its own process, with the Slack transport (Socket Mode),
  every feed without keywords (every item matches) and ``max_new_items: --max-new-items``;
  the feeds are spread round robin over ``--channels`` Slack channels.

The first ``once`` polls every feed for the first time, so it only remembers what exists.
Then the farm puts ``--new-per-feed`` new items on top of every feed (the burst), and the
second ``once`` polls, plans and delivers them. Its wall time is the figure ("the burst took").
The farm dates its items on a fixed calendar (new ones on 2026-01-01 at 12:10), so the two
runs act at fixed instants with ``--now`` (12:05 and 12:20): the burst is published after the
last successful poll, as a real one is.

Checked afterwards, from what the stand-in holds: every link of the burst is in exactly one
posted message, and no other item is; each message lists at most 20 items; no post was refused
for its rate (429) or otherwise; and, per channel, the gaps between two posts (the pacing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from statistics import median
from typing import Any

from bench.farm import BASE_TIME, FarmSettings, FarmThread, FeedFarm
from bench.load import child_env, yaml_str
from bench.run import REPO, code_version, machine
from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn

#: Where a Slack section links an item: ``<url|title>``.
LINK = re.compile(r"<(https?://[^|>]+)\|")
#: The instants the two runs act at (the farm's calendar: the burst is dated 12:10).
FIRST_POLL = BASE_TIME + timedelta(minutes=5)
BURST_POLL = BASE_TIME + timedelta(minutes=20)
#: A ``treaty-bot once`` still running after this long is killed (seconds).
ONCE_TIMEOUT = 1800.0


def write_config(workdir: Path, urls: list[str], channels: list[str], max_new: int) -> Path:
    config = workdir / "config"
    config.mkdir()
    storage = workdir / "data" / "treaty-bot.json"
    storage.parent.mkdir()
    lines = ["timezone: UTC", f"storage: {yaml_str(str(storage))}", "channels:"]
    lines += [f"  news-{i}: {{slack: {channel}}}" for i, channel in enumerate(channels)]
    lines += ["  ops: {}", "http: {port: 0}", "fetch: {timeout: 30s}"]
    (config / "bot.yaml").write_text("\n".join(lines) + "\n")
    feeds = [
        f"defaults: {{every: 15m, max_new_items: {max_new}}}",
        "feeds:",
        *(
            f"  - {{id: feed-{i:04d}, url: {yaml_str(url)}, channels: [news-{i % len(channels)}]}}"
            for i, url in enumerate(urls)
        ),
    ]
    (config / "feeds.yaml").write_text("\n".join(feeds) + "\n")
    return config


def once(config: Path, env: dict[str, str], now: str, log: Path) -> float:
    """`treaty-bot once --now NOW` to the end; its wall time."""
    began = time.monotonic()
    with log.open("wb") as out:
        done = subprocess.run(
            [sys.executable, "-m", "bot", "once", "--config", str(config), "--now", now],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
            timeout=ONCE_TIMEOUT,
            check=False,
        )
    if done.returncode != 0:
        raise SystemExit(f"treaty-bot once exited with {done.returncode}: see {log}")
    return time.monotonic() - began


def posted_links(slack: SlackStandIn, channel: str) -> list[list[str]]:
    """The item links of each message posted to ``channel``, in order."""
    return [
        LINK.findall("\n".join(str(b.get("text", {}).get("text", "")) for b in message.blocks))
        for message in slack.messages(channel)
    ]


def gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in itertools.pairwise(ordered)]


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    settings = FarmSettings(
        feeds=args.feeds,
        latency_ms=args.latency_ms,
        changed=1.0,
        new_per_change=args.new_per_feed,
        seed=args.seed,
    )
    channels = [f"C0BURST{i:02d}" for i in range(args.channels)]
    farm = FeedFarm(settings)
    with (
        FarmThread(farm, lifetime=ONCE_TIMEOUT * 2) as farm,
        SlackStandIn(strict_rate=args.strict_rate or None) as slack,
    ):
        for i, channel in enumerate(channels):
            slack.add_channel(channel, f"news-{i}")
        config = write_config(workdir, farm.urls(), channels, args.max_new_items)
        env = child_env()
        env |= {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": APP_TOKEN,
            "SLACK_API_URL": slack.api_url,
        }
        first = once(config, env, FIRST_POLL.isoformat(), workdir / "once-first.log")
        before = len(slack.calls_to("chat.postMessage"))
        change = farm.advance_round(1.0)
        expected = {
            item.link
            for feed in farm.feeds
            if feed.id in change.feeds
            for item in feed.version.items[: args.new_per_feed]
        }
        print(
            f"first poll: {first:.2f} s, {before} posts; burst: {len(expected)} new items "
            f"over {len(change.feeds)} feeds",
            flush=True,
        )
        burst = once(config, env, BURST_POLL.isoformat(), workdir / "once-burst.log")

        calls = slack.calls_to("chat.postMessage")[before:]
        refused = Counter(c.error or str(c.status) for c in calls if c.status != 200 or c.error)
        per_channel: dict[str, Any] = {}
        seen: Counter[str] = Counter()
        sizes: list[int] = []
        for channel in channels:
            messages = posted_links(slack, channel)
            for links in messages:
                seen.update(links)
                sizes.append(len(links))
            ok = [c.at for c in calls if c.params.get("channel") == channel and c.status == 200]
            between = gaps(ok)
            per_channel[channel] = {
                "messages": len(messages),
                "items": sum(len(links) for links in messages),
                "gap_min_s": round(min(between), 3) if between else None,
                "gap_median_s": round(median(between), 3) if between else None,
                "span_s": round(max(ok) - min(ok), 3) if ok else None,
            }
        arrivals = [c.at for c in calls if c.status == 200]
    missing = sorted(expected - set(seen))
    twice = sorted(link for link, n in seen.items() if n > 1)
    unexpected = sorted(set(seen) - expected)
    all_gaps = [v["gap_min_s"] for v in per_channel.values() if v["gap_min_s"] is not None]
    checks = {
        "every item posted": not missing,
        "no item twice": not twice,
        "nothing else posted": not unexpected,
        "at most 20 items a message": max(sizes, default=0) <= 20,
        "no post refused": not refused,
    }
    return {
        "settings": {
            "feeds": args.feeds,
            "new_per_feed": args.new_per_feed,
            "max_new_items": args.max_new_items,
            "channels": args.channels,
            "latency_ms": args.latency_ms,
            "strict_rate": args.strict_rate,
            "seed": args.seed,
        },
        "first_once_s": round(first, 3),
        "burst_once_s": round(burst, 3),
        "posting_span_s": round(max(arrivals) - min(arrivals), 3) if arrivals else None,
        "items_expected": len(expected),
        "items_posted": sum(seen.values()),
        "messages": len(sizes),
        "items_per_message": dict(sorted(Counter(sizes).items())),
        "min_gap_s": min(all_gaps) if all_gaps else None,
        "refused": dict(refused),
        "missing": missing[:20],
        "twice": twice[:20],
        "unexpected": unexpected[:20],
        "per_channel": per_channel,
        "checks": checks,
        "code": code_version(),
        "machine": machine(),
    }


def report(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(
        f"\n{s['feeds']} feeds x {s['new_per_feed']} new items, max_new_items "
        f"{s['max_new_items']}, {s['channels']} channel(s)"
    )
    print(
        f"the burst took {r['burst_once_s']:.2f} s (treaty-bot once, whole process); posting "
        f"spanned {r['posting_span_s']} s"
    )
    print(
        f"{r['items_posted']}/{r['items_expected']} items in {r['messages']} messages "
        f"(items per message: {r['items_per_message']}); shortest gap between two posts to a "
        f"channel {r['min_gap_s']} s; refused posts {r['refused'] or 0}"
    )
    for channel, c in r["per_channel"].items():
        print(
            f"  {channel}: {c['messages']} messages, {c['items']} items, gaps min "
            f"{c['gap_min_s']} s, median {c['gap_median_s']} s, span {c['span_s']} s"
        )
    for name, ok in r["checks"].items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if r["missing"] or r["twice"] or r["unexpected"]:
        print(f"  missing {r['missing']}; twice {r['twice']}; unexpected {r['unexpected']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.burst", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--feeds", type=int, default=50)
    parser.add_argument("--new-per-feed", type=int, default=10, help="new items per feed")
    parser.add_argument(
        "--max-new-items", type=int, default=5, help="the feeds' max_new_items (default 5)"
    )
    parser.add_argument("--channels", type=int, default=1, help="Slack channels (default 1)")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--strict-rate",
        type=float,
        default=0.9,
        help="the stand-in refuses a post to a channel sooner than this after the last (0: off)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--workdir", type=Path, help="keep configs, state and logs here")
    args = parser.parse_args(argv)
    if not 1 <= args.new_per_feed <= FarmSettings().items:
        parser.error(f"--new-per-feed must be 1 to {FarmSettings().items} (the feeds' length)")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=False)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="tw-burst-") as tmp:
            result = run(args, Path(tmp))
    report(result)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
