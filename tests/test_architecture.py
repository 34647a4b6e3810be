"""The layering of STYLE.md, enforced: the pure core stays pure, vendors stay at their edge."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

BOT = Path(__file__).resolve().parent.parent / "bot"

FORBIDDEN_IN_DOMAIN = (
    "asyncio",
    "aiohttp",
    "tinydb",
    "psycopg",
    "psycopg_pool",
    "feedparser",
    "icalendar",
    "recurring_ical_events",
    "slack_bolt",
    "slack_sdk",
    "nio",
    "ruamel",
    "pydantic",
    "bot.app",
    "bot.store",
    "bot.sources",
    "bot.transports",
    "bot.configuration",
)

VENDOR_HOMES = {
    "tinydb": {"store/tinydb_store.py"},
    "psycopg": {"store/postgres_store.py"},
    "psycopg_pool": {"store/postgres_store.py"},
    "feedparser": {"sources/feeds.py"},
    "icalendar": {"sources/calendars.py", "sources/calendar_export.py"},
    "recurring_ical_events": {"sources/calendars.py"},
    "slack_bolt": {"transports/slack.py"},
    "slack_sdk": {"transports/slack.py"},
    "nio": {"transports/matrix.py"},
    "ruamel": {"configuration/loader.py"},
    "pydantic": {"configuration/loader.py", "configuration/models.py", "configuration/schema.py"},
}

# layer -> layers it must not import
SEPARATE = {
    "sources": ("bot.store", "bot.transports", "bot.app", "bot.delivery", "bot.scheduler"),
    "store": ("bot.sources", "bot.transports", "bot.app", "bot.delivery", "bot.scheduler"),
    "transports": ("bot.sources", "bot.store", "bot.app", "bot.delivery", "bot.scheduler"),
    "configuration": ("bot.sources", "bot.store", "bot.transports", "bot.app"),
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_domain_imports_nothing_impure() -> None:
    modules = sorted(
        f"bot.domain.{p.stem}" for p in (BOT / "domain").glob("*.py") if p.stem != "__init__"
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print('\\n'.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    bad = [m for m in out if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_IN_DOMAIN)]
    assert bad == []


def test_vendor_libraries_live_in_one_module() -> None:
    offenders = []
    for path in BOT.rglob("*.py"):
        rel = path.relative_to(BOT).as_posix()
        for name in imports_of(path):
            top = name.split(".")[0]
            homes = VENDOR_HOMES.get(top)
            if homes is not None and rel not in homes:
                offenders.append(f"{rel} imports {name}")
    assert offenders == []


def test_layers_do_not_import_each_other() -> None:
    offenders = []
    for layer, banned in SEPARATE.items():
        for path in (BOT / layer).rglob("*.py"):
            for name in imports_of(path):
                if any(name == b or name.startswith(b + ".") for b in banned):
                    offenders.append(f"{path.relative_to(BOT)} imports {name}")
    assert offenders == []


def test_only_app_and_cli_wire_concrete_classes() -> None:
    concrete = (
        "bot.store.tinydb_store",
        "bot.store.postgres_store",
        "bot.transports.console",
        "bot.transports.slack",
        "bot.transports.matrix",
    )
    offenders = []
    for path in BOT.rglob("*.py"):
        rel = path.relative_to(BOT).as_posix()
        # storage.py chooses the store, platforms.py the transports, for app and cli
        # (docs/design.md)
        wiring = {"app.py", "cli.py", "storage.py", "platforms.py"}
        if rel in wiring or rel.startswith(("store/", "transports/")):
            continue
        offenders += [f"{rel} imports {n}" for n in imports_of(path) if n in concrete]
    assert offenders == []
