"""The yardstick of a round: a process that only makes the round's requests with aiohttp.

    python -m bench.fetchonly --urls URLS --state FILE --in-flight 32 --per-host 2
    python -m bench.fetchonly --urls URLS --state FILE --rounds 3     # rounds in one process
    python -m bench.fetchonly --serve-bare 8099 --latency-ms 50 --duration 60

Every URL once, with treaty-bot's limits (``--in-flight`` requests at once, ``--per-host`` per
host), conditional (``If-None-Match`` / ``If-Modified-Since`` from the validators kept in
``--state``), bodies read and decompressed, then thrown away: no configuration, no parsing, no
state beyond the validators. Its whole-process wall time is the least any aiohttp program can
take for a round on this farm and machine; the runner measures it next to the others.

``--rounds N`` makes the round N times in one process and prints each round's time: the
requests without the process start-up. ``--serve-bare PORT`` serves the other side with no
work at all, to tell the client's share of a round from the farm's: on 127.0.0.1-127.0.0.32,
every request answered after ``--latency-ms``, 304 when it is conditional, else 200 with a
small fixed body and an ETag (URLs: ``http://127.0.0.N:PORT/anything``).

Prints one JSON object on its last line of standard output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp


async def _round(
    urls: Sequence[str], validators: dict[str, list[str | None]], in_flight: int, per_host: int
) -> dict[str, int]:
    limit = asyncio.Semaphore(in_flight)
    counts = {"ok": 0, "not_modified": 0, "errors": 0, "bytes": 0}
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=per_host)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> None:
            etag, modified = validators.get(url, [None, None])
            headers = {}
            if etag:
                headers["If-None-Match"] = etag
            if modified:
                headers["If-Modified-Since"] = modified
            async with limit:
                try:
                    async with session.get(url, headers=headers) as response:
                        body = await response.read()
                        if response.status == 304:
                            counts["not_modified"] += 1
                            return
                        if response.status != 200:
                            counts["errors"] += 1
                            return
                        counts["ok"] += 1
                        counts["bytes"] += len(body)
                        validators[url] = [
                            response.headers.get("ETag"),
                            response.headers.get("Last-Modified"),
                        ]
                except (aiohttp.ClientError, TimeoutError):
                    counts["errors"] += 1

        await asyncio.gather(*(one(url) for url in urls))
    return counts


class _Bare(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and nothing else: each request answered after ``latency``."""

    BODY = b"<rss version='2.0'><channel><title>bare</title></channel></rss>"

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            conditional = b"\r\nif-none-match:" in head.lower()
            asyncio.get_running_loop().call_later(self.latency, self._answer, conditional)

    def _answer(self, conditional: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if conditional:
            self.transport.write(b'HTTP/1.1 304 Not Modified\r\nETag: "1"\r\n\r\n')
        else:
            self.transport.write(
                b'HTTP/1.1 200 OK\r\nETag: "1"\r\nContent-Type: application/rss+xml\r\n'
                b"Content-Length: %d\r\n\r\n%s" % (len(self.BODY), self.BODY)
            )


async def _serve_bare(port: int, latency: float, duration: float) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(lambda: _Bare(latency), f"127.0.0.{n}", port, backlog=1024)
        for n in range(1, 33)
    ]
    print(f"bare server on 127.0.0.1-127.0.0.32:{port}, stopping in {duration:g} s", flush=True)
    await asyncio.sleep(duration)
    for server in servers:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fetchonly")
    parser.add_argument("--urls", help="file with one URL a line")
    parser.add_argument("--state", help="validators kept between rounds")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="rounds in this one process")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help="serve, do not fetch")
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to serve")
    args = parser.parse_args(argv)
    if args.serve_bare is not None:
        asyncio.run(_serve_bare(args.serve_bare, args.latency_ms / 1000, args.duration))
        return 0
    if not args.urls or not args.state:
        parser.error("--urls and --state are needed to fetch")
    urls = [u.strip() for u in Path(args.urls).read_text().splitlines() if u.strip()]
    state = Path(args.state)
    validators = json.loads(state.read_text()) if state.exists() else {}
    for _ in range(args.rounds):
        started = time.perf_counter()
        counts = asyncio.run(_round(urls, validators, args.in_flight, args.per_host))
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "feeds": len(urls), **counts}), flush=True)
    state.write_text(json.dumps(validators))
    return 0


if __name__ == "__main__":
    sys.exit(main())
