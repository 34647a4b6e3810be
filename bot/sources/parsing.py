"""Where feeds and calendars are parsed: worker processes while there is much to parse, so
that parsing uses every core and never holds the event loop, and a thread otherwise.

Parsing is pure CPU work in Python (feedparser, icalendar): in a thread it holds the GIL, so
the loop slows while a large feed is read and the second core idles. Bodies of at least
``IN_PROCESS_BELOW`` bytes go to a small pool of worker processes, forked from a server that
imported the parsers once; smaller ones (most real feeds, every test fixture) are parsed in a
thread, where a worker's round trip would cost more than the parse.

The workers and their server hold some 50 MB between them, which pays while thousands of
bodies arrive together (the first round, a session day) and not while a changed feed comes
now and then. So a large body goes to a thread (a 76 KB feed is some 17 ms of the
interpreter, the loop waiting about one switch interval, 5 ms, at a time) unless
``THREADS_BEFORE_WORKERS`` are being parsed in threads already: then the workers start (``once``
starts them before its round), and they stop, their server with them, once they parse fewer
than ``QUIET_BELOW`` bodies in a minute (``close_if_quiet``). Bodies over ``THREAD_AT_MOST``
always go to a worker.

A worker that dies (killed by the kernel on a memory limit, a crash in a C extension) breaks
the pool: the pool is replaced and the parse tried once more in a fresh one; a body that kills
its worker twice is reported as a parse failure of its own source, and nothing else is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import logging
import multiprocessing
import multiprocessing.forkserver
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, ParamSpec, TypeVar

from bot.sources.parsed import (
    CalendarFailed,
    DepositaryFailed,
    ParsedCalendar,
    ParsedDepositary,
    ParsedFeed,
    ParseFailed,
)

log = logging.getLogger(__name__)

#: Bodies smaller than this are parsed in a thread of this process.
IN_PROCESS_BELOW = 32 * 1024
#: With no workers running, a large body is parsed in a thread unless this many large bodies
#: are being parsed in threads already: then the workers start again.
THREADS_BEFORE_WORKERS = 3
#: Bodies larger than this always go to a worker: what parsing them costs in memory, and a
#: crash, stays out of this process.
THREAD_AT_MOST = 512 * 1024
#: The workers are stopped when they parsed fewer bodies than this since the last check (a
#: minute apart in ``treaty-bot run``).
QUIET_BELOW = 60

P = ParamSpec("P")
T = TypeVar("T")


#: The parsers, by name, imported where they run: this process never loads feedparser or
#: icalendar when every body goes to a worker.
PARSERS = {
    "feed": ("bot.sources.feeds", "parse_feed"),
    "calendar": ("bot.sources.calendars", "parse_calendar"),
    "depositary": ("bot.sources.depositary", "parse_depositary"),
}


#: Modules the worker processes import before forking: the parsers'.
PRELOAD = [module for module, _ in PARSERS.values()]


def parse_by_name(name: str, *args: Any, **kwargs: Any) -> Any:
    module, function = PARSERS[name]
    return getattr(importlib.import_module(module), function)(*args, **kwargs)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Wait for the workers to exit, then stop the server they were forked from (blocking).

    The server is stopped through the standard library's own (private) ``_stop``, the one its
    tests use; without it (another Python) the server is left running, which costs memory
    only. The next pool starts a server again."""
    pool.shutdown(wait=True)
    forkserver = getattr(multiprocessing.forkserver, "_forkserver", None)
    stop = getattr(forkserver, "_stop", None)
    if callable(stop):
        try:
            stop()
        except OSError:  # already gone
            log.debug("the parsers' fork server was already stopped", exc_info=True)


class ParserCrashed(Exception):
    """The worker parsing a body died twice."""


#: How much lower the workers' scheduling priority is than this process's (``nice``).
WORKER_NICENESS = 10


def _yield_to_the_loop(niceness: int) -> None:
    """In each worker: give way to the event loop when both want a core.

    Parsing is batch work that can wait a few milliseconds; the loop answers commands and
    keeps requests moving, and a request delayed behind a parse delays the whole round.
    """
    with contextlib.suppress(OSError):
        os.nice(niceness)


def default_workers() -> int:
    """One worker per core, at most 4, leaving the event loop its own share of the machine."""
    return max(1, min(4, os.cpu_count() or 1))


