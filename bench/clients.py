"""The measured clients other than ``treaty-bot once``, each run as its own process by
``bench.run`` so that its wall time, CPU time and peak RSS are its own.

    python -m bench.clients sequential --urls URLS
    python -m bench.clients reader --db DB --urls URLS --workers 32
    python -m bench.clients commands --config DIR --seen 100000 --sessions 500

Each prints one JSON object on its last line of standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _urls(path: str) -> list[str]:
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def run_sequential(urls: Sequence[str]) -> dict[str, Any]:
    """What a simple bot does: ``feedparser.parse(url)`` for each feed, one after another,
    with feedparser's defaults and without validators."""
    import feedparser

    started = time.perf_counter()
    entries = 0
    bozo = 0
    failed = 0
    for url in urls:
        result = feedparser.parse(url)
        entries += len(result.entries)
        if result.get("bozo"):
            bozo += 1
        if result.get("status", 200) >= 400 or not result.get("version"):
            failed += 1
    return {
        "seconds": time.perf_counter() - started,
        "feeds": len(urls),
        "entries": entries,
        "bozo": bozo,
        "failed": failed,
    }


def run_reader(db: str, urls: Sequence[str], workers: int) -> dict[str, Any]:
    """lemon24/reader: add the feeds (first run only), then ``update_feeds(workers=N)``.

    ``update_feeds_iter`` is what ``update_feeds`` consumes; iterating it ourselves gives the
    per-feed outcome at no extra cost. ``scheduled=False``: since reader 3.21 an update skips
    the feeds whose update interval (1 hour by default) has not passed, and a benchmark round
    is a round in which every feed is polled, as in ``treaty-bot once``.
    """
    import reader as reader_module
    from reader import make_reader

    setup_started = time.perf_counter()
    r = make_reader(db)
    known = {feed.url for feed in r.get_feeds()}
    added = 0
    for url in urls:
        if url not in known:
            r.add_feed(url)
            added += 1
    started = time.perf_counter()
    new = modified = not_modified = errors = 0
    for result in r.update_feeds_iter(workers=workers, scheduled=False):
        value = result.value
        if value is None:
            not_modified += 1
        elif isinstance(value, Exception):
            errors += 1
        else:
            new += value.new
            modified += value.modified
    seconds = time.perf_counter() - started
    r.close()
    return {
        "version": reader_module.__version__,
        "setup_seconds": started - setup_started,
        "seconds": seconds,
        "feeds_added": added,
        "new_entries": new,
        "modified_entries": modified,
        "not_modified_feeds": not_modified,
        "errors": errors,
    }


# ------------------------------------------------------------------------------- commands

COMMANDS = (
    "next-session",
    "sessions 10",
    "clauses",
    "clause 4",
    "news 5",
    "feeds",
    "help",
    "status",
)


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[rank]


def _ms(values: Sequence[float]) -> dict[str, float]:
    return {
        "p50_ms": round(_percentile(values, 0.5) * 1000, 3),
        "p99_ms": round(_percentile(values, 0.99) * 1000, 3),
        "max_ms": round(max(values) * 1000, 3),
        "n": len(values),
    }


