"""Runs ``treaty-bot`` with a watch on its event loop, for ``bench.load``; nothing in ``bot/``
changes.

    python -m bench.loopwatch --out watch.json -- run --config DIR

Before handing over to ``bot.cli.main``, it installs an event-loop policy whose loops carry:

- **a lag probe**: a task that sleeps ``--probe`` seconds (10 ms) again and again and records
  by how much each sleep overran: a histogram, the largest, every overrun above 20 ms with its
  time, and the largest per second;
- **iteration timing**: each turn of the loop (``_run_once``) is timed without the time it
  waited in ``select``; a turn busy for more than ``--stall`` (50 ms) is recorded with the
  number of callbacks it ran and the longest one (its task name and coroutine);
- **a stall sampler**: a thread that, while a turn has been busy for more than 20 ms, takes the
  loop thread's Python stack every 5 ms (and the stacks of the other threads that are running
  Python, which may hold the GIL), summed by function: which code the loop was in when it
  stalled;
- **collector pauses**: every ``gc`` collection of 5 ms or more, with its generation.

The figures are written as JSON to ``--out`` every 2 s and at exit. Only the standard library
is imported here, so the bot's memory and start-up are its own. The overhead: two
``perf_counter`` calls per callback and per loop turn.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import gc
import json
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

#: Overruns of the probe's sleep at or above this are listed one by one (seconds).
LIST_LAG = 0.020
#: The sampler looks at the loop thread's stack once a turn has been busy this long (seconds).
SAMPLE_AFTER = 0.020
SAMPLE_EVERY = 0.005
#: Histogram buckets of the probe's overrun (upper bounds, seconds).
BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, float("inf"))
#: Frames kept of a sampled stack (innermost).
DEPTH = 14
#: Functions a thread waits in when it is idle (not holding the GIL): not worth a sample.
IDLE = frozenset(
    {"wait", "_worker", "select", "poll", "get", "_wait_for_tstate_lock", "acquire", "recv"}
)
_DIGITS = re.compile(r"\d+")


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = path.removeprefix(os.getcwd() + "/")
    return f"{path}:{code.co_name}"


def _stack(frame: FrameType | None) -> list[str]:
    out: list[str] = []
    while frame is not None and len(out) < DEPTH:
        out.append(_where(frame))
        frame = frame.f_back
    return out  # innermost first


def describe(handle: asyncio.Handle) -> str:
    """A callback's name: for a task step, the task's name (digits folded) and coroutine."""
    callback = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro = owner.get_coro()
        name = getattr(coro, "__qualname__", type(coro).__name__)
        return f"task {_DIGITS.sub('N', owner.get_name())} {name}"
    name = getattr(callback, "__qualname__", None) or repr(callback)
    return _DIGITS.sub("N", str(name))[:120]


class Watch:
    def __init__(self, out: str, probe: float, stall: float) -> None:
        self.out = out
        self.probe = probe
        self.stall = stall
        self.started = time.time()
        self.lock = threading.Lock()
        # the probe
        self.lag_count = 0
        self.lag_sum = 0.0
        self.lag_max = 0.0
        self.lag_buckets = [0] * len(BUCKETS)
        self.lag_listed: list[tuple[float, float]] = []  # (unix time, overrun)
        self.lag_per_second: dict[int, float] = {}  # second since start -> largest overrun
        # loop turns
        self.turns = 0
        self.busy_total = 0.0
        self.callbacks = 0
        self.slow_turns: list[dict[str, Any]] = []
        self.slow_callbacks: Counter[str] = Counter()  # longest callback of slow turns
        self.slow_callback_seconds: dict[str, float] = {}
        # the current turn (written by the loop thread, read by the sampler)
        self.loop_thread = 0
        self.busy_since: float | None = None
        self.turn_handles = 0
        self.turn_longest = 0.0
        self.turn_longest_name = ""
        self.turn_samples: list[list[str]] = []
        # sampler totals
        self.samples = 0
        self.inclusive: Counter[str] = Counter()  # loop stack samples per function (once each)
        self.leaf: Counter[str] = Counter()
        self.other_threads: Counter[str] = Counter()  # innermost 3 frames of busy threads
        # the collector
        self.gc_started: float | None = None
        self.gc_counts: Counter[int] = Counter()
        self.gc_seconds: dict[int, float] = {}
        self.gc_slow: list[tuple[float, int, float]] = []
        self.gc_max: dict[int, float] = {}

    # -- the loop ---------------------------------------------------------------------------

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        base = loop
        selector = getattr(base, "_selector", None)
        run_once = getattr(base, "_run_once", None)
        if selector is None or run_once is None:
            return
        self.loop_thread = threading.get_ident()
        select = selector.select
        watch = self

        def timed_select(timeout: float | None = None) -> Any:
            now = time.perf_counter()
            if watch.busy_since is not None:
                watch._end_turn(now - watch.busy_since)
            watch.busy_since = None
            try:
                return select(timeout)
            finally:
                watch.busy_since = time.perf_counter()
                watch.turn_handles = 0
                watch.turn_longest = 0.0
                watch.turn_longest_name = ""
                watch.turn_samples = []

        selector.select = timed_select
        original: Callable[[asyncio.Handle], None] = asyncio.Handle._run

        def timed_run(handle: asyncio.Handle) -> None:
            started = time.perf_counter()
            try:
                original(handle)
            finally:
                took = time.perf_counter() - started
                watch.turn_handles += 1
                if took > watch.turn_longest:
                    watch.turn_longest = took
                    watch.turn_longest_name = describe(handle)

        setattr(asyncio.Handle, "_run", timed_run)  # noqa: B010 - patched on purpose
        loop.call_soon(lambda: loop.create_task(self._probe(), name="loopwatch-probe"))

    def _end_turn(self, busy: float) -> None:
        self.turns += 1
        self.busy_total += busy
        self.callbacks += self.turn_handles
        if busy < self.stall:
            return
        with self.lock:
            samples = self.turn_samples
            self.turn_samples = []
        leaf = Counter(s[0] for s in samples if s)
        frames: Counter[str] = Counter()
        for stack in samples:
            frames.update(set(stack))
        self.slow_callbacks[self.turn_longest_name] += 1
        self.slow_callback_seconds[self.turn_longest_name] = (
            self.slow_callback_seconds.get(self.turn_longest_name, 0.0) + self.turn_longest
        )
        if len(self.slow_turns) < 2000:
            self.slow_turns.append(
                {
                    "at": round(time.time() - busy - self.started, 3),
                    "busy_ms": round(busy * 1000, 1),
                    "callbacks": self.turn_handles,
                    "longest_ms": round(self.turn_longest * 1000, 1),
                    "longest": self.turn_longest_name,
                    "samples": len(samples),
                    "leaf": dict(leaf.most_common(6)),
                    "frames": dict(frames.most_common(30)),
                    "stack": samples[len(samples) // 2][:DEPTH] if samples else [],
                }
            )

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(self.probe)
            lag = max(0.0, loop.time() - started - self.probe)
            self.lag_count += 1
            self.lag_sum += lag
            self.lag_max = max(self.lag_max, lag)
            for i, bound in enumerate(BUCKETS):
                if lag <= bound:
                    self.lag_buckets[i] += 1
                    break
            now = time.time()
            second = int(now - self.started)
            if lag > self.lag_per_second.get(second, -1.0):
                self.lag_per_second[second] = lag
            if lag >= LIST_LAG:
                self.lag_listed.append((round(now - self.started, 3), round(lag, 4)))

    # -- the sampler thread -----------------------------------------------------------------

    def sample_forever(self) -> None:
        last_dump = time.monotonic()
        me = threading.get_ident()
        while True:
            time.sleep(SAMPLE_EVERY)
            since = self.busy_since
            if since is not None and time.perf_counter() - since >= SAMPLE_AFTER:
                frames = sys._current_frames()
                loop_frame = frames.get(self.loop_thread)
                if loop_frame is not None:
                    stack = _stack(loop_frame)
                    self.samples += 1
                    for name in set(stack):
                        self.inclusive[name] += 1
                    if stack:
                        self.leaf[stack[0]] += 1
                    with self.lock:
                        self.turn_samples.append(stack)
                for ident, frame in frames.items():
                    if ident in (me, self.loop_thread):
                        continue
                    stack = _stack(frame)
                    if stack and stack[0].rsplit(":", 1)[-1] not in IDLE:
                        self.other_threads[" < ".join(stack[:3])] += 1
            if time.monotonic() - last_dump >= 2.0:
                last_dump = time.monotonic()
                self.dump()

    # -- the collector ----------------------------------------------------------------------

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self.gc_started = time.perf_counter()
            return
        if self.gc_started is None:
            return
        took = time.perf_counter() - self.gc_started
        self.gc_started = None
        generation = int(info.get("generation", -1))
        self.gc_counts[generation] += 1
        self.gc_seconds[generation] = self.gc_seconds.get(generation, 0.0) + took
        self.gc_max[generation] = max(self.gc_max.get(generation, 0.0), took)
        if took >= 0.005 and len(self.gc_slow) < 5000:
            self.gc_slow.append(
                (round(time.time() - self.started, 3), generation, round(took * 1000, 2))
            )

    # -- output -----------------------------------------------------------------------------

    def as_dict(self) -> dict[str, Any]:
        return {
            "started_unix": self.started,
            "probe_seconds": self.probe,
            "stall_seconds": self.stall,
            "lag": {
                "count": self.lag_count,
                "mean_ms": round(self.lag_sum / self.lag_count * 1000, 3)
                if self.lag_count
                else None,
                "max_ms": round(self.lag_max * 1000, 2),
                "buckets_le_ms": {
                    ("inf" if b == float("inf") else f"{b * 1000:g}"): n
                    for b, n in zip(BUCKETS, self.lag_buckets, strict=True)
                },
                "listed_over_ms": LIST_LAG * 1000,
                "listed": self.lag_listed[-5000:],
                "max_per_second_ms": {
                    str(k): round(v * 1000, 2) for k, v in sorted(self.lag_per_second.items())
                },
            },
            "turns": {
                "count": self.turns,
                "busy_seconds": round(self.busy_total, 3),
                "callbacks": self.callbacks,
                "slow": self.slow_turns,
                "slow_by_longest_callback": dict(self.slow_callbacks.most_common(30)),
                "slow_longest_callback_seconds": {
                    k: round(v, 3)
                    for k, v in sorted(self.slow_callback_seconds.items(), key=lambda kv: -kv[1])[
                        :30
                    ]
                },
            },
            "stall_samples": {
                "count": self.samples,
                "every_ms": SAMPLE_EVERY * 1000,
                "after_busy_ms": SAMPLE_AFTER * 1000,
                "inclusive": dict(self.inclusive.most_common(60)),
                "leaf": dict(self.leaf.most_common(40)),
                "other_threads_busy": dict(self.other_threads.most_common(30)),
            },
            "gc": {
                "collections": {str(k): v for k, v in sorted(self.gc_counts.items())},
                "seconds": {str(k): round(v, 3) for k, v in sorted(self.gc_seconds.items())},
                "max_ms": {str(k): round(v * 1000, 2) for k, v in sorted(self.gc_max.items())},
                "slow": self.gc_slow[-2000:],
            },
        }

    def dump(self) -> None:
        try:
            data = json.dumps(self.as_dict())
        except RuntimeError:  # a dict changed size while another thread wrote it: next time
            return
        tmp = self.out + ".tmp"
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, self.out)


def install(out: str, probe: float, stall: float) -> Watch:
    watch = Watch(out, probe, stall)

    class Policy(asyncio.DefaultEventLoopPolicy):
        installed = False

        def new_event_loop(self) -> asyncio.AbstractEventLoop:
            loop = super().new_event_loop()
            if not Policy.installed and threading.current_thread() is threading.main_thread():
                Policy.installed = True  # the bot's loop; loops of other threads are left alone
                watch.install(loop)
            return loop

    asyncio.set_event_loop_policy(Policy())
    gc.callbacks.append(watch.on_gc)
    threading.Thread(target=watch.sample_forever, name="loopwatch", daemon=True).start()
    atexit.register(watch.dump)
    return watch


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loopwatch", description=__doc__)
    parser.add_argument("--out", required=True, help="where the JSON goes")
    parser.add_argument("--probe", type=float, default=0.010, help="probe sleep (seconds)")
    parser.add_argument(
        "--stall", type=float, default=0.050, help="loop turns busy this long are listed (s)"
    )
    parser.add_argument("bot_args", nargs=argparse.REMAINDER, help="-- then treaty-bot's arguments")
    args = parser.parse_args(argv)
    bot_args = list(args.bot_args)
    if bot_args[:1] == ["--"]:
        bot_args = bot_args[1:]
    install(args.out, args.probe, args.stall)
    from bot.cli import main as bot_main

    return bot_main(bot_args)


if __name__ == "__main__":
    sys.exit(main())
