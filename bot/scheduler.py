"""Supervised background jobs: one owner for every task, periodic jobs with jitter.

A job that raises is logged with its name and runs again at its next turn; cancellation always
propagates. Nothing is started with a bare ``create_task``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)


class Supervisor:
    """Owns background tasks; ``stop()`` cancels and awaits them all."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self.crashes = 0

    def spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(name, coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # a task cancelled before it ever ran leaves its coroutine unstarted: close it
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self.crashes += 1
            log.exception("job stopped by an unexpected error job=%s", name)

    @property
    def running(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set; return whether it was set."""
    if seconds <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
    return stop.is_set()


def jittered(delay: timedelta, spread: float = 0.1) -> float:
    """``delay`` in seconds, moved at random by up to ``spread`` of itself."""
    seconds = delay.total_seconds()
    return max(0.0, seconds * random.uniform(1 - spread, 1 + spread))


def jittered_early(delay: timedelta, spread: float = 0.1) -> float:
    """``delay`` in seconds, brought forward at random by up to ``spread`` of itself, never
    later: a source polled ``every`` 15 minutes is polled within 15 minutes of its last poll."""
    seconds = delay.total_seconds()
    return max(0.0, seconds * random.uniform(1 - spread, 1.0))


async def periodic(
    name: str,
    stop: asyncio.Event,
    job: Callable[[], Awaitable[timedelta]],
    *,
    first_delay: float = 0.0,
) -> None:
    """Run ``job`` until ``stop``; each run returns how long to wait before the next one."""
    if await wait_or_stop(stop, first_delay):
        return
    while not stop.is_set():
        try:
            delay = await job()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("job failed; it runs again later job=%s", name)
            delay = timedelta(minutes=1)
        if await wait_or_stop(stop, jittered(delay)):
            return
