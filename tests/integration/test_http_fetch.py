"""``HttpFetcher`` against a real HTTP server on loopback (``FeedServer``).

Each test programs the server, fetches, and checks both what the fetcher returned and what the
server saw. Nothing here sleeps: a test that needs a request to be in flight waits for the
server to say so, and the only clock involved is the fetcher's own deadline.
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.domain.model import Validators
from bot.sources.http import (
    MAX_RETRY_AFTER,
    Fetched,
    FetchFailed,
    FetchResult,
    HttpFetcher,
    NotModified,
)
from tests.integration.feedserver import MB, WAIT, FeedServer, http_date

FEED = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>UNODC</title><link>https://www.unodc.org/</link>
<description>News</description>
<item><title>Ad Hoc Committee concludes its session</title>
<link>https://www.unodc.org/news/1</link><guid>news-1</guid></item>
</channel></rss>
"""
ETAG = '"v1-3f9a"'
LAST_MODIFIED = "Mon, 02 Mar 2026 08:00:00 GMT"
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TINY = timedelta(seconds=0.2)
CAP = 1 * MB


@pytest.fixture
async def server() -> AsyncIterator[FeedServer]:
    async with FeedServer() as feed_server:
        yield feed_server


async def fetch(
    fetcher: HttpFetcher, url: str, validators: Validators | None = None
) -> FetchResult:
    """``fetcher.fetch``, with a deadline of the test's own, so that a fetcher that forgets
    its deadline fails the test instead of hanging it."""
    async with asyncio.timeout(WAIT):
        return await fetcher.fetch(url, validators)


