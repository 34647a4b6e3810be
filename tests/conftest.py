"""Shared fixtures: a clean environment, a config directory factory, a PostgreSQL database."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer, postgres_server

PLATFORM_ENV = (
    "SLACK_BOT_TOKEN",
    "SLACK_APP_TOKEN",
    "SLACK_SIGNING_SECRET",
    "SLACK_API_URL",
    "MATRIX_HOMESERVER",
    "MATRIX_USER_ID",
    "MATRIX_ACCESS_TOKEN",
    "MATRIX_PASSWORD",
    "TREATY_BOT_CONFIG",
    "TREATY_BOT_DATABASE_URL",
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PLATFORM_ENV:
        monkeypatch.delenv(name, raising=False)
    yield


ConfigFactory = Callable[..., Path]


@pytest.fixture
def config_dir(tmp_path: Path) -> ConfigFactory:
    """Write config files (dedented) into a fresh directory; bot.yaml gets a default."""

    def make(**files: str) -> Path:
        directory = tmp_path / "config"
        directory.mkdir(exist_ok=True)
        files.setdefault(
            "bot",
            f"""
            timezone: Europe/Vienna
            storage: {tmp_path / "state.json"}
            channels:
              alerts: {{}}
              ops: {{}}
            http: {{port: 0}}
            """,
        )
        for name, text in files.items():
            (directory / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip())
        return directory

    return make


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (started only if a test asks for it)."""
    with postgres_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database, dropped after the test."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url)
