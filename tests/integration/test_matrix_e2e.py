"""The real `treaty-bot run` process with MATRIX_* set, against a real Synapse."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from nio import Event

from tests.conftest import REPO
from tests.integration.synapse import Synapse, synapse  # noqa: F401 - the fixture
from tests.integration.test_matrix import Peer, content_of, reply_to
from tests.test_cli import publish, rss, www  # noqa: F401 - the fixture


@pytest.fixture
def bot_process() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def start_bot(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )


async def test_run_posts_alerts_once_and_answers_commands(
    synapse: Synapse,  # noqa: F811
    www: tuple[Path, str],  # noqa: F811
    tmp_path: Path,
    bot_process: list[subprocess.Popen[bytes]],
) -> None:
    root, base = www
    bot = synapse.register()
    member = synapse.register()
    async with Peer(synapse, member) as peer:
        room = await peer.create_room([bot.user_id])
        config = tmp_path / "cfg"
        config.mkdir()
        (config / "bot.yaml").write_text(
            textwrap.dedent(
                f"""
                timezone: Europe/Vienna
                storage: {tmp_path / "data" / "state.json"}
                channels:
                  alerts: {{matrix: "{room}"}}
                  ops: {{}}
                http: {{port: 0}}
                """
            )
        )
        (config / "feeds.yaml").write_text(
            f'feeds:\n  - {{id: news, url: "{base}/news.xml", backfill: 1, match: []}}\n'
        )
        (config / "sessions.yaml").write_text(
            "sessions:\n  - {id: close, title: Close of signature, kind: deadline,"
            " start: 2036-12-31T10:00, timezone: America/New_York}\n"
        )
        publish(root / "news.xml", rss(("1", "Treaty news @room <b>bold</b>")))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        env.update(
            MATRIX_HOMESERVER=synapse.base_url,
            MATRIX_USER_ID=bot.user_id,
            MATRIX_ACCESS_TOKEN=bot.access_token,
        )
        proc = await asyncio.to_thread(start_bot, config, env, tmp_path / "bot.log")
        bot_process.append(proc)

        def is_alert(event: Event) -> bool:
            return "Treaty news" in str(content_of(event).get("body", ""))

        alert = await peer.wait_for(room, is_alert)
        content = content_of(alert)
        assert content["msgtype"] == "m.notice" and content["m.mentions"] == {}
        assert "<b>bold</b>" not in content.get("formatted_body", "")
        assert "@room" not in content["body"]  # neutralised, so it pings nobody

        asked = await peer.say(room, "!treaty next-session")
        answer = await peer.wait_for(room, reply_to(asked))
        assert "Close of signature" in content_of(answer)["body"]

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        output = (tmp_path / "bot.log").read_text()
        assert code == 0, output
        assert bot.access_token not in output
        assert len(peer.seen(room, is_alert)) == 1
