"""The JSON Schemas and the key reference are generated from the models and stay in step."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from bot.configuration.descriptions import DESCRIPTIONS
from bot.configuration.loader import FILES
from bot.configuration.schema import all_schemas, keys, markdown, schema_filename
from tests.conftest import REPO


def as_json(node: Any) -> Any:
    """YAML values as JSON would carry them (dates as ISO strings)."""
    if isinstance(node, dict):
        return {str(k): as_json(v) for k, v in node.items()}
    if isinstance(node, list):
        return [as_json(v) for v in node]
    if isinstance(node, datetime | date):
        return node.isoformat()
    return node


def load(path: Path) -> Any:
    return as_json(YAML(typ="safe").load(path.read_text()) or {})


def test_every_key_is_described() -> None:
    missing = [
        f"{file}: {path}"
        for file, schema in all_schemas().items()
        for path, _, _ in keys(schema)
        if path not in DESCRIPTIONS.get(file, {})
    ]
    assert missing == []


def test_reference_doc_is_up_to_date() -> None:
    assert (REPO / "docs" / "configuration.md").read_text() == markdown(), (
        "run: treaty-bot schema --markdown > docs/configuration.md"
    )


def test_shipped_schema_files_are_up_to_date() -> None:
    for file, schema in all_schemas().items():
        shipped = REPO / "config" / "schema" / schema_filename(file)
        assert json.loads(shipped.read_text()) == schema, (
            "run: treaty-bot schema --write config/schema"
        )


@pytest.mark.parametrize("file", list(FILES))
def test_shipped_config_validates_against_its_schema(file: str) -> None:
    schema = all_schemas()[file]
    jsonschema.validate(load(REPO / "config" / file), schema)
    first = (REPO / "config" / file).read_text().splitlines()[0]
    assert first == f"# yaml-language-server: $schema=schema/{schema_filename(file)}"


@pytest.mark.parametrize(
    ("file", "text"),
    [
        ("bot.yaml", "timezone: UTC\nchanels: {}\n"),
        ("bot.yaml", "fetch: {timeout: 30}\n"),
        ("feeds.yaml", "feeds:\n  - {id: a, url: 'https://e.org/x', every: soon}\n"),
        ("feeds.yaml", "feeds:\n  - {id: A B, url: 'https://e.org/x'}\n"),
        ("sessions.yaml", "sessions:\n  - {id: s, title: S, start: 2026-01-01, status: done}\n"),
        ("clauses.yaml", "clauses:\n  - {id: c, article: '1', title: T}\n"),
    ],
)
def test_a_broken_config_fails_the_schema(tmp_path: Path, file: str, text: str) -> None:
    path = tmp_path / file
    path.write_text(text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(load(path), all_schemas()[file])
