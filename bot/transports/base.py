"""The transport seam.

Contract
--------
- ``start(on_command)`` connects (checking the credentials, saying clearly what is wrong by
  raising ``DeliveryError(permanent=True)``) and from then on passes every command addressed to
  the bot to ``on_command``, rendering the ``Answer`` it returns for the platform. ``stop()``
  disconnects; both are idempotent.
- ``send`` posts one alert to one logical channel and returns once the platform has accepted
  it. It raises ``DeliveryError`` on failure: ``permanent=True`` when retrying cannot help (no
  such channel, bad credentials), otherwise the outbox retries later with backoff.
- ``key`` is the outbox row's idempotency key; a transport that can (Matrix transaction ids,
  Slack message metadata) uses it so that a retried send is never shown twice.
- ``was_delivered`` answers, for a row left in ``sending`` by a crash, whether the platform
  already has it; a transport that cannot know returns ``False`` (the alert is sent again).
- ``problem()`` says why the transport is not connected right now, or ``None``.
- Text in an ``Alert`` or an ``Answer`` is plain and untrusted: the transport escapes it for its
  platform and never lets it mention anyone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from bot.domain.model import Alert, ChannelName
from bot.domain.text import Bullets, Paragraph, Rich, Span


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a platform can show: the longest text, whether it formats, how fast to post."""

    max_text: int
    rich: bool
    min_interval: float = 0.0  # seconds between two posts to one channel


@dataclass(frozen=True, slots=True)
class Inbound:
    """A command someone typed, as the transport received it (prefix removed)."""

    platform: str  # "console", "slack", "matrix"
    user: str  # the platform's user id (Slack U…, Matrix @user:server); "" on the console
    channel: str | None  # the platform's channel or room id, if any
    text: str
    #: what identifies this command on its platform, the same on every retry of it (a Matrix
    #: event id, a Slack trigger id): replicas answer each one once
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What to reply: neutral rich text; ``share`` asks for a reply visible to the channel."""

    title: str
    body: Rich
    share: bool = False
    #: another replica answers this command: the transport sends nothing
    elsewhere: bool = False
    #: about the asker alone (their follows): a platform that cannot show a reply to one
    #: person only sends it to them directly
    direct: bool = False


CommandHandler = Callable[[Inbound], Awaitable[Answer]]


class Transport(Protocol):
    name: str
    capabilities: Capabilities

    async def start(self, on_command: CommandHandler) -> None:
        """Connect and start taking commands (see the module contract)."""
        ...

    async def stop(self) -> None:
        """Disconnect. Idempotent."""
        ...

    def problem(self) -> str | None:
        """Why the transport is not connected now, or ``None`` when it is."""
        ...

    def reaches(self, channel: ChannelName) -> bool:
        """Whether this transport has an address for the logical channel."""
        ...

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        """Post ``alert`` to ``channel`` (see the module contract)."""
        ...

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        """Whether an earlier, interrupted ``send`` of this row reached the platform."""
        ...


def alert_rich(alert: Alert) -> Rich:
    """What an alert shows: its rich body, or its plain text and link."""
    if alert.body:
        return alert.body
    blocks: list[Paragraph | Bullets] = [
        Paragraph((Span(line),)) for line in alert.text.splitlines() if line.strip()
    ]
    if alert.url:
        blocks.append(Paragraph((Span(alert.url, "plain", alert.url),)))
    return tuple(blocks) or (Paragraph((Span(alert.title),)),)


def answer_rich(answer: Answer) -> Rich:
    """What an answer shows: its title in bold, then its body."""
    if answer.title:
        return (Paragraph((Span(answer.title, "bold"),)), *answer.body)
    return answer.body
