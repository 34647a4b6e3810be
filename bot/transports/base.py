"""The transport seam.

Contract
--------
- ``send`` posts one alert to one logical channel and returns once the platform has accepted
  it. It raises ``DeliveryError`` on failure: ``permanent=True`` when retrying cannot help (no
  such channel, bad credentials), otherwise the outbox retries later with backoff.
- ``key`` is the outbox row's idempotency key; a transport that can (Matrix transaction ids,
  Slack message metadata) uses it so that a retried send is never shown twice.
- ``was_delivered`` answers, for a row left in ``sending`` by a crash, whether the platform
  already has it; a transport that cannot know returns ``False`` (the alert is sent again).
- Text in an ``Alert`` is plain and untrusted: the transport escapes it for its platform and
  never lets it mention anyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.domain.model import Alert, ChannelName


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a platform can show: the longest text, whether it formats, how fast to post."""

    max_text: int
    rich: bool
    min_interval: float = 0.0  # seconds between two posts to one channel


class Transport(Protocol):
    name: str
    capabilities: Capabilities

    def reaches(self, channel: ChannelName) -> bool:
        """Whether this transport has an address for the logical channel."""
        ...

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        """Post ``alert`` to ``channel`` (see the module contract)."""
        ...

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        """Whether an earlier, interrupted ``send`` of this row reached the platform."""
        ...


def transport_problem(transport: Transport) -> str | None:
    """Why a transport is not connected, or ``None`` (transports without a check are fine)."""
    check = getattr(transport, "problem", None)
    result = check() if callable(check) else None
    return result if isinstance(result, str) else None