class Parsers:
    """Runs pure parse functions on bytes, in worker processes or, for small bodies, a thread.

    ``workers=0`` parses everything in threads (no processes are ever started).
    """

    def __init__(self, workers: int | None = None) -> None:
        self.workers = default_workers() if workers is None else workers
        self._pool: ProcessPoolExecutor | None = None
        self._starting: asyncio.Lock | None = None
        self._warming: asyncio.Task[object] | None = None
        self.started_pools = 0
        self._busy = 0
        #: large bodies parsed by the workers since the last ``close_if_quiet``
        self._parsed_in_pool = 0
        #: large bodies being parsed in threads now (no workers running)
        self._large_in_threads = 0
        #: a pool started since the last ``close_if_quiet``: it gets a whole period
        self._started_since_check = False

    def _new_pool(self) -> ProcessPoolExecutor:
        """A pool whose workers all run (blocking: the fork server imports the parsers first,
        a few tenths of a second, so this runs in a thread, never on the loop)."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=context,
            initializer=_yield_to_the_loop,
            initargs=(WORKER_NICENESS,),
        )
        for started in [pool.submit(os.getpid) for _ in range(self.workers)]:
            started.result()
        return pool

    async def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._starting = self._starting or asyncio.Lock()
            async with self._starting:
                if self._pool is None:
                    self._pool = await asyncio.to_thread(self._new_pool)
                    self.started_pools += 1
                    self._started_since_check = True
        return self._pool

    def warm_up(self) -> None:
        """Start the workers now, in the background, so that the first large body finds them
        ready (``once`` and ``run`` call this before the first fetch)."""
        if self.workers > 0 and self._pool is None and self._warming is None:
            self._warming = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> object:
        try:
            return await self._executor()
        except Exception:  # the first parse will start a pool again and report what fails
            log.warning("parser processes could not be started in advance", exc_info=True)
            return None
        finally:
            self._warming = None

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        if self._pool is broken:
            self._pool = None
            broken.shutdown(wait=False, cancel_futures=True)

    async def run(self, size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``fn(*args, **kwargs)`` where it costs least for a body of ``size`` bytes.

        ``fn`` must be a module-level function whose arguments and result pickle.
        """
        if self.workers <= 0 or size < IN_PROCESS_BELOW:
            return await asyncio.to_thread(fn, *args, **kwargs)
        if (
            size <= THREAD_AT_MOST
            and self._pool is None
            and self._warming is None
            and self._large_in_threads < THREADS_BEFORE_WORKERS
        ):
            self._large_in_threads += 1
            try:
                return await asyncio.to_thread(fn, *args, **kwargs)
            finally:
                self._large_in_threads -= 1
        loop = asyncio.get_running_loop()
        call: Callable[[], T] = functools.partial(fn, *args, **kwargs)
        for attempt in (1, 2):
            pool = await self._executor()
            self._busy += 1
            try:
                result = await loop.run_in_executor(pool, call)
                self._parsed_in_pool += 1
                return result
            except BrokenProcessPool:
                log.warning("a parser process died; starting a new one attempt=%d", attempt)
                self._replace(pool)
                continue
            finally:
                self._busy -= 1
        raise ParserCrashed("the parser process died while reading this body (twice)")

    async def feed(self, body: bytes, content_type: str | None) -> ParsedFeed | ParseFailed:
        """``bot.sources.feeds.parse_feed`` of ``body``."""
        result = await self.run(len(body), parse_by_name, "feed", body, content_type)
        assert isinstance(result, ParsedFeed | ParseFailed)
        return result

    async def calendar(self, body: bytes, **options: Any) -> ParsedCalendar | CalendarFailed:
        """``bot.sources.calendars.parse_calendar`` of ``body``."""
        result = await self.run(len(body), parse_by_name, "calendar", body, **options)
        assert isinstance(result, ParsedCalendar | CalendarFailed)
        return result

    async def depositary(self, body: bytes) -> ParsedDepositary | DepositaryFailed:
        """``bot.sources.depositary.parse_depositary`` of ``body``."""
        result = await self.run(len(body), parse_by_name, "depositary", body)
        assert isinstance(result, ParsedDepositary | DepositaryFailed)
        return result

    async def close_if_quiet(self, fewer_than: int = QUIET_BELOW) -> bool:
        """Stop the workers, and the server they are forked from, if they parsed fewer than
        ``fewer_than`` bodies since the last call and none is parsing now; whether they were
        stopped. Until enough bodies arrive at once, large ones are parsed in a thread."""
        parsed, self._parsed_in_pool = self._parsed_in_pool, 0
        fresh, self._started_since_check = self._started_since_check, False
        pool = self._pool
        if pool is None or self._busy or fresh or parsed >= fewer_than:
            return False
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:  # no pool starts while the server stops
            if self._pool is not pool or self._busy:
                return False
            self._pool = None
            await asyncio.to_thread(_stop_pool, pool)
        return True

    def close(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            self._warming = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