def alias_address() -> str:
    """A second loopback address, so that one machine can play two hosts."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.2", 0))
    except OSError as err:  # pragma: no cover - Linux routes all of 127/8 to loopback
        pytest.skip(f"127.0.0.2 cannot be bound here: {err}")
    return "127.0.0.2"


# ------------------------------------------------------------------- conditional GET


async def test_200_returns_the_body_and_its_validators(server: FeedServer) -> None:
    server.serve("/feed.xml", FEED, etag=ETAG, last_modified=LAST_MODIFIED)
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, Fetched)
    assert result.body == FEED
    assert result.etag == ETAG
    assert result.last_modified == LAST_MODIFIED
    assert result.content_type is not None and "rss+xml" in result.content_type
    assert result.url == server.url("/feed.xml")
    (request,) = server.requests
    assert "If-None-Match" not in request.headers
    assert "If-Modified-Since" not in request.headers


@pytest.mark.parametrize(
    ("etag", "last_modified"),
    [(ETAG, LAST_MODIFIED), (ETAG, None), (None, LAST_MODIFIED)],
    ids=["both", "etag-only", "last-modified-only"],
)
async def test_second_request_is_conditional_and_gets_not_modified(
    server: FeedServer, etag: str | None, last_modified: str | None
) -> None:
    server.serve("/feed.xml", FEED, etag=etag, last_modified=last_modified)
    async with HttpFetcher() as fetcher:
        first = await fetch(fetcher, server.url("/feed.xml"))
        assert isinstance(first, Fetched)
        validators = Validators(first.etag, first.last_modified, None)
        second = await fetch(fetcher, server.url("/feed.xml"), validators)

    assert isinstance(second, NotModified)
    assert [r.status for r in server.requests] == [200, 304]
    conditional = server.requests[1].headers
    assert conditional.get("If-None-Match") == etag
    assert conditional.get("If-Modified-Since") == last_modified


async def test_stale_validators_get_the_new_body(server: FeedServer) -> None:
    server.serve("/feed.xml", FEED + b"<!-- v2 -->", etag='"v2"')
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"), Validators(ETAG, None, None))

    assert isinstance(result, Fetched)
    assert result.etag == '"v2"'
    assert result.body.endswith(b"<!-- v2 -->")
    assert server.requests[0].headers["If-None-Match"] == ETAG


# ------------------------------------------------------------------- errors and limits


async def test_server_error_is_an_http_error_with_its_status(server: FeedServer) -> None:
    server.status("/feed.xml", 500, body="Internal Server Error")
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "http_error"
    assert result.status == 500
    assert result.retry_after is None
    assert "500" in result.reason


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "120", timedelta(seconds=120)),
        (503, NOW + timedelta(seconds=90), timedelta(seconds=90)),
        (429, NOW + timedelta(minutes=5), timedelta(minutes=5)),
        (503, NOW - timedelta(hours=1), timedelta(0)),
        (429, str(10 * 24 * 3600), MAX_RETRY_AFTER),
        (503, "soon", None),
    ],
    ids=["429-seconds", "503-http-date", "429-http-date", "503-past-date", "capped", "junk"],
)
async def test_retry_after_in_seconds_or_as_an_http_date(
    server: FeedServer,
    status: int,
    retry_after: str | datetime,
    expected: timedelta | None,
) -> None:
    server.status("/feed.xml", status, retry_after=retry_after)
    async with HttpFetcher(now=lambda: NOW) as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert (result.kind, result.status) == ("http_error", status)
    assert result.retry_after == expected
    sent = server.requests[0]
    assert sent.status == status


async def test_a_response_that_never_finishes_times_out(server: FeedServer) -> None:
    server.slow("/feed.xml", FEED)  # headers at once, the body never (the gate stays shut)
    async with HttpFetcher(timeout=TINY) as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "timeout"
    (request,) = server.requests
    assert not request.finished  # the server was still holding the body when we gave up


async def test_the_deadline_covers_the_requests_after_a_redirect(server: FeedServer) -> None:
    server.redirect("/old.xml", "/feed.xml")
    server.slow("/feed.xml", FEED)  # the body never comes
    async with HttpFetcher(timeout=TINY) as fetcher:
        result = await fetch(fetcher, server.url("/old.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "timeout" and "0.2s" in result.reason
    assert [r.path for r in server.requests] == ["/old.xml", "/feed.xml"]


async def test_a_slow_response_arrives_when_the_server_lets_it_go(server: FeedServer) -> None:
    """The counterpart of the timeout test: the same route, released, is a success."""
    gate = server.slow("/feed.xml", FEED)
    async with HttpFetcher() as fetcher, asyncio.TaskGroup() as tasks:
        fetching = tasks.create_task(fetch(fetcher, server.url("/feed.xml")))
        await server.wait_for_requests("/feed.xml")
        assert not fetching.done()
        gate.release()

    result = fetching.result()
    assert isinstance(result, Fetched)
    assert result.body == FEED


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "chunked"])
async def test_a_50_mb_body_is_refused_at_the_byte_cap(
    server: FeedServer, content_length: bool
) -> None:
    size = 50 * MB
    server.huge("/feed.xml", size, content_length=content_length)
    async with HttpFetcher(max_bytes=CAP) as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))
        await server.wait_finished("/feed.xml")

    assert isinstance(result, FetchFailed)
    assert result.kind == "too_large"
    (request,) = server.requests
    assert request.aborted  # the client hung up instead of reading on
    assert request.bytes_sent < size


async def test_a_gzip_bomb_is_refused_after_decompression_with_bounded_memory(
    server: FeedServer,
) -> None:
    decompressed = 256 * MB
    on_the_wire = server.gzip_bomb("/feed.xml", decompressed)
    assert on_the_wire < CAP  # so only a cap on the decompressed body can catch it

    async with HttpFetcher(max_bytes=CAP) as fetcher:
        tracemalloc.start()
        try:
            result = await fetch(fetcher, server.url("/feed.xml"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

    assert isinstance(result, FetchFailed)
    assert result.kind == "too_large"
    # a coarse bound: the cap plus buffers, far below what the bomb decompresses to
    assert peak < 32 * MB, f"peak Python allocations {peak / MB:.0f} MB"
    assert server.requests[0].headers.get("Accept-Encoding") is not None


async def test_an_endless_body_is_cut_off(server: FeedServer) -> None:
    server.endless("/feed.xml")
    async with HttpFetcher(max_bytes=CAP, timeout=timedelta(seconds=10)) as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind in ("too_large", "timeout")


async def test_a_drip_of_one_byte_at_a_time_hits_the_total_deadline(server: FeedServer) -> None:
    # every read gets a byte quickly; only a deadline on the whole request can end this
    server.drip("/feed.xml", FEED, interval=0.05)
    async with HttpFetcher(timeout=timedelta(seconds=0.5)) as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "timeout"
    assert "body included" in result.reason


async def test_a_closed_port_is_a_connection_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: the port stays ours and closed
        port = sock.getsockname()[1]
        async with HttpFetcher() as fetcher:
            result = await fetch(fetcher, f"http://127.0.0.1:{port}/feed.xml")

    assert isinstance(result, FetchFailed)
    assert result.kind == "connection_error"
    assert str(port) in result.reason


async def test_a_redirect_loop_fails(server: FeedServer) -> None:
    server.redirect("/feed.xml", "/feed.xml")
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "http_error"
    assert "redirect" in result.reason
    assert 1 < len(server.requests) <= 10


async def test_a_redirect_is_followed(server: FeedServer) -> None:
    server.redirect("/old.xml", "/feed.xml", status=301)
    server.serve("/feed.xml", FEED)
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/old.xml"))

    assert isinstance(result, Fetched)
    assert result.body == FEED
    assert result.url == server.url("/feed.xml")


async def test_a_redirect_keeps_the_validators_and_may_answer_304(server: FeedServer) -> None:
    server.redirect("/old.xml", "/feed.xml", status=308)
    server.serve("/feed.xml", FEED, etag=ETAG)
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/old.xml"), Validators(ETAG, None, None))

    assert isinstance(result, NotModified)
    assert [r.headers.get("If-None-Match") for r in server.requests] == [ETAG, ETAG]


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        (None, "without a Location"),
        ("ftp://example.org/feed.xml", "not an http(s) address"),
        ("http://[::1", "unusable Location"),
    ],
)
async def test_a_redirect_that_leads_nowhere_fails_with_its_reason(
    server: FeedServer, location: str | None, reason: str
) -> None:
    headers = {"Location": location} if location is not None else {}
    server.serve("/feed.xml", b"", status=302, headers=headers)
    async with HttpFetcher() as fetcher:
        result = await fetch(fetcher, server.url("/feed.xml"))

    assert isinstance(result, FetchFailed)
    assert result.kind == "http_error" and reason in result.reason
    assert "302" in result.reason


async def test_a_permanent_redirect_is_remembered_as_a_move(server: FeedServer) -> None:
    server.redirect("/old.xml", "/new.xml", status=301)
    server.redirect("/new.xml", "/feed.xml", status=302)  # a temporary hop after it
    server.redirect("/temp.xml", "/feed.xml", status=307)
    server.serve("/feed.xml", FEED)
    async with HttpFetcher() as fetcher:
        assert isinstance(await fetch(fetcher, server.url("/old.xml")), Fetched)
        assert isinstance(await fetch(fetcher, server.url("/temp.xml")), Fetched)
        # moved where the permanent redirects lead, not where the temporary one goes on to
        assert fetcher.moved == {server.url("/old.xml"): server.url("/new.xml")}

        server.status("/new.xml", 503)  # a failure says nothing about the move
        assert isinstance(await fetch(fetcher, server.url("/old.xml")), FetchFailed)
        assert server.url("/old.xml") in fetcher.moved

        server.serve("/old.xml", FEED)  # the old address answers again itself
        assert isinstance(await fetch(fetcher, server.url("/old.xml")), Fetched)
        assert fetcher.moved == {}


async def test_the_user_agent_is_honest(server: FeedServer) -> None:
    server.serve("/feed.xml", FEED)
    async with HttpFetcher() as fetcher:
        await fetch(fetcher, server.url("/feed.xml"))

    headers = server.requests[0].headers
    assert "treaty-bot/" in headers["User-Agent"]
    assert "+https://" in headers["User-Agent"]  # where to find out who we are
    assert "application/rss+xml" in headers["Accept"]


# ------------------------------------------------------------------------- politeness


async def test_per_host_limit_holds_while_other_hosts_proceed_in_parallel() -> None:
    other = alias_address()
    async with FeedServer(("127.0.0.1", other)) as server:
        gate_a = server.slow("/a.xml", FEED)
        gate_b = server.slow("/b.xml", FEED)
        host_a, host_b = server.netloc("127.0.0.1"), server.netloc(other)
        async with HttpFetcher(per_host=2) as fetcher, asyncio.TaskGroup() as tasks:
            fetches = [
                tasks.create_task(fetch(fetcher, server.url("/a.xml", "127.0.0.1")))
                for _ in range(10)
            ] + [tasks.create_task(fetch(fetcher, server.url("/b.xml", other))) for _ in range(4)]

            # host B gets its own two slots while host A's two are taken and 8 more wait
            await server.wait_until(
                lambda: server.in_flight[host_a] == 2 and server.in_flight[host_b] == 2,
                "two requests in flight at each host",
            )
            # let host A's responses go one at a time; each lets one waiting fetch in
            for done in range(1, 11):
                gate_a.release()
                await server.wait_finished("/a.xml", done)
            gate_b.open()

        assert all(isinstance(f.result(), Fetched) for f in fetches)
        assert len(server.requests_to("/a.xml")) == 10
        assert server.max_in_flight[host_a] == 2
        assert server.max_in_flight[host_b] == 2


async def test_a_redirect_counts_against_the_host_it_leads_to() -> None:
    """Four sites that all redirect to one host: that host sees one request at a time (the
    limit per host is 1 here), not one per site."""
    origins = [alias_address(), *(f"127.0.0.{n}" for n in (3, 4, 5))]
    async with FeedServer(("127.0.0.1", *origins)) as server:
        gate = server.slow("/feed.xml", FEED)
        final = server.url("/feed.xml", "127.0.0.1")
        server.redirect("/old.xml", final, status=301)
        async with HttpFetcher(per_host=1) as fetcher, asyncio.TaskGroup() as tasks:
            fetches = [
                tasks.create_task(fetch(fetcher, server.url("/old.xml", origin)))
                for origin in origins
            ]
            await server.wait_for_requests("/old.xml", len(origins))  # each site answered
            for done in range(1, len(origins) + 1):
                await server.wait_for_requests("/feed.xml", done)
                gate.release()
                await server.wait_finished("/feed.xml", done)

        results = [f.result() for f in fetches]
        assert all(isinstance(r, Fetched) and r.url == final for r in results)
        assert server.max_in_flight[server.netloc("127.0.0.1")] == 1


# ---------------------------------------------------------------- the server, threaded


async def test_the_feed_server_also_runs_in_a_thread_of_its_own() -> None:
    """The mode subprocess tests use: the server's loop is not the test's."""
    with FeedServer() as server:
        gate = server.slow("/feed.xml", FEED)
        server.serve("/fresh.xml", FEED, last_modified=NOW)
        async with HttpFetcher() as fetcher, asyncio.TaskGroup() as tasks:
            fetching = tasks.create_task(fetch(fetcher, server.url("/feed.xml")))
            await server.wait_for_requests("/feed.xml")
            gate.release()
            fresh = await fetch(
                fetcher, server.url("/fresh.xml"), Validators(None, http_date(NOW), None)
            )
        await asyncio.to_thread(
            server.wait_until_sync, lambda: server.finished("/feed.xml") == 1, "the release"
        )

    assert isinstance(fetching.result(), Fetched)
    assert isinstance(fresh, NotModified)
