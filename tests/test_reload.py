"""Hot reload of a running bot: valid edits apply, broken ones are reported and ignored."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from tests.conftest import REPO
from tests.test_cli import publish, rss, write_config, www  # noqa: F401 - fixture


class Running:
    """A `treaty-bot run --format jsonl` process whose output lines are read as they come."""

    def __init__(self, config: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--config", str(config), "--format", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=REPO,
        )
        self.out: queue.Queue[str] = queue.Queue()
        self.err: queue.Queue[str] = queue.Queue()
        self.stderr_lines: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.threads = [
            threading.Thread(target=self._pump, args=(stream, q), daemon=True)
            for stream, q in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))
        ]
        for thread in self.threads:
            thread.start()

    @staticmethod
    def _pump(stream: IO[str], q: queue.Queue[str]) -> None:
        for line in stream:
            q.put(line)

    def alert(self, timeout: float = 60) -> dict[str, Any]:
        return dict(json.loads(self.out.get(timeout=timeout)))

    def log_line(self, needle: str, timeout: float = 60) -> str:
        while True:
            line = self.err.get(timeout=timeout)
            self.stderr_lines.append(line)
            if needle in line:
                return line

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for thread in self.threads:
                thread.join(timeout=10)
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self.proc.stdout.close()
            self.proc.stderr.close()


def test_edits_apply_and_broken_edits_keep_the_last_good_config(
    tmp_path: Path,
    www: tuple[Path, str],  # noqa: F811
) -> None:
    root, base = www
    config = write_config(tmp_path / "cfg", base, tmp_path / "state.json")
    publish(root / "news.xml", rss(("1", "Cybercrime one")))
    publish(root / "other.xml", rss(("a", "Anything")))
    publish(root / "added.xml", rss(("x", "Added feed item")))
    bot = Running(config)
    try:
        bot.log_line("running")
        feeds = (config / "feeds.yaml").read_text()

        # a broken edit: reported with file and line, an ops alert, the bot keeps going
        (config / "feeds.yaml").write_text(feeds + "  - {id: bad, url: ftp://nope}\n")
        line = bot.log_line("configuration not applied")
        assert "feeds.yaml:6: feeds[2].url" in line
        problem = bot.alert()
        assert problem["kind"] == "source-health" and problem["channel"] == "ops"
        assert problem["source"] == "config" and "feeds.yaml:6" in problem["text"]

        # a valid edit: the new feed is polled (backfill posts its newest item)
        (config / "feeds.yaml").write_text(
            feeds + f'  - {{id: added, url: "{base}/added.xml", backfill: 1, match: []}}\n'
        )
        bot.log_line("configuration reloaded")
        added = bot.alert()
        assert (added["source"], added["title"]) == ("added", "Added feed item")

        # SIGHUP reloads too; a clause edit becomes an alert
        (config / "clauses.yaml").write_text(
            "clauses:\n  - {id: art-4, article: '4', title: Scope, status: open}\n"
        )
        bot.proc.send_signal(signal.SIGHUP)
        tracked = bot.alert()
        assert tracked["kind"] == "clause-change" and "new → open" in tracked["text"]
        (config / "clauses.yaml").write_text(
            "clauses:\n  - {id: art-4, article: '4', title: Scope, status: contested}\n"
        )
        bot.proc.send_signal(signal.SIGHUP)
        clause = bot.alert()
        assert clause["kind"] == "clause-change" and "open → contested" in clause["text"]
    finally:
        code = bot.stop()
    assert code == 0
