"""What the crash tests share: feeds that grow on every request, and a bot run as a subprocess.

``GrowingFeeds`` serves ``count`` RSS feeds on loopback (``/0.xml``, ``/1.xml``, …); every
request of a feed serves ``per_request`` items (one by default) more than the one before,
starting with an empty feed, so a bot that is killed and restarted always finds something new.
``served`` is every item that was ever sent to the bot: after the first (empty) poll of each
feed, each of them must be posted exactly once, however often the bot was killed in between.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

from tests.conftest import REPO

FEEDS = 4
#: The title of every item served, as it appears in what the bot posts.
TITLE = re.compile(r"cybercrime item \d+-\d+")
#: The longest a `treaty-bot once` may take before the test fails.
ONCE_TIMEOUT = 120.0


class GrowingFeeds:
    """Feeds that gain ``per_request`` items on every request after the first (empty) one."""

    def __init__(self, count: int = FEEDS, per_request: int = 1) -> None:
        self.count = count
        self.per_request = per_request
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(range(count), -1)
        self.served: set[str] = set()

    def body(self, feed: int) -> bytes:
        with self.lock:
            self.counts[feed] += 1
            n = self.counts[feed] * self.per_request
            titles = [f"cybercrime item {feed}-{i}" for i in range(n)]
            self.served.update(titles)
        items = "".join(
            f"<item><guid>{t}</guid><title>{t}</title></item>" for t in reversed(titles)
        )
        return f'<rss version="2.0"><channel><title>F{feed}</title>{items}</channel></rss>'.encode()

    def snapshot(self) -> set[str]:
        with self.lock:
            return set(self.served)


@contextmanager
def growing_feeds(count: int = FEEDS, per_request: int = 1) -> Iterator[tuple[GrowingFeeds, str]]:
    """Serve ``GrowingFeeds`` on 127.0.0.1; yields the state and the base URL."""
    state = GrowingFeeds(count, per_request)

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
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def write_config(
    directory: Path,
    *,
    storage: Path,
    base: str,
    count: int = FEEDS,
    channels: Mapping[str, Mapping[str, object]] | None = None,
    feed_channels: Sequence[str] | None = None,
    max_new_items: int | None = None,
) -> Path:
    """bot.yaml and feeds.yaml for ``count`` growing feeds (every item matches).

    ``channels`` adds logical channels to bot.yaml (``{name: {slack: id}}``); feed ``i`` posts to
    ``feed_channels[i]`` when given, else to the default channel, ``alerts``. ``max_new_items``
    raises the number of new items of one poll that are still posted one by one.
    """
    directory.mkdir(parents=True, exist_ok=True)
    targets: dict[str, Mapping[str, object]] = {"alerts": {}, "ops": {}, **(channels or {})}
    inline = ", ".join(
        f"{name}: {{{', '.join(f'{k}: {v!r}' for k, v in target.items())}}}"
        for name, target in targets.items()
    )
    (directory / "bot.yaml").write_text(
        f"storage: {storage}\nchannels: {{{inline}}}\nhttp: {{port: 0}}\n"
    )
    feeds = "".join(
        f"  - {{id: f{i}, url: '{base}/{i}.xml'"
        + (f", channels: [{feed_channels[i]}]" if feed_channels else "")
        + "}\n"
        for i in range(count)
    )
    limit = "" if max_new_items is None else f", max_new_items: {max_new_items}"
    (directory / "feeds.yaml").write_text(
        f"defaults: {{every: 1m, match: [cybercrime]{limit}}}\nfeeds:\n" + feeds
    )
    return directory


def bot_env(**extra: str) -> dict[str, str]:
    """This process's environment without any platform credentials, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    env.update(extra)
    return env


def bot_command(config: Path, verb: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bot", verb, "--config", str(config), *extra]


def once(config: Path, env: Mapping[str, str], *extra: str, log: IO[bytes] | None = None) -> bytes:
    """`treaty-bot once` to the end; its stdout (or nothing, when it goes to ``log``)."""
    done = subprocess.run(
        bot_command(config, "once", *extra),
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT if log is not None else subprocess.PIPE,
        env=dict(env),
        cwd=REPO,
        timeout=ONCE_TIMEOUT,
        check=True,
    )
    return done.stdout or b""


def start_run(
    config: Path, env: Mapping[str, str], *extra: str, log: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """`treaty-bot run` in the background: stdout piped, or stdout and stderr to ``log``."""
    return subprocess.Popen(
        bot_command(config, "run", *extra),
        stdout=log if log is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT if log is not None else subprocess.DEVNULL,
        env=dict(env),
        cwd=REPO,
    )


def titles_in(text: str) -> list[str]:
    """The distinct item titles a posted message shows (one, for an alert about one item)."""
    return sorted(set(TITLE.findall(text)))


def assert_exactly_once(posted: Iterable[str], served: set[str], *, minimum: int) -> None:
    """Every served item was posted, none twice, nothing else; and enough were served."""
    counts = Counter(posted)
    duplicates = {t: c for t, c in counts.items() if c > 1}
    assert duplicates == {}, f"posted more than once: {duplicates}"
    lost = served - set(counts)
    assert lost == set(), f"served but never posted: {sorted(lost)}"
    assert set(counts) == served, f"posted but never served: {sorted(set(counts) - served)}"
    assert len(served) >= minimum, f"only {len(served)} items were served"