def build_big_store(
    storage: Path, feed_ids: Sequence[str], seen: int, sessions: int, calendar: str
) -> dict[str, Any]:
    """A state file holding ``seen`` item keys spread over the feeds, ``sessions`` events in
    the snapshot of ``calendar``, and 500 recent news items."""
    from bot.domain.model import (
        FeedState,
        NewsRecord,
        SessionEvent,
        SourceHealth,
        SourceId,
        SourceRecord,
        Validators,
    )
    from bot.domain.sessions import Snapshot
    from bot.store.base import Changes
    from bot.store.tinydb_store import TinyDBStore

    now = datetime.now(UTC).replace(microsecond=0)
    per_feed, extra = divmod(seen, len(feed_ids))
    records = []
    for n, feed_id in enumerate(feed_ids):
        count = per_feed + (1 if n < extra else 0)
        keys = {
            f"tag:{feed_id}.example.org,2026:item-{k}": now - timedelta(hours=k)
            for k in range(count)
        }
        records.append(
            SourceRecord(
                feed_id,
                Validators('"' + "e" * 20 + '"', "Thu, 01 Jan 2026 12:00:00 GMT", "f" * 64),
                FeedState(True, keys),
                SourceHealth(last_success=now),
            )
        )
    kinds = ("session", "informal", "deadline")
    events = {}
    first_seen = {}
    for k in range(sessions):
        start = now + timedelta(days=k - sessions // 3, hours=k % 7)
        key = f"{calendar}:event-{k}@bench"
        events[key] = SessionEvent(
            key=key,
            source=calendar,
            title=f"Informal consultations on article {k % 60 + 1} of the convention",
            start=start,
            end=start + timedelta(hours=3),
            kind=kinds[k % 3],  # type: ignore[arg-type]
            location="Vienna International Centre",
            url=f"https://indico.example.org/event/{k}/",
        )
        first_seen[key] = now - timedelta(days=30)
    news = [
        NewsRecord(
            SourceId(feed_ids[k % len(feed_ids)]),
            f"tag:news-{k}",
            f"The cybercrime convention, update {k}",
            f"https://news.example.org/{k}",
            now - timedelta(hours=k),
            now - timedelta(hours=k),
            ("cybercrime convention",),
        )
        for k in range(500)
    ]
    started = time.perf_counter()
    store = TinyDBStore(storage)
    try:
        store.commit(
            Changes(
                sources=records,
                snapshots={calendar: Snapshot(True, events, first_seen)},
                news=news,
            )
        )
    finally:
        store.close()
    return {"build_seconds": time.perf_counter() - started, "bytes": storage.stat().st_size}


def store_write_times(storage: Path, changed: Sequence[int], repeats: int = 5) -> dict[str, Any]:
    """Time ``commit`` of a round in which ``n`` feeds got 3 new items, for each ``n``, on a
    copy of ``storage``. Returns median seconds per ``n``."""
    from bot.domain.model import FeedState, SourceRecord
    from bot.store.base import Changes
    from bot.store.tinydb_store import TinyDBStore

    seen_dir = storage.with_name(storage.name + ".seen")
    seen_bytes = sum(p.stat().st_size for p in seen_dir.iterdir()) if seen_dir.is_dir() else 0
    out: dict[str, Any] = {"bytes": storage.stat().st_size + seen_bytes}
    with tempfile.TemporaryDirectory(prefix="treaty-store-") as tmp:
        copy = Path(tmp) / storage.name
        shutil.copyfile(storage, copy)
        if seen_dir.is_dir():
            shutil.copytree(seen_dir, copy.with_name(copy.name + ".seen"))
        open_times = []
        for _ in range(3):
            started = time.perf_counter()
            store = TinyDBStore(copy)
            open_times.append(time.perf_counter() - started)
            store.close()
        out["open_ms_median"] = round(statistics.median(open_times) * 1000, 2)
        store = TinyDBStore(copy)
        try:
            records = list(store.sources().values())
            out["seen_keys"] = sum(len(r.feed.seen) for r in records)
            now = datetime.now(UTC)
            for n in changed:
                times = []
                for rep in range(repeats):
                    batch = []
                    for record in records[:n]:
                        seen = dict(record.feed.seen)
                        for k in range(3):
                            seen[f"bench:new:{rep}:{k}"] = now
                        batch.append(
                            SourceRecord(
                                record.id, record.validators, FeedState(True, seen), record.health
                            )
                        )
                    writes, seen_written = store.writes, store.seen_files_written
                    started = time.perf_counter()
                    store.commit(Changes(sources=batch))
                    times.append(time.perf_counter() - started)
                    main_written = (store.writes - writes) * copy.stat().st_size
                    written = main_written + store.seen_files_written - seen_written
                out[f"commit_{n}_changed_ms_median"] = round(statistics.median(times) * 1000, 2)
                out[f"commit_{n}_changed_bytes"] = written
        finally:
            store.close()
    return out


async def _answer_times(config_dir: str, samples: int) -> dict[str, Any]:
    from bot.app import App
    from bot.configuration import load_config
    from bot.transports.base import Inbound

    config = load_config(config_dir)
    per_command: dict[str, list[float]] = {}
    failures = []
    async with App(config, dry_run=True) as app:
        await app.answer(Inbound("console", "", None, "help"))  # first call: lazy imports
        for _ in range(samples):
            for text in COMMANDS:
                started = time.perf_counter()
                answer = await app.answer(Inbound("console", "", None, text))
                per_command.setdefault(text, []).append(time.perf_counter() - started)
                if answer.title.startswith("Sorry, something went wrong"):
                    failures.append(text)
    every = [t for times in per_command.values() for t in times]
    return {
        "all": _ms(every),
        "per_command": {text: _ms(times) for text, times in per_command.items()},
        "failed_answers": sorted(set(failures)),
    }


def _pieces(config_dir: str, samples: int) -> dict[str, Any]:
    """The parts of an answer measured apart: the store's reads and the session planning."""
    from bot.configuration import load_config
    from bot.domain.sessions import ReminderState, plan_reminders
    from bot.store.tinydb_store import TinyDBStore

    config = load_config(config_dir)
    storage = Path(config.bot.storage)
    opened = []
    for _ in range(3):
        started = time.perf_counter()
        store = TinyDBStore(storage, read_only=True)
        opened.append(time.perf_counter() - started)
        store.close()
    store = TinyDBStore(storage, read_only=True)
    reads: dict[str, list[float]] = {"sources()": [], "snapshots()": [], "recent_news(50)": []}
    for _ in range(samples):
        for name, call in (
            ("sources()", store.sources),
            ("snapshots()", store.snapshots),
            ("recent_news(50)", lambda: store.recent_news(50)),
        ):
            started = time.perf_counter()
            call()
            reads[name].append(time.perf_counter() - started)
    events = [e for snap in store.snapshots().values() for e in snap.events.values()]
    first_seen = {k: t for snap in store.snapshots().values() for k, t in snap.first_seen.items()}
    store.close()
    planning = []
    now = datetime.now(UTC)
    for _ in range(samples):
        started = time.perf_counter()
        plan_reminders(
            events,
            first_seen,
            ReminderState(),
            now,
            config.tz,
            lead_times=config.bot.reminders.lead_times,
            channels=config.reminder_channels,
        )
        planning.append(time.perf_counter() - started)
    return {
        "store_open_read_only_ms_median": round(statistics.median(opened) * 1000, 2),
        "reads": {name: _ms(times) for name, times in reads.items()},
        "plan_reminders": {"events": len(events), **_ms(planning)},
    }


def run_commands(config_dir: str, seen: int, sessions: int, samples: int) -> dict[str, Any]:
    from bot.configuration import load_config

    config = load_config(config_dir)
    storage = Path(config.bot.storage)
    calendar = config.calendars[0].id if config.calendars else "bench-cal"
    built = None
    if not storage.exists():
        built = build_big_store(storage, [f.id for f in config.feeds], seen, sessions, calendar)
    answers = asyncio.run(_answer_times(config_dir, samples))
    return {
        "feeds": len(config.feeds),
        "seen": seen,
        "sessions": sessions,
        "store": built,
        "answers": answers,
        "pieces": _pieces(config_dir, samples),
        "writes": store_write_times(storage, (1, 100)),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.clients")
    sub = parser.add_subparsers(dest="client", required=True)
    seq = sub.add_parser("sequential", help="feedparser.parse(url) for each URL in turn")
    seq.add_argument("--urls", required=True, help="file with one URL a line")
    rd = sub.add_parser("reader", help="lemon24/reader update_feeds(workers=N)")
    rd.add_argument("--urls", required=True)
    rd.add_argument("--db", required=True)
    rd.add_argument("--workers", type=int, default=32)
    cm = sub.add_parser("commands", help="command answer latency on a big store")
    cm.add_argument("--config", required=True)
    cm.add_argument("--seen", type=int, default=100_000)
    cm.add_argument("--sessions", type=int, default=500)
    cm.add_argument("--samples", type=int, default=40, help="answers per command")
    args = parser.parse_args(argv)
    if args.client == "sequential":
        result = run_sequential(_urls(args.urls))
    elif args.client == "reader":
        result = run_reader(args.db, _urls(args.urls), args.workers)
    else:
        result = run_commands(args.config, args.seen, args.sessions, args.samples)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
