"""SIGTERM while a send waits on a rate limit: the bot stops in order, the alert is kept, and
it is sent once at the next start.

The bot runs in a process of its own (``App.run``, as ``treaty-bot run`` runs it, with a
platform whose every post waits as on a long Retry-After) and gets a real SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bot.app import App
from bot.configuration import load_config
from bot.domain.model import Alert, ChannelName
from bot.store.tinydb_store import TinyDBStore
from bot.transports.base import Capabilities, CommandHandler
from tests.conftest import REPO, ConfigFactory
from tests.test_cli import publish, rss, www  # noqa: F401 - the fixture

#: The deadline of every wait; it only turns a hang into a failure.
WAIT = 30.0

#: The bot's process: ``App.run`` with a platform that holds every post (as a rate limit
#: would) until the process ends, a shutdown budget of half a second, and a line on stdout at
#: each step of the life cycle that the log does not show.
RUN = """
import asyncio, sys
import bot.app
from bot.app import App
from bot.configuration import load_config
from bot.logs import setup_logging
from bot.transports.base import Capabilities


class RateLimited:
    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    async def start(self, on_command):
        print("transport started", flush=True)

    async def stop(self):
        print("transport stopped", flush=True)

    def problem(self):
        return None

    def reaches(self, channel):
        return True

    async def send(self, channel, alert, key):
        print("post held:", alert.title, flush=True)
        await asyncio.Event().wait()  # the rate limit outlasts the stop

    async def was_delivered(self, channel, alert, key):
        return False


async def main():
    async with App(load_config(sys.argv[1]), transports={"fake": RateLimited()}) as app:
        await app.run()
        print("run returned", flush=True)
    print("closed", flush=True)


bot.app.SHUTDOWN_BUDGET = 0.5
setup_logging("info")
asyncio.run(main())
"""


class Output:
    """The lines a process writes (stdout and stderr together), read by a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, text: str) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: any(text in line for line in self.lines), WAIT)
        assert found, f"the bot did not say {text!r}:\n" + "\n".join(self.lines)

    def finish(self) -> list[str]:
        self._thread.join(WAIT)
        return list(self.lines)


class Posting:
    """A platform that posts at once."""

    name = "fake"
    capabilities = Capabilities(max_text=1000, rich=False)

    def __init__(self) -> None:
        self.posted: list[str] = []

    async def start(self, on_command: CommandHandler) -> None:
        pass

    async def stop(self) -> None:
        pass

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return True

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        self.posted.append(alert.title)

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return False


def run_until_sigterm(directory: Path) -> tuple[int, list[str]]:
    """Start the bot's process, SIGTERM it once a post is held; its exit code and output."""
    with subprocess.Popen(
        [sys.executable, "-c", RUN, str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    ) as proc:
        output = Output(proc)
        try:
            output.wait_for("post held: Cybercrime treaty signed")
            assert proc.poll() is None
            proc.send_signal(signal.SIGTERM)
            return proc.wait(WAIT), output.finish()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            output.finish()


def first_index(lines: list[str], text: str) -> int:
    return next(i for i, line in enumerate(lines) if text in line)


async def test_sigterm_during_a_rate_limit_stops_in_order_and_keeps_the_alert(
    config_dir: ConfigFactory,
    www: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, base = www
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed")))
    directory = config_dir(feeds=f'feeds:\n  - {{id: news, url: "{base}/news.xml", backfill: 1}}\n')
    code, lines = await asyncio.to_thread(run_until_sigterm, directory)
    assert code == 0, "\n".join(lines)
    # in order: the stop is logged; what is due is tried once more within the budget (and is
    # still held); the budget runs out and says the alert is kept; the platform is let go;
    # run returns, and leaving the App closes the store
    order = [
        "bot.app stopping",
        "post held: Cybercrime treaty signed",
        "stopping before every alert was sent; they are kept for the next start",
        "transport stopped",
        "run returned",
        "closed",
    ]
    stopping = first_index(lines, order[0])
    at = [stopping] + [stopping + first_index(lines[stopping:], text) for text in order[1:]]
    assert at == sorted(at), "\n".join(lines)
    assert not any("Traceback" in line or "level=error" in line for line in lines), "\n".join(lines)

    # what the store holds: the alert, kept and not marked sent
    store = TinyDBStore(tmp_path / "state.json", read_only=True)
    try:
        [kept] = store.deliveries(("pending", "sending", "sent", "failed"))
    finally:
        store.close()
    assert kept.alert.title == "Cybercrime treaty signed" and kept.state != "sent"

    config = load_config(directory)
    second = Posting()
    async with App(config, transports={"fake": second}) as app:
        await app.once()
    assert second.posted == ["Cybercrime treaty signed"]

    third = Posting()
    async with App(config, transports={"fake": third}) as app:
        await app.once()
    assert third.posted == []  # once, not twice


#: ``treaty-bot run`` whose process gets a SIGTERM as it opens its store, before ``App.run``
#: has installed handlers of its own: the moment a deployment stops a replica that is starting.
TERM_WHILE_STARTING = """
import os, signal, sys
import bot.app
from bot.cli import main

opening = bot.app.App.__aenter__


async def enter(self):
    os.kill(os.getpid(), signal.SIGTERM)
    print("signalled", flush=True)
    return await opening(self)


bot.app.App.__aenter__ = enter
sys.exit(main(["run", "--config", sys.argv[1]]))
"""


def test_sigterm_while_run_starts_is_a_clean_stop(
    config_dir: ConfigFactory,
    www: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    root, base = www
    publish(root / "news.xml", rss(("1", "Cybercrime treaty signed")))
    directory = config_dir(feeds=f'feeds:\n  - {{id: news, url: "{base}/news.xml"}}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
    done = subprocess.run(
        [sys.executable, "-c", TERM_WHILE_STARTING, str(directory)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=WAIT,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output  # not -15: the signal's default action
    assert "signalled" in done.stdout  # the signal came before run's own handlers
    said = [line for line in output.splitlines() if "stop asked while starting" in line]
    assert said and first_index(output.splitlines(), "stop asked while starting") < first_index(
        output.splitlines(), "bot.app stopping"
    ), output
    assert "Traceback" not in output, output
    # the store was closed in order: its lock is free for the next process
    store = TinyDBStore(tmp_path / "state.json")
    store.close()
