"""The embedded default: alerts printed to the terminal, as text or as JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import queue
import re
import sys
import threading
from collections.abc import Callable, Iterator
from typing import IO, Literal, TextIO
from zoneinfo import ZoneInfo

from bot.domain.follows import dm_user
from bot.domain.model import Alert, ChannelName
from bot.domain.text import render_plain
from bot.domain.timefmt import format_local
from bot.transports.base import Answer, Capabilities, CommandHandler, Inbound

log = logging.getLogger(__name__)

Format = Literal["text", "jsonl"]
MAX_COMMAND = 1000
JOURNAL_KEPT = 2000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """Drop control characters (escape sequences could rewrite the operator's terminal)."""
    return _CONTROL.sub("", text)


def alert_json(alert: Alert, channel: str) -> str:
    """One alert as SPEC's JSON line."""
    return json.dumps(
        {
            "kind": alert.kind,
            "id": alert.id,
            "channel": channel,
            "source": alert.source,
            "title": alert.title,
            "url": alert.url,
            "text": alert.text,
            "at": alert.at.isoformat().replace("+00:00", "Z"),
        },
        ensure_ascii=False,
    )


def alert_text(alert: Alert, channel: str, tz: ZoneInfo) -> str:
    user = dm_user(channel)
    where = f"@{user}" if user is not None else f"#{channel}"  # a person's direct messages
    head = f"── {alert.kind} → {where} · {format_local(alert.at, tz)}"
    body = render_plain(alert.body) if alert.body else alert.text
    return (
        terminal_safe(head)
        + "\n"
        + "\n".join("  " + terminal_safe(line) for line in body.splitlines())
    )


_Jobs = queue.SimpleQueue[
    tuple[Callable[[], None], "asyncio.Future[None]", asyncio.AbstractEventLoop] | None
]


class LineWriter:
    """Runs writes to the terminal, in order, in a daemon thread of its own.

    Standard output can stop taking bytes: a pipe nobody reads, a terminal paused with
    Ctrl-S. A write on the event loop would then freeze the whole bot (commands, polls, and a
    replica's heartbeat, so that its leases expire and another replica prints the rows it is
    stuck on). Here only this thread waits; ``run`` returns once the write is done. Being a
    daemon, a thread stuck on a stream that never drains does not hold up the exit.
    """

    def __init__(self) -> None:
        self._jobs: _Jobs | None = None

    async def run(self, write: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._jobs is None:
            self._jobs = queue.SimpleQueue()
            threading.Thread(
                target=self._work, args=(self._jobs,), name="console-output", daemon=True
            ).start()
        self._jobs.put((write, done, loop))
        await done

    def close(self) -> None:
        """The thread ends once what was queued is written."""
        if self._jobs is not None:
            self._jobs.put(None)
            self._jobs = None

    @staticmethod
    def _work(jobs: _Jobs) -> None:
        while (job := jobs.get()) is not None:
            write, done, loop = job
            error: BaseException | None = None
            try:
                write()
            except Exception as err:  # handed to the sender, as a write on the loop would be
                error = err
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, done, error)


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.cancelled():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)


