"""`kill -9` at random moments loses no alert and posts none twice (console transport)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from tests.conftest import REPO
from tests.crashfeeds import (
    FEEDS,
    assert_exactly_once,
    bot_command,
    bot_env,
    growing_feeds,
    once,
    start_run,
    titles_in,
    write_config,
)


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    with growing_feeds() as (state, base):
        config = write_config(tmp_path / "cfg", storage=tmp_path / "state.json", base=base)
        env = bot_env()
        printed: list[str] = []
        rng = random.Random(20261128)

        def collect(out: bytes) -> None:
            # every item an alert shows: its own, or each one a grouped message lists (a poll
            # that finds more than max_new_items new items)
            for line in out.decode().splitlines():
                if line.strip():
                    printed.extend(titles_in(json.loads(line)["text"]))

        # the first poll of each feed only remembers what exists: recorded by a clean round
        # first, so that every item served afterwards must be posted (a kill before a first poll
        # is recorded makes the next poll the first one, which rightly posts nothing)
        collect(once(config, env, "--format", "jsonl"))
        for _ in range(20):
            proc = start_run(config, env, "--format", "jsonl")
            time.sleep(rng.uniform(0.5, 4.0))  # fault injection: the kill lands anywhere
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            collect(out)
        # a last, clean round delivers whatever the kills left behind
        for _ in range(2):
            collect(once(config, env, "--format", "jsonl"))

    # every item the server ever served was posted, except those of each feed's first (empty)
    # poll, which only remembers
    assert_exactly_once(printed, state.snapshot(), minimum=FEEDS * 3 + 1)
    with open(tmp_path / "state.json") as handle:
        json.load(handle)  # and the state file is whole


def rows_in(state_file: Path, wanted: str) -> set[str]:
    """The keys of the outbox rows in state ``wanted`` (none while the file is unreadable)."""
    try:
        with open(state_file) as handle:
            outbox = json.load(handle).get("outbox", {})
    except (OSError, ValueError):
        return set()
    return {row["key"] for row in outbox.values() if row.get("state") == wanted}


class Run:
    """`treaty-bot run` whose standard output a thread drains as it comes (a terminal)."""

    def __init__(self, config: Path, env: dict[str, str], log: IO[bytes]) -> None:
        self.proc = subprocess.Popen(
            bot_command(config, "run", "--format", "jsonl"),
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=REPO,
        )
        self.lines: list[bytes] = []
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def kill(self) -> bytes:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.reader.join(timeout=30)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return b"".join(self.lines)


def test_sigkill_during_quiet_hours_and_its_split_release(tmp_path: Path) -> None:
    """Kills while alerts are held, while the held ones are released as several messages,
    and while messages are being printed: nothing lost, nothing twice.

    The last kills are aimed: the test watches the state file and kills the bot as soon as
    rows are marked "sending", so that a restart has rows to check before printing them again
    (the test requires that some were checked)."""
    start = datetime.now(UTC)
    quiet_end = (start + timedelta(seconds=75)).replace(second=0, microsecond=0) + timedelta(
        minutes=1
    )
    frm = (start - timedelta(hours=1)).strftime("%H:%M")
    state_file = tmp_path / "state.json"
    with growing_feeds(per_request=6) as (state, base):
        config = write_config(tmp_path / "cfg", storage=state_file, base=base)
        text = (config / "bot.yaml").read_text()
        (config / "bot.yaml").write_text(
            "timezone: UTC\n"
            + text.replace(
                "alerts: {}",
                f'alerts: {{quiet: {{from: "{frm}", to: "{quiet_end:%H:%M}"}}}}',
            )
        )
        env = bot_env()
        printed: list[str] = []
        released: list[str] = []
        log_path = tmp_path / "runs.log"
        rng = random.Random(20261203)

        def collect(out: bytes) -> None:
            for line in out.decode(errors="replace").splitlines():
                try:
                    alert = json.loads(line)
                except ValueError:
                    continue  # the line a kill cut short was never printed whole
                if alert["source"] == "quiet":
                    released.append(alert["title"])
                # one item, or every item of a grouped message
                printed.extend(titles_in(alert["title"] + "\n" + alert["text"]))

        def checked() -> int:
            return log_path.read_text(errors="replace").count("interrupted row checked")

        collect(once(config, env, "--format", "jsonl"))
        with open(log_path, "wb") as log:
            # while quiet, and when the quiet hours end: kills anywhere
            while datetime.now(UTC) < quiet_end + timedelta(seconds=5):
                run = Run(config, env, log)
                time.sleep(rng.uniform(1.0, 5.0))  # fault injection: the kill lands anywhere
                collect(run.kill())
            # aimed kills: as soon as the state file shows rows on their way out
            for _ in range(12):
                log.flush()
                if checked() >= 3:
                    break
                before = rows_in(state_file, "sending")  # left by the last kill
                run = Run(config, env, log)
                deadline = time.monotonic() + 20
                while not (rows_in(state_file, "sending") - before) and (
                    time.monotonic() < deadline
                ):
                    pass  # watching the state file, as fast as it can be read
                collect(run.kill())
        # clean rounds deliver whatever the kills left behind
        for _ in range(2):
            collect(once(config, env, "--format", "jsonl"))

    assert_exactly_once(printed, state.snapshot(), minimum=FEEDS * 12)
    assert any("(part 2 of" in title for title in released), released  # a split release
    assert checked() > 0, "no kill landed between a row's sending and sent marks"
