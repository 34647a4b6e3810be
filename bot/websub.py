"""The WebSub subscriber: the role of the running bot that keeps feeds subscribed at their hubs
and takes what the hubs push.

- A feed polled with a hub in its links is subscribed to (when ``http.public_url`` is set), at
  ``<public_url>/websub/<feed id>``, with a fresh secret per request; the subscription is
  renewed before its lease runs out, and ended only when the feed leaves the configuration.
- A hub that is down or refuses is retried later, with backoff; polling goes on meanwhile.
- Intent verifications are confirmed only for what the bot asked for and waits on.
- A content distribution is taken only with a valid signature; the body is then planned by
  the app exactly like a polled one.

Subscriptions live in memory; a restart subscribes again (with new secrets). The decisions are
in ``bot.domain.websub``; the HTTP requests and signature checks in ``bot.sources.websub``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import timedelta
from urllib.parse import quote

from bot.clock import Clock
from bot.domain import websub as decide
from bot.domain.websub import Hub, Subscription
from bot.metrics import WEBSUB_OUTCOMES, Metrics
from bot.sources.websub import HubAccepted, HubAnswer, new_secret, signature_valid

log = logging.getLogger(__name__)

#: Where the callbacks are served: ``<public_url>/websub/<feed id>``.
CALLBACK_PATH = "/websub/"
#: The subscriber looks at its subscriptions at least this often (seconds).
LOOK_EVERY = 60.0

HubRequest = Callable[[str, Mapping[str, str]], Awaitable[HubAnswer]]
#: Plans a pushed body (feed id, body, content type) like a polled one.
PushHandler = Callable[[str, bytes, str | None], Awaitable[object]]


class WebSubSubscriber:
    def __init__(
        self,
        clock: Clock,
        metrics: Metrics,
        request: HubRequest,
        push: PushHandler,
        public_url: str | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = metrics
        self._request = request
        self._push = push
        #: where the hubs reach the bot (``http.public_url``); no subscriptions without it
        self.public_url = public_url
        self.subscriptions: dict[str, Subscription] = {}
        #: the feeds whose links were looked at since start
        self._examined: set[str] = set()
        self.kick = asyncio.Event()

    # -- what the polling side asks and tells -----------------------------------------------

    @property
    def enabled(self) -> bool:
        return bool(self.public_url)

    def needs_discovery(self, feed: str) -> bool:
        """Whether the next poll of ``feed`` should fetch it whole and look for its hub."""
        return self.enabled and feed not in self._examined

    def discovered(self, feed: str, hub: Hub | None) -> None:
        """A poll looked at ``feed``'s links: subscribe to the hub it names (a feed that no
        longer names one keeps its subscription until the lease runs out)."""
        self._examined.add(feed)
        if hub is None or not self.enabled:
            return
        current = self.subscriptions.get(feed)
        if current is not None and current.hub == hub and not current.removed:
            return
        log.info("websub hub found source=%s hub=%s topic=%s", feed, hub.url, hub.topic)
        self.subscriptions[feed] = Subscription(feed, hub)
        for outcome in WEBSUB_OUTCOMES:
            self.metrics.websub_deliveries.labels(source=feed, outcome=outcome)
        self.kick.set()

    def pushed(self, feed: str) -> bool:
        """Whether the hub pushes ``feed`` now (polling is then only the safety net)."""
        sub = self.subscriptions.get(feed)
        return sub is not None and sub.active(self.clock.now())

    def removed(self, feeds: Collection[str]) -> None:
        """Feeds that left the configuration: end their subscriptions at the hub."""
        for feed in feeds:
            self._examined.discard(feed)
            sub = self.subscriptions.pop(feed, None)
            if sub is None:
                continue
            ending = decide.removal(sub)
            if ending is not None:
                self.subscriptions[feed] = ending
                self.kick.set()
        self._count_active()

    def callback(self, feed: str) -> str:
        base = (self.public_url or "").rstrip("/")
        return base + CALLBACK_PATH + quote(feed, safe="")

    # -- requests to hubs --------------------------------------------------------------------

    async def run_due(self) -> timedelta:
        """Send the requests that are due; return how long until something is due next."""
        now = self.clock.now()
        for feed in list(self.subscriptions):
            sub = self.subscriptions.get(feed)
            if sub is None:
                continue
            sub = decide.lapse(sub, now)
            if decide.given_up(sub):
                log.warning("websub unsubscription given up source=%s hub=%s", feed, sub.hub.url)
                del self.subscriptions[feed]
                continue
            self.subscriptions[feed] = sub
            mode = decide.next_request(sub, now)
            if mode is None or (mode == "subscribe" and not self.enabled):
                continue
            await self._send(sub, mode)
        self._count_active()
        wakes = [w for s in self.subscriptions.values() if (w := decide.wake_at(s)) is not None]
        now = self.clock.now()
        wait = min((w - now for w in wakes), default=timedelta(seconds=LOOK_EVERY))
        return min(max(wait, timedelta(seconds=1)), timedelta(seconds=LOOK_EVERY))

    async def _send(self, sub: Subscription, mode: decide.Mode) -> None:
        secret = new_secret()
        now = self.clock.now()
        # waiting before the request is sent: a hub may verify before it answers
        self.subscriptions[sub.feed] = sent = decide.requested(sub, mode, secret, now)
        form = {
            "hub.callback": self.callback(sub.feed),
            "hub.mode": mode,
            "hub.topic": sub.hub.topic,
        }
        if mode == "subscribe":
            form["hub.lease_seconds"] = str(int(decide.LEASE.total_seconds()))
            form["hub.secret"] = secret
        log.info("websub %s requested source=%s hub=%s", mode, sub.feed, sub.hub.url)
        answer = await self._request(sub.hub.url, form)
        current = self.subscriptions.get(sub.feed)
        if isinstance(answer, HubAccepted) or current is None or current.pending != sent.pending:
            return  # accepted (verification follows), or already verified or denied
        failed = decide.refused(current, self.clock.now())
        self.subscriptions[sub.feed] = failed
        log.warning(
            "websub %s failed; polling goes on source=%s hub=%s error=%s retry_at=%s",
            mode,
            sub.feed,
            sub.hub.url,
            answer.reason,
            failed.retry_at.isoformat() if failed.retry_at else "-",
        )

    async def serve(self, stop: asyncio.Event) -> None:
        """Send due requests until ``stop``; wake up early when told (``kick``)."""
        while not stop.is_set():
            self.kick.clear()
            try:
                wait = await self.run_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("websub round failed; retrying shortly")
                wait = timedelta(seconds=LOOK_EVERY)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait.total_seconds()):
                    await self.kick.wait()  # a stop cancels this task

    # -- what hubs send ----------------------------------------------------------------------

    def verify(self, feed: str, query: Mapping[str, str]) -> str | None:
        """An intent verification: the challenge to echo, or ``None`` (answered 404)."""
        sub = self.subscriptions.get(feed)
        mode, topic = query.get("hub.mode", ""), query.get("hub.topic", "")
        challenge = query.get("hub.challenge")
        if sub is None or (challenge is None and mode != "denied"):
            log.info("websub verification refused source=%s mode=%s", feed[:64], mode[:20])
            return None
        result = decide.verify(sub, mode, topic, query.get("hub.lease_seconds"), self.clock.now())
        if result.subscription is None:
            self.subscriptions.pop(feed, None)
        else:
            self.subscriptions[feed] = result.subscription
        self._count_active()
        if not result.confirmed:
            log.info("websub verification refused source=%s mode=%s", feed, mode[:20])
            return None
        log.info("websub %s verified source=%s hub=%s", mode, feed, sub.hub.url)
        if mode == "denied":
            log.warning("websub subscription denied source=%s hub=%s", feed, sub.hub.url)
            self.kick.set()
        return challenge or ""

    async def deliver(
        self, feed: str, signature: str | None, body: bytes, content_type: str | None
    ) -> None:
        """A content distribution: planned like a poll when its signature is right, else
        ignored (and logged)."""
        sub = self.subscriptions.get(feed)
        secrets = decide.secrets_for(sub)
        if not secrets:
            self._count(feed, "unknown")
            log.info("websub content for no subscription ignored source=%s", feed[:64])
            return
        if not signature_valid(signature, secrets, body):
            self._count(feed, "bad_signature")
            log.warning(
                "websub content ignored: %s signature source=%s",
                "missing" if not signature else "bad",
                feed,
            )
            return
        self._count(feed, "accepted")
        log.info("websub content received source=%s bytes=%d", feed, len(body))
        await self._push(feed, body, content_type)

    def too_large(self, feed: str) -> None:
        self._count(feed, "too_large")
        log.warning("websub content ignored: larger than fetch.max_bytes source=%s", feed[:64])

    def _count(self, feed: str, outcome: str) -> None:
        source = feed if feed in self.subscriptions else "-"
        self.metrics.websub_deliveries.labels(source=source, outcome=outcome).inc()

    def _count_active(self) -> None:
        now = self.clock.now()
        self.metrics.websub_active.set(sum(1 for s in self.subscriptions.values() if s.active(now)))
