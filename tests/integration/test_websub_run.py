"""WebSub in ``treaty-bot run`` as deployed: the bot's own process, its own web server on the
port bot.yaml names, a hub written from the specification and a feed on loopback. The feed is
polled every 6 hours, so an item that reaches the channel within the test came by push."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import textwrap
import time
from pathlib import Path

from tests.conftest import REPO
from tests.integration.feedserver import FeedServer
from tests.integration.test_websub import rss
from tests.integration.websubhub import WebSubHub

WAIT = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def logged(path: Path, text: str) -> None:
    deadline = time.monotonic() + WAIT
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"no {text!r} in the log"
        time.sleep(0.05)  # reading a log file, under the deadline above


class Bot:
    """``treaty-bot run --format jsonl``: its lines read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []

    async def posted(self, title: str) -> None:
        assert self.proc.stdout is not None
        async with asyncio.timeout(WAIT):
            while not any(line.get("title") == title for line in self.lines):
                raw = await self.proc.stdout.readline()
                assert raw, "the bot stopped"
                if raw.startswith(b"{"):
                    self.lines.append(json.loads(raw))

    def titles(self) -> list[object]:
        return [line.get("title") for line in self.lines if line.get("source") == "unodc"]


async def test_run_subscribes_and_posts_a_pushed_item_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "bot.log"
    async with FeedServer() as server, WebSubHub() as hub:
        topic = server.url("/feed.xml")
        server.serve("/feed.xml", rss(hub.url, topic, "a"))
        config = tmp_path / "config"
        config.mkdir()
        (config / "bot.yaml").write_text(
            textwrap.dedent(
                f"""
                timezone: Europe/Vienna
                storage: {tmp_path / "state.json"}
                channels:
                  alerts: {{}}
                http: {{host: 127.0.0.1, port: {port}, public_url: "http://127.0.0.1:{port}"}}
                """
            )
        )
        (config / "feeds.yaml").write_text(
            f"feeds:\n  - {{id: unodc, url: '{topic}', every: 6h, channels: [alerts]}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                "--config",
                str(config),
                "--format",
                "jsonl",
                cwd=REPO,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        bot = Bot(proc)
        try:
            # the first poll finds the hub; the bot subscribes and confirms the hub's check
            await hub.wait_until(lambda: hub.subscribed(topic) is not None, within=WAIT)
            subscription = hub.subscribed(topic)
            assert subscription is not None
            assert subscription.callback == f"http://127.0.0.1:{port}/websub/unodc"
            assert await hub.publish(topic, rss(hub.url, topic, "a", "b")) == [202]
            await bot.posted("Cybercrime update b")
            # a forged push is answered like any other and posts nothing
            forged = rss(hub.url, topic, "a", "b", "c")
            assert await hub.publish(topic, forged, signature="sha256=" + "0" * 64) == [202]
            assert await hub.publish(topic, rss(hub.url, topic, "a", "b", "d")) == [202]
            await bot.posted("Cybercrime update d")
            assert bot.titles() == ["Cybercrime update b", "Cybercrime update d"]
            assert len(server.requests_to("/feed.xml")) == 1  # one poll: the rest came by push
            # the log says when every source has had its first poll
            await asyncio.to_thread(logged, log, "first poll of every source done sources=1 ")
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                async with asyncio.timeout(WAIT):
                    await proc.wait()
        assert proc.returncode == 0, log.read_text()[-3000:]
