"""`kill -9` at random moments loses no alert and posts none twice (console transport)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO

FEEDS = 4


class GrowingFeeds:
    """Feeds that gain one item on every request after the first (which is empty)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(range(FEEDS), -1)
        self.served: set[str] = set()

    def body(self, feed: int) -> bytes:
        with self.lock:
            self.counts[feed] += 1
            n = self.counts[feed]
            titles = [f"cybercrime item {feed}-{i}" for i in range(n)]
            self.served.update(titles)
        items = "".join(
            f"<item><guid>{t}</guid><title>{t}</title></item>" for t in reversed(titles)
        )
        return f'<rss version="2.0"><channel><title>F{feed}</title>{items}</channel></rss>'.encode()


@pytest.fixture
def feeds() -> Iterator[tuple[GrowingFeeds, str]]:
    state = GrowingFeeds()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = state.body(int(self.path.strip("/").split(".")[0]))
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_sigkill_at_random_moments(tmp_path: Path, feeds: tuple[GrowingFeeds, str]) -> None:
    state, base = feeds
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        f"storage: {tmp_path / 'state.json'}\nchannels: {{alerts: {{}}, ops: {{}}}}\n"
        "http: {port: 0}\n"
    )
    (config / "feeds.yaml").write_text(
        "defaults: {every: 1m, match: [cybercrime]}\nfeeds:\n"
        + "".join(f"  - {{id: f{i}, url: '{base}/{i}.xml'}}\n" for i in range(FEEDS))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    printed: list[str] = []
    rng = random.Random(20261128)

    def collect(out: bytes) -> None:
        printed.extend(
            json.loads(line)["title"] for line in out.decode().splitlines() if line.strip()
        )

    # the first poll of each feed only remembers what exists: recorded by a clean round first,
    # so that every item served afterwards must be posted (a kill before a first poll is
    # recorded makes the next poll the first one, which rightly posts nothing)
    baseline = subprocess.run(
        [sys.executable, "-m", "bot", "once", "--config", str(config), "--format", "jsonl"],
        capture_output=True,
        env=env,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    collect(baseline.stdout)
    for _ in range(20):
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--config", str(config), "--format", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=REPO,
        )
        time.sleep(rng.uniform(0.5, 4.0))  # fault injection: the kill lands anywhere
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        collect(out)
    # a last, clean round delivers whatever the kills left behind
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "bot", "once", "--config", str(config), "--format", "jsonl"],
            capture_output=True,
            env=env,
            cwd=REPO,
            timeout=120,
            check=True,
        )
        collect(done.stdout)

    counts = Counter(printed)
    duplicates = {t: c for t, c in counts.items() if c > 1}
    assert duplicates == {}
    # every item the server ever served was posted, except those of each feed's first
    # (empty) poll, which only remembers
    assert set(counts) == state.served
    assert len(state.served) > FEEDS * 3
    with open(tmp_path / "state.json") as handle:
        json.load(handle)  # and the state file is whole
