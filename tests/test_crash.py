"""`kill -9` at random moments loses no alert and posts none twice (console transport)."""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

from tests.crashfeeds import (
    FEEDS,
    assert_exactly_once,
    bot_env,
    growing_feeds,
    once,
    start_run,
    write_config,
)


def test_sigkill_at_random_moments(tmp_path: Path) -> None:
    with growing_feeds() as (state, base):
        config = write_config(tmp_path / "cfg", storage=tmp_path / "state.json", base=base)
        env = bot_env()
        printed: list[str] = []
        rng = random.Random(20261128)

        def collect(out: bytes) -> None:
            printed.extend(
                json.loads(line)["title"] for line in out.decode().splitlines() if line.strip()
            )

        # the first poll of each feed only remembers what exists: recorded by a clean round
        # first, so that every item served afterwards must be posted (a kill before a first poll
        # is recorded makes the next poll the first one, which rightly posts nothing)
        collect(once(config, env, "--format", "jsonl"))
        for _ in range(20):
            proc = start_run(config, env, "--format", "jsonl")
            time.sleep(rng.uniform(0.5, 4.0))  # fault injection: the kill lands anywhere
            proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate()
            collect(out)
        # a last, clean round delivers whatever the kills left behind
        for _ in range(2):
            collect(once(config, env, "--format", "jsonl"))

    # every item the server ever served was posted, except those of each feed's first (empty)
    # poll, which only remembers
    assert_exactly_once(printed, state.snapshot(), minimum=FEEDS * 3 + 1)
    with open(tmp_path / "state.json") as handle:
        json.load(handle)  # and the state file is whole