class ConsoleTransport:
    """Prints every alert of every channel (a person's direct messages as "→ @user");
    never fails, never mentions anyone."""

    name = "console"
    capabilities = Capabilities(max_text=100_000, rich=False)

    def __init__(
        self,
        *,
        fmt: Format = "text",
        tz: ZoneInfo | None = None,
        stream: TextIO | None = None,
        input_stream: IO[bytes] | IO[str] | None = None,
    ) -> None:
        self.fmt = fmt
        self.tz = tz or ZoneInfo("UTC")
        self._stream = stream
        self._input = input_stream
        self._on_command: CommandHandler | None = None
        self._reader: asyncio.Task[None] | None = None
        self._journal: TextIO | None = None
        self._journal_path: str | None = None
        self._printed: set[str] = set()
        #: keys whose line is queued for the writer's thread or being written
        self._pending: set[str] = set()
        self._writer = LineWriter()
        #: one write at a time on the alerts' stream (the writer's thread, and answers)
        self._stream_lock = threading.Lock()
        #: the journal is appended to in the writer's thread, opened and closed on the loop
        self._journal_guard = threading.Lock()

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stdout

    async def start(self, on_command: CommandHandler, *, read_input: bool = False) -> None:
        """Take commands typed on standard input (one per line) when ``read_input``."""
        self._on_command = on_command
        if read_input and self._reader is None:
            self._reader = asyncio.create_task(self._read_commands(), name="console-input")

    async def stop(self) -> None:
        self._on_command = None
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read_commands(self) -> None:
        """Answer each line typed on standard input.

        Lines are read by a daemon thread (blocking reads leave the terminal's flags alone,
        and a daemon thread never holds up the exit); the answers are computed on the loop.
        """
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        source = self._input or sys.stdin

        def pump() -> None:
            try:
                for raw in source:
                    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
                    loop.call_soon_threadsafe(lines.put_nowait, text[:MAX_COMMAND])
            except (OSError, ValueError, RuntimeError):
                pass
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=pump, name="console-input", daemon=True).start()
        while (line := await lines.get()) is not None:
            text = line.strip()
            if not text or self._on_command is None:
                continue
            for prefix in ("/treaty", "!treaty"):
                if text.lower().startswith(prefix):
                    text = text[len(prefix) :].strip()
            try:
                answer = await self._on_command(Inbound("console", "", None, text))
            except Exception:
                log.exception("console command failed")
                continue
            self.reply(answer)

    def reply(self, answer: Answer) -> None:
        """Show an answer: on standard output in text mode, on standard error in JSON lines
        mode (so that standard output stays one alert per line)."""
        self.reply_text(render_plain(answer.body) if answer.body else answer.title)

    def reply_text(self, text: str) -> None:
        stream = self.stream if self.fmt == "text" else sys.stderr
        with self._stream_lock if stream is self.stream else contextlib.nullcontext():
            stream.write(terminal_safe(text) + "\n")
            stream.flush()

    def problem(self) -> str | None:
        return None

    def reaches(self, channel: ChannelName) -> bool:
        return True

    def render(self, alert: Alert, channel: str) -> str:
        if self.fmt == "jsonl":
            return alert_json(alert, channel)
        return alert_text(alert, channel, self.tz)

    async def send(self, channel: ChannelName, alert: Alert, key: str) -> None:
        """Print the alert, then note its key in the journal, both in the writer's thread
        (``LineWriter``); returns once both are done. Cancelled meanwhile, the line is still
        printed and noted, so a later ``was_delivered`` says so (and says so meanwhile)."""
        line, stream = self.render(alert, channel) + "\n", self.stream
        self._pending.add(key)
        await self._writer.run(lambda: self._print(stream, line, key))

    def _print(self, stream: TextIO, line: str, key: str) -> None:
        try:
            with self._stream_lock:
                stream.write(line)
                stream.flush()
            with self._journal_guard:
                if self._journal is not None:
                    with self._journal_lock():
                        self._reopen_if_replaced()
                        self._journal.write(key + "\n")
                        self._journal.flush()
                    self._printed.add(key)
        finally:
            self._pending.discard(key)

    async def was_delivered(self, channel: ChannelName, alert: Alert, key: str) -> bool:
        """Whether the journal says this row was printed (a crash came before "sent"). The
        file is read again for a key this process did not print: replicas on one machine
        share the journal, and the row may be one a replica that died left behind."""
        if key in self._printed or key in self._pending:  # printed, or on its way out
            return True
        if self._journal_path is None:
            return False
        with self._journal_lock():
            self._printed |= set(self._read_journal(self._journal_path))
        return key in self._printed

    @staticmethod
    def _read_journal(path: str) -> list[str]:
        with (
            contextlib.suppress(FileNotFoundError),
            open(path, encoding="utf-8", errors="replace") as handle,
        ):
            # a last line without its newline was cut short by a crash: not a whole key
            return [line[:-1] for line in handle if line.endswith("\n") and line.strip()]
        return []

    @contextlib.contextmanager
    def _journal_lock(self) -> Iterator[None]:
        """Replicas on one machine append to one journal; one of them trims it at start."""
        if self._journal_path is None:
            yield
            return
        with open(self._journal_path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _reopen_if_replaced(self) -> None:
        """Another process trimmed the journal (a new file): append to that one."""
        assert self._journal is not None and self._journal_path is not None
        try:
            current = os.stat(self._journal_path).st_ino
        except FileNotFoundError:
            current = -1
        if current != os.fstat(self._journal.fileno()).st_ino:
            self._journal.close()
            self._journal = open(self._journal_path, "a", encoding="utf-8")  # noqa: SIM115

    def open_journal(self, path: str) -> None:
        """Keep a journal of printed rows, so a restart after a crash does not print twice.

        The journal holds the keys of the last rows printed, one per line; it is trimmed at
        each start.
        """
        self._journal_path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)  # data/ beside a database
        with self._journal_guard, self._journal_lock():
            keys = self._read_journal(path)[-JOURNAL_KEPT:]
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write("".join(k + "\n" for k in keys))
            os.replace(tmp, path)
            self._printed = set(keys)
            self._journal = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def close(self) -> None:
        self._writer.close()
        with self._journal_guard:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
