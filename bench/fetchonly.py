"""The yardstick of a round: a process that only makes the round's requests with aiohttp.

    python -m bench.fetchonly --urls URLS --state FILE --in-flight 32 --per-host 2

Every URL once, with treaty-bot's limits (``--in-flight`` requests at once, ``--per-host`` per
host), conditional (``If-None-Match`` / ``If-Modified-Since`` from the validators kept in
``--state``), bodies read and decompressed, then thrown away: no configuration, no parsing, no
state beyond the validators. Its whole-process wall time is the least any aiohttp program can
take for a round on this farm and machine; the runner measures it next to the others.

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fetchonly")
    parser.add_argument("--urls", required=True, help="file with one URL a line")
    parser.add_argument("--state", required=True, help="validators kept between rounds")
    parser.add_argument("--in-flight", type=int, default=32)
    parser.add_argument("--per-host", type=int, default=2)
    args = parser.parse_args(argv)
    urls = [u.strip() for u in Path(args.urls).read_text().splitlines() if u.strip()]
    state = Path(args.state)
    validators = json.loads(state.read_text()) if state.exists() else {}
    started = time.perf_counter()
    counts = asyncio.run(_round(urls, validators, args.in_flight, args.per_host))
    seconds = time.perf_counter() - started
    state.write_text(json.dumps(validators))
    print(json.dumps({"seconds": seconds, "feeds": len(urls), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
