"""The console transport's output: a standard output that stops taking bytes (a pipe nobody
reads, a terminal paused with Ctrl-S) holds up the alert being printed, not the bot."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from pathlib import Path

from bot.domain.model import ChannelName
from bot.transports.console import ConsoleTransport
from tests.unit.test_delivery import alert

#: How long a held write waits for the test to let it through. Past that it goes on by itself,
#: so that a bot whose loop it froze fails the test instead of hanging it.
HELD = 5.0
#: The deadline of every wait; it only turns a hang into a failure.
WAIT = 30.0
CHANNEL = ChannelName("alerts")


class HeldStream(io.StringIO):
    """A stream whose first write waits until ``release`` (or ``HELD``)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(HELD)
        return super().write(text)


async def test_a_stream_that_stops_taking_bytes_holds_up_the_alert_not_the_loop(
    tmp_path: Path,
) -> None:
    stream = HeldStream()
    console = ConsoleTransport(fmt="jsonl", stream=stream)
    console.open_journal(str(tmp_path / "journal"))
    try:
        sending = asyncio.create_task(console.send(CHANNEL, alert(1, "alerts"), "k1"))
        await asyncio.to_thread(stream.entered.wait, WAIT)
        ran = asyncio.create_task(asyncio.sleep(0, "the loop went on"))
        assert await asyncio.wait_for(ran, WAIT) == "the loop went on"
        assert not sending.done(), "the write ran on the loop and held it up"
        assert (tmp_path / "journal").read_text() == ""  # noted once printed, not before
        later = asyncio.create_task(console.send(CHANNEL, alert(2, "alerts"), "k2"))
        stream.release.set()
        await asyncio.wait_for(asyncio.gather(sending, later), WAIT)
        lines = [json.loads(line)["id"] for line in stream.getvalue().splitlines()]
        assert lines == ["a1", "a2"]  # in the order sent
        for key in ("k1", "k2"):
            assert await console.was_delivered(CHANNEL, alert(1, "alerts"), key)
        assert (tmp_path / "journal").read_text() == "k1\nk2\n"
    finally:
        stream.release.set()
        console.close()


async def test_a_send_cancelled_while_held_is_still_printed_and_noted(tmp_path: Path) -> None:
    stream = HeldStream()
    console = ConsoleTransport(fmt="jsonl", stream=stream)
    console.open_journal(str(tmp_path / "journal"))
    try:
        sending = asyncio.create_task(console.send(CHANNEL, alert(1, "alerts"), "k1"))
        await asyncio.to_thread(stream.entered.wait, WAIT)
        sending.cancel()  # a shutdown that does not wait for it
        with contextlib.suppress(asyncio.CancelledError):
            await sending
        # on its way out: whoever checks the row meanwhile must not print it again
        assert await console.was_delivered(CHANNEL, alert(1, "alerts"), "k1")
        stream.release.set()
        # a later send returns once the earlier one is written: one thread, in order
        await asyncio.wait_for(console.send(CHANNEL, alert(2, "alerts"), "k2"), WAIT)
        assert await console.was_delivered(CHANNEL, alert(1, "alerts"), "k1")
        assert [json.loads(line)["id"] for line in stream.getvalue().splitlines()] == ["a1", "a2"]
    finally:
        stream.release.set()
        console.close()


async def test_a_write_that_fails_fails_the_send(tmp_path: Path) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("nobody reads")

    console = ConsoleTransport(fmt="jsonl", stream=Closed())
    console.open_journal(str(tmp_path / "journal"))
    try:
        try:
            await asyncio.wait_for(console.send(CHANNEL, alert(1, "alerts"), "k1"), WAIT)
        except BrokenPipeError:
            pass
        else:
            raise AssertionError("the send said it printed")
        assert not await console.was_delivered(CHANNEL, alert(1, "alerts"), "k1")
    finally:
        console.close()
