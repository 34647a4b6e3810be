"""The real `treaty-bot run` process with SLACK_* set, against the loopback Slack stand-in."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import REPO
from tests.integration.slack_standin import APP_TOKEN, BOT_TOKEN, SlackStandIn
from tests.test_cli import publish, rss, www  # noqa: F401 - the fixture

#: What would notify people in Slack: a literal ``<`` opening a special or user mention
#: (``<!channel>``, ``<!here>``, ``<!everyone>``, ``<!subteam^…>``, ``<@U…>``, ``<@W…>``),
#: whatever follows it (``<!channel>``, ``<!channel&gt;``, ``<!here|here>``), and a broadcast
#: word whose ``@`` is not followed by the word joiner the bot puts there. The escaped form
#: ``&lt;!channel&gt;`` shows the text and notifies nobody.
MENTION = re.compile(r"<[!@]|@(?:channel|here|everyone)\b", re.IGNORECASE)


def strings(value: Any) -> Iterator[str]:
    """Every string in a message: its text and each text of its blocks."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def test_run_posts_once_and_answers_the_slash_command(
    tmp_path: Path,
    www: tuple[Path, str],  # noqa: F811
) -> None:
    root, base = www
    config = tmp_path / "cfg"
    config.mkdir()
    (config / "bot.yaml").write_text(
        textwrap.dedent(
            f"""
            timezone: Europe/Vienna
            storage: {tmp_path / "data" / "state.json"}
            channels:
              alerts: {{slack: C0ALERTS}}
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
    publish(root / "news.xml", rss(("1", "Treaty news &lt;!channel&gt; @here")))
    with SlackStandIn() as slack:
        slack.add_channel("C0ALERTS", "alerts")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MATRIX_"))}
        env.update(
            SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_APP_TOKEN=APP_TOKEN, SLACK_API_URL=slack.api_url
        )
        with (tmp_path / "bot.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bot", "run", "--config", str(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=REPO,
            )
        try:
            slack.sync(slack.wait_connected())
            [post] = slack.sync(slack.wait_for_calls("chat.postMessage"))
            assert post.token == BOT_TOKEN and post.params["channel"] == "C0ALERTS"
            [posted] = slack.messages("C0ALERTS")
            assert "Treaty news" in posted.text
            # shown as typed, never pinging: in the text and in every block
            texts = list(strings([posted.text, posted.blocks]))
            assert [m.group() for t in texts for m in MENTION.finditer(t)] == [], texts
            assert "&lt;!channel&gt; @\u2060here" in posted.text
            assert any("&lt;!channel&gt;" in t for t in strings(posted.blocks)), posted.blocks
            command = slack.slash_command("next-session")
            ack = slack.sync(slack.send_command(command))
            assert ack.payload is None  # an empty ack: the answer follows on the response_url
            answer = slack.sync(slack.wait_response(command.response))
            assert "Close of signature" in str(answer)
            assert answer.get("response_type") == "ephemeral"
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = (tmp_path / "bot.log").read_text()
        assert code == 0, output
        assert BOT_TOKEN not in output and APP_TOKEN not in output
        assert slack.messages("C0ALERTS") == [posted]
        assert [c.status for c in slack.calls_to("chat.postMessage")] == [200]
