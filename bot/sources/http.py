"""One HTTP client for every source: conditional GET, deadlines, byte caps, politeness.

Failures are returned as values (``FetchFailed``), never raised, so one bad source cannot end a
round for the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from bot import __version__
from bot.domain.model import Validators

log = logging.getLogger(__name__)

USER_AGENT = (
    f"treaty-bot/{__version__} (Treaty Watch; feed and calendar monitor; "
    "+https://github.com/treaty-watch/treaty-bot)"
)
MAX_RETRY_AFTER = timedelta(hours=24)
CONNECT_TIMEOUT = 10.0
#: Redirects followed at most. Each is a request of its own, to the host it names, made under
#: that host's limit: feeds of many sites that all redirect to one host do not crowd it.
MAX_REDIRECTS = 5
_PERMANENT_REDIRECTS = frozenset({301, 308})
_REDIRECTS = _PERMANENT_REDIRECTS | {302, 303, 307}

FailureKind = Literal["http_error", "timeout", "too_large", "connection_error"]


@dataclass(frozen=True, slots=True)
class Fetched:
    body: bytes
    etag: str | None
    last_modified: str | None
    content_type: str | None
    url: str
    #: how long the server asks to be left alone (Cache-Control max-age, Retry-After)
    wait: timedelta | None = None
    #: the response's ``Link`` headers (where a feed names its WebSub hub)
    links: tuple[str, ...] = ()
    #: SHA-256 of ``body`` (hex), computed with the decoding, off the event loop
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class NotModified:
    etag: str | None = None
    last_modified: str | None = None
    wait: timedelta | None = None


@dataclass(frozen=True, slots=True)
class FetchFailed:
    reason: str
    kind: FailureKind
    status: int | None = None
    retry_after: timedelta | None = None


FetchResult = Fetched | NotModified | FetchFailed


_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def parse_max_age(value: str | None) -> timedelta | None:
    """``Cache-Control: max-age=N`` as a wait, capped at a day; ``None`` when absent or when
    the response may not be reused (``no-cache``, ``no-store``)."""
    if not value:
        return None
    lowered = value.lower()
    if "no-store" in lowered or "no-cache" in lowered:
        return None
    match = _MAX_AGE.search(value)
    if match is None:
        return None
    return min(timedelta(seconds=int(match[1])), MAX_RETRY_AFTER)


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """Seconds or an HTTP date; capped at a day; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        delay = when - now
    return max(timedelta(0), min(delay, MAX_RETRY_AFTER))


def server_wait(headers: Mapping[str, str], now: datetime) -> timedelta | None:
    """The longer of what ``Cache-Control: max-age`` and ``Retry-After`` ask for."""
    waits = [
        w
        for w in (
            parse_max_age(headers.get("Cache-Control")),
            parse_retry_after(headers.get("Retry-After"), now),
        )
        if w is not None
    ]
    return max(waits) if waits else None


