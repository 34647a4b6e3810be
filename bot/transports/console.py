"""The embedded default: alerts printed to the terminal, as text or as JSON lines."""

from __future__ import annotations

import json
import re
import sys
from typing import Literal, TextIO
from zoneinfo import ZoneInfo

from bot.domain.model import Alert, ChannelName
from bot.domain.text import render_plain
from bot.domain.timefmt import format_local
from bot.transports.base import Capabilities, CommandHandler

Format = Literal["text", "jsonl"]
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Drop control characters (escape sequences could rewrite the operator's terminal)."""
    return _CONTROL.sub("", text)


def alert_json(alert: Alert, channel: str) -> str:
    """One alert as SPEC's JSON line."""
    return json.dumps(
        {
            "kind": alert.kind,
            "id": alert.id,
            "channel": channel,
            "source": alert.source,
            "title": alert.title,
            "url": alert.url,
            "text": alert.text,
            "at": alert.at.isoformat().replace("+00:00", "Z"),
        },
        ensure_ascii=False,
    )


def alert_text(alert: Alert, channel: str, tz: ZoneInfo) -> str:
    head = f"── {alert.kind} → #{channel} · {format_local(alert.at, tz)}"
    body = render_plain(alert.body) if alert.body else alert.text
    return (
        terminal_safe(head)
        + "\n"
        + "\n".join("  " + terminal_safe(line) for line in body.splitlines())
    )


class ConsoleTransport:
    """Prints every alert of every channel; never fails, never mentions anyone."""

    name = "console"
    capabilities = Capabilities(max_text=100_000, rich=False)

    def __init__(
        self, *, fmt: Format = "text", tz: ZoneInfo | None = None, stream: TextIO | None = None
    ) -> None:
        self.fmt = fmt
        self.tz = tz or ZoneInfo("UTC")
        self._stream = stream
        self._on_command: CommandHandler | None = None

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    async def start(self, on_command: CommandHandler) -> None:
        self._on_command = on_command

    async def stop(self) -> None:
        self._on_command = None

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return True

    def render(self, alert: Alert, channel: str) -> str:
        if self.fmt == "jsonl":
            return alert_json(alert, channel)
        return alert_text(alert, channel, self.tz)

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        self.stream.write(self.render(alert, channel) + "\n")
        self.stream.flush()

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        return False

    def say(self, text: str) -> None:
        """Print an answer or a notice (not an alert); suppressed in JSON lines mode."""
        if self.fmt == "text":
            self.stream.write(terminal_safe(text) + "\n")
            self.stream.flush()
