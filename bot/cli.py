"""``treaty-bot``: argument parsing and exit codes; the work is done by ``bot.app`` (and by
``bot.storage`` for ``migrate``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from bot import __version__
from bot.clock import Clock, FixedClock, SystemClock
from bot.errors import ConfigError, StoreError, TreatyBotError
from bot.logs import setup_logging

if TYPE_CHECKING:
    from types import FrameType

    from bot.configuration import Config

# The rest of the bot is imported by ``main`` once it knows the command: ``schema`` and
# ``check`` need neither the HTTP client nor the transports.

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 instant, e.g. 2026-03-01T09:00Z"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone; add Z or an offset, e.g. 2026-03-01T09:00Z"
        )
    return value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="DIR",
        default=os.environ.get("TREATY_BOT_CONFIG", "config"),
        help="configuration directory (default: $TREATY_BOT_CONFIG or ./config)",
    )
    common.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    common.add_argument("--log-format", default="text", choices=["text", "json"])

    parser = argparse.ArgumentParser(
        prog="treaty-bot",
        description="Treaty Watch: alerts and answers about the UN Convention against "
        "Cybercrime, for Slack and Matrix.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"treaty-bot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", parents=[common], help="run the bot")
    run.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="console output: text, or one JSON object per alert",
    )

    sub.add_parser(
        "check", parents=[common], help="validate the configuration; exit 1 on any problem"
    )

    schema = sub.add_parser(
        "schema",
        parents=[common],
        help="print the JSON Schema of the configuration files (for editors)",
    )
    schema.add_argument(
        "file",
        nargs="?",
        choices=["bot", "feeds", "sessions", "clauses", "treaty"],
        help="one file's schema (default: all, as one JSON object)",
    )
    schema.add_argument(
        "--write", metavar="DIR", help="write one <file>.schema.json per file into DIR instead"
    )
    schema.add_argument(
        "--markdown", action="store_true", help="print the reference of every key as Markdown"
    )

    once = sub.add_parser(
        "once", parents=[common], help="poll every source once, deliver what is due, exit"
    )
    once.add_argument("--format", choices=["text", "jsonl"], default="text")
    once.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be posted; record and deliver nothing",
    )
    once.add_argument(
        "--now",
        type=_instant,
        metavar="INSTANT",
        help="act as if it were this instant (ISO 8601 with offset)",
    )
    ask = sub.add_parser("ask", parents=[common], help="answer one command in the terminal")
    ask.add_argument("text", nargs="+", help='the command, e.g. "next-session" or "clause 4"')
    ask.add_argument(
        "--now",
        type=_instant,
        metavar="INSTANT",
        help="answer as if it were this instant (ISO 8601 with offset)",
    )
    migrate = sub.add_parser(
        "migrate",
        parents=[common],
        help="copy the state into a PostgreSQL database or a state file",
        description="Copy the state the configuration names (bot.yaml's storage, or "
        "$TREATY_BOT_DATABASE_URL) into another store, and check the copy. Stop the bot first.",
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL|FILE",
        help="a postgresql:// URL, or a state file to write",
    )
    migrate.add_argument(
        "--force", action="store_true", help="replace what the target holds already"
    )
    return parser


def _load(directory: str) -> Config | None:
    from bot.configuration import load_config

    try:
        return load_config(directory)
    except ConfigError as err:
        for problem in err.problems:
            print(_prefix(directory, str(problem)), file=sys.stderr)
        print(f"{len(err.problems)} problem(s) in {directory}", file=sys.stderr)
        return None


def _prefix(directory: str, line: str) -> str:
    return line if line.startswith(directory) else os.path.join(directory, line)


def _stand_for_package_main() -> None:
    """Started as the ``treaty-bot`` script, be ``bot.__main__``, which the script stands for.

    A worker process (the parsers') prepares itself from the main module: by its path it would
    run the script again and import the whole bot; by the name of a package's ``__main__`` it
    imports nothing more than the parsers it was forked with.
    """
    module = sys.modules.get("__main__")
    if module is not None and getattr(module, "__spec__", None) is None:
        module.__spec__ = importlib.util.find_spec("bot.__main__")


class StopAsked:
    """A SIGTERM that arrives while ``run`` starts (reading its configuration, opening its store,
    taking its leases), before ``App.run`` has handlers of its own.

    Its default action would end the process half-way, with no exit code of its own and leases
    left to expire; remembered instead, ``run`` stops as soon as it has started, in order and
    with exit code 0, as a SIGTERM at any later time makes it do.
    """

    def __init__(self) -> None:
        self.asked = False

    def listen(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: the caller's signals
            signal.signal(signal.SIGTERM, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        self.asked = True

    def __call__(self) -> bool:
        return self.asked


def main(argv: Sequence[str] | None = None) -> int:
    _stand_for_package_main()
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    stop_asked = StopAsked()
    if args.command == "run":
        stop_asked.listen()

    if args.command == "schema":
        return _schema(args.file, args.write, markdown_text=args.markdown)

    config = _load(args.config)
    if config is None:
        return EXIT_PROBLEMS
    if args.command == "check":
        print(
            f"{args.config}: OK ({len(config.feeds)} feeds, "
            f"{len(config.sessions_file.calendars)} calendars, "
            f"{len(config.sessions_file.sessions)} sessions, "
            f"{len(config.clauses_file.clauses)} clauses"
            f"{', the depositary' if config.depositary is not None else ''})"
        )
        return EXIT_OK

    if args.command == "migrate":
        return _migrate(config, args.to, force=args.force)

    clock: Clock = FixedClock(args.now) if getattr(args, "now", None) else SystemClock()
    try:
        if args.command == "once":
            return asyncio.run(_once(config, clock, args.format, args.dry_run))
        if args.command == "ask":
            return asyncio.run(_ask(config, clock, " ".join(args.text)))
        return asyncio.run(_run(config, clock, args.format, stop_asked))
    except StoreError as err:
        print(f"treaty-bot: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except TreatyBotError as err:
        print(f"treaty-bot: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    except KeyboardInterrupt:
        return 130


def _migrate(config: Config, to: str, *, force: bool) -> int:
    from bot.storage import migrate, state_location, target_location

    try:
        copied = migrate(
            state_location(config.bot.storage, os.environ), target_location(to), force=force
        )
    except StoreError as err:
        print(f"treaty-bot: {err}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(copied)
    return EXIT_OK


async def _once(config: Config, clock: Clock, fmt: str, dry_run: bool) -> int:
    from bot.app import App

    async with App(
        config, clock=clock, fmt="jsonl" if fmt == "jsonl" else "text", dry_run=dry_run
    ) as app:
        await app.once()
    return EXIT_OK


async def _run(config: Config, clock: Clock, fmt: str, stop_asked: StopAsked) -> int:
    from bot.app import App

    async with App(
        config, clock=clock, fmt="jsonl" if fmt == "jsonl" else "text", replica=True
    ) as app:
        await app.run(stop_asked=stop_asked)
    return EXIT_OK


def _schema(file: str | None, write: str | None, *, markdown_text: bool) -> int:
    from bot.configuration.schema import all_schemas, markdown, schema_filename, schema_for

    if markdown_text:
        print(markdown(), end="")
        return EXIT_OK
    if write:
        target = Path(write)
        target.mkdir(parents=True, exist_ok=True)
        for name, schema in all_schemas().items():
            path = target / schema_filename(name)
            path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
            print(path)
        return EXIT_OK
    data = schema_for(f"{file}.yaml") if file else all_schemas()
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return EXIT_OK


async def _ask(config: Config, clock: Clock, text: str) -> int:
    from bot.app import App

    async with App(config, clock=clock, dry_run=True) as app:
        answer = await app.ask(text)
        app.console.reply(answer)
    return EXIT_OK
