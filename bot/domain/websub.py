"""WebSub subscriptions (W3C Recommendation, 23 January 2018): pure decisions.

A feed that names a hub is subscribed to at that hub; the hub then pushes each new version of
the feed to the bot's callback. What is decided here, without I/O:

- which request (subscribe, renew, unsubscribe) is due for a subscription, and when;
- which intent verification to confirm: only a mode and topic the bot asked for and is waiting
  on; anything else is refused;
- how a hub that is down or refuses is retried (backoff, doubling up to a cap);
- which secrets a content distribution may be signed with.

Subscriptions live in memory: a restart subscribes again with a fresh secret.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Mode = Literal["subscribe", "unsubscribe"]

#: The lease asked for; the hub decides and says so in its verification.
LEASE = timedelta(days=7)
#: Without ``hub.lease_seconds`` in the verification, the lease is taken to be this long.
DEFAULT_LEASE = timedelta(days=1)
#: A subscription is renewed when a tenth of its lease is left (at least this much before).
RENEW_MARGIN = timedelta(minutes=5)
#: A request whose verification has not come within this long is a failed one.
VERIFY_WITHIN = timedelta(minutes=10)
#: The first retry after a failed request, doubled per failure up to ``RETRY_CAP``.
RETRY_FIRST = timedelta(minutes=1)
RETRY_CAP = timedelta(hours=6)
#: An unsubscription is given up after this many failed attempts.
UNSUBSCRIBE_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Hub:
    """Where a feed is pushed from: the hub's URL and the topic (the feed's self URL)."""

    url: str
    topic: str


@dataclass(frozen=True, slots=True)
class Request:
    """A request sent to a hub, waiting for the hub's intent verification."""

    mode: Mode
    secret: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Subscription:
    """One feed's subscription at its hub."""

    feed: str
    hub: Hub
    #: the secret deliveries are signed with, and until when the hub pushes (once verified)
    secret: str | None = None
    expires: datetime | None = None
    lease: timedelta | None = None
    pending: Request | None = None
    failures: int = 0
    retry_at: datetime | None = None
    #: the feed left the configuration: the subscription is being ended
    removed: bool = False

    def active(self, now: datetime) -> bool:
        """Whether the hub pushes this feed now (a verified lease that has not run out)."""
        return not self.removed and self.expires is not None and now < self.expires


@dataclass(frozen=True, slots=True)
class Verification:
    """The answer to an intent verification: the challenge is echoed only when ``confirmed``;
    ``subscription`` is what to keep (``None``: forget it)."""

    confirmed: bool
    subscription: Subscription | None


def backoff(failures: int) -> timedelta:
    """How long to leave a hub alone after ``failures`` failed requests in a row."""
    if failures <= 0:
        return timedelta(0)
    return min(RETRY_CAP, RETRY_FIRST * float(2 ** min(failures - 1, 20)))


def renew_at(sub: Subscription) -> datetime | None:
    """When a verified subscription is renewed: a tenth of its lease before it runs out."""
    if sub.expires is None:
        return None
    lease = sub.lease or DEFAULT_LEASE
    return sub.expires - max(lease / 10, RENEW_MARGIN)


def lapse(sub: Subscription, now: datetime) -> Subscription:
    """A request whose verification never came counts as a failure."""
    if sub.pending is not None and now - sub.pending.sent_at >= VERIFY_WITHIN:
        return refused(sub, now)
    return sub


def next_request(sub: Subscription, now: datetime) -> Mode | None:
    """The request to send for ``sub`` now, if any."""
    if sub.pending is not None:
        return None
    if sub.retry_at is not None and now < sub.retry_at:
        return None
    if sub.removed:
        return "unsubscribe"
    due = renew_at(sub)
    if due is None or now >= due:
        return "subscribe"
    return None


def wake_at(sub: Subscription) -> datetime | None:
    """When ``sub`` next needs attention (a retry, a renewal, a verification that is late)."""
    if sub.pending is not None:
        return sub.pending.sent_at + VERIFY_WITHIN
    if sub.retry_at is not None:
        return sub.retry_at
    return renew_at(sub)


def requested(sub: Subscription, mode: Mode, secret: str, now: datetime) -> Subscription:
    """``sub`` once a request has been sent (it waits for its verification)."""
    return replace(sub, pending=Request(mode, secret, now))


def refused(sub: Subscription, now: datetime) -> Subscription:
    """``sub`` after a request failed (the hub is down, refused, or never verified)."""
    failures = sub.failures + 1
    return replace(sub, pending=None, failures=failures, retry_at=now + backoff(failures))


def given_up(sub: Subscription) -> bool:
    """An unsubscription that failed too often is dropped (the lease runs out anyway)."""
    return sub.removed and sub.failures >= UNSUBSCRIBE_ATTEMPTS


def removal(sub: Subscription) -> Subscription | None:
    """``sub`` once its feed left the configuration: to be unsubscribed if the hub may push
    it (or is about to), else forgotten."""
    if sub.expires is None and sub.pending is None:
        return None
    return replace(sub, removed=True, pending=None, failures=0, retry_at=None)


def verify(
    sub: Subscription | None,
    mode: str,
    topic: str,
    lease_seconds: str | None,
    now: datetime,
) -> Verification:
    """Confirm a verification only for the mode and topic of the request the bot is waiting
    on; a denial of that request is acknowledged and counts as a refusal."""
    if sub is None or sub.pending is None or topic != sub.hub.topic:
        return Verification(False, sub)
    if mode == "denied" and sub.pending.mode == "subscribe":
        return Verification(True, refused(sub, now))
    if mode != sub.pending.mode:
        return Verification(False, sub)
    if mode == "unsubscribe":
        return Verification(True, None)
    lease = DEFAULT_LEASE
    if lease_seconds is not None and lease_seconds.strip().isdigit():
        lease = timedelta(seconds=min(int(lease_seconds), 10 * 365 * 86400))
    return Verification(
        True,
        replace(
            sub,
            secret=sub.pending.secret,
            expires=now + lease,
            lease=lease,
            pending=None,
            failures=0,
            retry_at=None,
        ),
    )


def secrets_for(sub: Subscription | None) -> tuple[str, ...]:
    """The secrets a delivery for ``sub`` may be signed with: the verified one, and the one of
    a renewal in flight (the hub switches when it verifies)."""
    if sub is None or sub.removed:
        return ()
    found = [sub.secret] if sub.secret is not None else []
    if sub.pending is not None and sub.pending.mode == "subscribe":
        found.append(sub.pending.secret)
    return tuple(found)
