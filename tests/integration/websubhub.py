"""A WebSub hub on loopback, written from the W3C Recommendation (23 January 2018).

- Subscription requests (POST form ``hub.callback``, ``hub.mode``, ``hub.topic``,
  ``hub.lease_seconds``, ``hub.secret``) are answered 202 Accepted, then the intent is verified
  with a GET to the callback carrying ``hub.mode``, ``hub.topic``, ``hub.challenge`` and (for a
  subscription) ``hub.lease_seconds``; the subscription takes effect (or ends) only when the
  callback answers 2xx with the challenge as its body. ``refuse`` makes it answer an error
  instead (a hub that is down).
- ``publish`` distributes content to every subscriber of a topic, signed with
  ``X-Hub-Signature: method=hex`` for the method a test chooses (or a forged header).

Every request is recorded. Tests wait on ``wait_until`` (woken by each change), never on sleep.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

import aiohttp
from aiohttp import web
from yarl import URL

WAIT = 30.0


@dataclass
class HubSubscription:
    callback: str
    topic: str
    secret: str | None
    lease_seconds: int


@dataclass(frozen=True)
class Verification:
    mode: str
    topic: str
    callback: str
    status: int
    confirmed: bool


class WebSubHub:
    def __init__(self, *, lease_seconds: int = 3600) -> None:
        self.lease_seconds = lease_seconds
        #: answer subscription requests with this status instead of 202 (a hub that is down)
        self.refuse: int | None = None
        self.requests: list[dict[str, str]] = []
        self.verifications: list[Verification] = []
        self.subscriptions: dict[tuple[str, str], HubSubscription] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def __aenter__(self) -> WebSubHub:
        app = web.Application()
        app.router.add_post("/hub", self._hub)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/hub"
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        async with asyncio.timeout(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    def subscribed(self, topic: str) -> HubSubscription | None:
        return next((s for s in self.subscriptions.values() if s.topic == topic), None)

    # -- subscription requests ------------------------------------------------------------------

    async def _hub(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append(form)
        await self._notify()
        if self.refuse is not None:
            return web.Response(status=self.refuse, text="hub unavailable")
        mode, callback, topic = (
            form.get("hub.mode"),
            form.get("hub.callback"),
            form.get("hub.topic"),
        )
        if mode not in ("subscribe", "unsubscribe") or not callback or not topic:
            return web.Response(status=400, text="bad request")
        secret = form.get("hub.secret")
        if secret is not None and len(secret.encode()) >= 200:
            return web.Response(status=400, text="hub.secret must be under 200 bytes")
        task = asyncio.create_task(self._verify(mode, callback, topic, secret))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=202)

    async def _verify(self, mode: str, callback: str, topic: str, secret: str | None) -> None:
        status, confirmed = await self.verify_intent(callback, mode, topic)
        if confirmed:
            if mode == "subscribe":
                self.subscriptions[(callback, topic)] = HubSubscription(
                    callback, topic, secret, self.lease_seconds
                )
            else:
                self.subscriptions.pop((callback, topic), None)
        self.verifications.append(Verification(mode, topic, callback, status, confirmed))
        await self._notify()

    async def verify_intent(
        self, callback: str, mode: str, topic: str, *, lease: bool = True
    ) -> tuple[int, bool]:
        """GET the callback as a hub verifying an intent: (status, challenge echoed)."""
        assert self._session is not None
        challenge = secrets.token_urlsafe(16)
        query = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if mode == "subscribe" and lease:
            query["hub.lease_seconds"] = str(self.lease_seconds)
        url = URL(callback).update_query(query)
        async with self._session.get(url) as resp:
            body = await resp.text()
            return resp.status, 200 <= resp.status < 300 and body == challenge

    # -- content distribution -------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        body: bytes,
        *,
        method: str = "sha256",
        signature: str | None = None,
        sign: bool = True,
        content_type: str = "application/atom+xml",
    ) -> list[int]:
        """POST ``body`` to every subscriber of ``topic``, signed with ``method`` and the
        subscriber's secret (or with ``signature`` as given, or unsigned)."""
        assert self._session is not None
        statuses = []
        for sub in [s for s in self.subscriptions.values() if s.topic == topic]:
            headers = {
                "Content-Type": content_type,
                "Link": f'<{self.url}>; rel="hub", <{topic}>; rel="self"',
            }
            if signature is not None:
                headers["X-Hub-Signature"] = signature
            elif sign and sub.secret is not None:
                digest = hmac.new(sub.secret.encode(), body, method).hexdigest()
                headers["X-Hub-Signature"] = f"{method}={digest}"
            async with self._session.post(sub.callback, data=body, headers=headers) as resp:
                statuses.append(resp.status)
        return statuses