class HttpFetcher:
    """Fetches URLs with one ``aiohttp.ClientSession``.

    - conditional GET from stored ``Validators`` (If-None-Match / If-Modified-Since);
    - a total deadline per request, body included, and a byte cap checked on the decompressed
      body as it streams in;
    - at most ``per_host`` requests in flight per host and ``max_in_flight`` overall; a request
      that had to wait for its host starts after a little random jitter;
    - an honest User-Agent.
    """

    def __init__(
        self,
        *,
        timeout: timedelta = timedelta(seconds=30),
        max_bytes: int = 5 * 1024 * 1024,
        per_host: int = 2,
        max_in_flight: int = 32,
        user_agent: str = USER_AGENT,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        host_jitter: float = 0.05,
    ) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.per_host = per_host
        self.user_agent = user_agent
        self._now = now
        self._host_jitter = host_jitter
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._hosts: dict[str, asyncio.Semaphore] = {}
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        #: URL -> where it moved: the last answer to it came through permanent redirects,
        #: which are followed every time; maintainers are told to update the URL
        self.moved: dict[str, str] = {}

    async def __aenter__(self) -> HttpFetcher:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={
                "User-Agent": self.user_agent,
                "Accept": _ACCEPT,
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
            # bodies are decoded in a thread (``_decoded``): inflating thousands of gzip bodies
            # on the event loop would hold up everything else it does
            auto_decompress=False,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared client session (for the few requests that are not fetches: WebSub)."""
        if self._session is None:
            raise RuntimeError("HttpFetcher used outside 'async with'")
        return self._session

    async def fetch(self, url: str, validators: Validators | None = None) -> FetchResult:
        """GET ``url`` (conditionally, given ``validators``), following redirects.

        The deadline covers the requests, body included, redirects included; time spent
        waiting for a free slot (per host, or overall) is not counted.
        """
        asked, budget = url, self.timeout.total_seconds()
        moved: str | None = None  # the end of the permanent redirects the chain starts with
        permanent = True
        for _ in range(MAX_REDIRECTS + 1):
            result = await self._hop(url, validators, budget)
            if not isinstance(result, _Redirect):
                if isinstance(result, Fetched | NotModified):  # an answer: where it came from
                    if moved is None:
                        self.moved.pop(asked, None)
                    else:
                        self.moved[asked] = moved
                return result
            permanent = permanent and result.permanent
            if permanent:
                moved = result.location
            budget -= result.seconds
            url = result.location
            if budget <= 0:
                return self._timed_out()
        return FetchFailed(f"too many redirects (more than {MAX_REDIRECTS})", "http_error")

    async def _hop(
        self, url: str, validators: Validators | None, budget: float
    ) -> FetchResult | _Redirect:
        """One request, under the limit of its host and the overall one."""
        host = urlsplit(url).netloc.lower()
        gate = self._hosts.setdefault(host, asyncio.Semaphore(self.per_host))
        waited = gate.locked()
        async with gate:
            if waited and self._host_jitter > 0:
                await asyncio.sleep(random.uniform(0, self._host_jitter))
            async with self._in_flight:
                return await self._fetch(url, validators, budget)

    def _timed_out(self) -> FetchFailed:
        seconds = self.timeout.total_seconds()
        return FetchFailed(
            f"timed out after {seconds:g}s (whole request, body included)", "timeout"
        )

    async def _fetch(
        self, url: str, validators: Validators | None, budget: float
    ) -> FetchResult | _Redirect:
        if self._session is None:
            raise RuntimeError("HttpFetcher used outside 'async with'")
        headers = {}
        if validators is not None:
            if validators.etag:
                headers["If-None-Match"] = validators.etag
            if validators.last_modified:
                headers["If-Modified-Since"] = validators.last_modified
        self.requests += 1
        started = time.monotonic()
        try:
            async with asyncio.timeout(budget):
                async with self._session.get(url, headers=headers, allow_redirects=False) as resp:
                    if resp.status in _REDIRECTS:
                        return _redirect(resp, time.monotonic() - started)
                    if resp.status == 304:
                        return NotModified(
                            resp.headers.get("ETag"),
                            resp.headers.get("Last-Modified"),
                            server_wait(resp.headers, self._now()),
                        )
                    if resp.status >= 400 or resp.status < 200:
                        return FetchFailed(
                            f"HTTP {resp.status} {resp.reason or ''}".strip(),
                            "http_error",
                            resp.status,
                            parse_retry_after(resp.headers.get("Retry-After"), self._now())
                            if resp.status in (429, 503)
                            else None,
                        )
                    length = resp.content_length
                    if length is not None and length > self.max_bytes:
                        return self._too_large()
                    raw = bytearray()
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        raw += chunk
                        if len(raw) > self.max_bytes:  # decoded, it is larger still
                            return self._too_large()
                    coding = resp.headers.get("Content-Encoding", "")
                    try:
                        body, digest = await asyncio.to_thread(
                            _decoded, bytes(raw), coding, self.max_bytes
                        )
                    except _TooLarge:
                        return self._too_large()
                    except (ValueError, zlib.error) as err:
                        return FetchFailed(
                            f"broken response body: {_short(err)}", "connection_error"
                        )
                    return Fetched(
                        body,
                        resp.headers.get("ETag"),
                        resp.headers.get("Last-Modified"),
                        resp.headers.get("Content-Type"),
                        str(resp.url),
                        server_wait(resp.headers, self._now()),
                        tuple(resp.headers.getall("Link", ())),
                        digest,
                    )
        except aiohttp.ConnectionTimeoutError:
            return FetchFailed(f"could not connect within {CONNECT_TIMEOUT:g}s", "timeout")
        except TimeoutError:
            return self._timed_out()
        except aiohttp.ClientResponseError as err:
            return FetchFailed(f"bad HTTP response: {err.message}", "http_error", err.status)
        except aiohttp.ClientPayloadError as err:
            return FetchFailed(f"broken response body: {_short(err)}", "connection_error")
        except aiohttp.ClientConnectorError as err:
            return FetchFailed(
                f"cannot connect to {err.host}:{err.port}: {_short(err.os_error)}",
                "connection_error",
            )
        except (aiohttp.ClientError, OSError, ValueError) as err:
            return FetchFailed(
                f"request failed: {type(err).__name__}: {_short(err)}", "connection_error"
            )
        finally:
            log.debug("fetched url=%s seconds=%.3f", url, time.monotonic() - started)

    def _too_large(self) -> FetchFailed:
        return FetchFailed(
            f"response larger than {self.max_bytes // 1024} KiB (fetch.max_bytes)", "too_large"
        )


@dataclass(frozen=True, slots=True)
class _Redirect:
    """A hop of a fetch: where to go next, and how long this request took."""

    location: str
    seconds: float
    permanent: bool


def _redirect(resp: aiohttp.ClientResponse, seconds: float) -> _Redirect | FetchFailed:
    location = resp.headers.get("Location")
    status = f"HTTP {resp.status} {resp.reason or ''}".strip()
    if not location:
        return FetchFailed(f"{status} without a Location to go to", "http_error", resp.status)
    try:
        target = resp.url.join(URL(location))
    except ValueError:
        return FetchFailed(f"{status} to an unusable Location {location[:100]!r}", "http_error")
    if target.scheme not in ("http", "https") or not target.host:
        return FetchFailed(
            f"{status} to {str(target)[:100]!r}, which is not an http(s) address", "http_error"
        )
    return _Redirect(str(target), seconds, resp.status in _PERMANENT_REDIRECTS)


class _TooLarge(Exception):
    pass


def _decoded(raw: bytes, coding: str, cap: int) -> tuple[bytes, str]:
    """The body of a response sent with Content-Encoding ``coding``, decoded, and its
    SHA-256; ``_TooLarge`` past ``cap`` bytes decoded (a few hundred KB of gzip can hold
    gigabytes of zeros: no more than ``cap + 1`` bytes are ever inflated)."""
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        body = raw
    elif coding in ("gzip", "x-gzip"):
        body = _inflate(raw, 16 + zlib.MAX_WBITS, cap)
    elif coding == "deflate":  # zlib-wrapped as the RFC says, or raw as some servers send
        try:
            body = _inflate(raw, zlib.MAX_WBITS, cap)
        except zlib.error:
            body = _inflate(raw, -zlib.MAX_WBITS, cap)
    else:
        raise ValueError(f"unsupported Content-Encoding {coding[:40]!r}")
    return body, hashlib.sha256(body).hexdigest()


def _inflate(data: bytes, wbits: int, cap: int) -> bytes:
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits)
        out += inflater.decompress(data, cap + 1 - len(out))
        if len(out) > cap or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise ValueError("the compressed body ends early")
        data = inflater.unused_data
        if wbits != 16 + zlib.MAX_WBITS or not data.startswith(b"\x1f\x8b"):
            return bytes(out)  # another gzip member follows, or the end (padding ignored)


def _short(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    return text if len(text) <= 200 else text[:199] + "…"


#: The content codings asked for (and decoded by ``_decoded``).
ACCEPT_ENCODING = "gzip, deflate"

_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/feed+json, application/json;q=0.9, "
    "application/xml;q=0.9, text/xml;q=0.9, text/calendar;q=0.9, */*;q=0.5"
)
