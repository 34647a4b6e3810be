"""A damaged state file at start-up (reliability 3): refused, naming the file, never read as empty.

``tests/unit/test_store.py`` covers truncated JSON, trailing garbage, NUL bytes, an empty file,
the wrong structure and another schema version. These are the shapes it does not try: valid JSON
objects that are no state the bot ever wrote (every state it writes carries ``meta.schema``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import StoreCorrupt
from bot.store.tinydb_store import TinyDBStore


@pytest.mark.parametrize("content", [b"{}", b'{"foo": {}}', b'{"sources": {}}'])
def test_an_object_without_the_schema_mark_is_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt) as info:
        TinyDBStore(path).close()
    assert str(path) in str(info.value)
    assert path.read_bytes() == content


def test_a_source_of_the_wrong_shape_is_refused_with_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    content = b'{"meta": {"1": {"schema": 1}}, "sources": {"1": {"bogus": true}}}'
    path.write_bytes(content)
    with pytest.raises(StoreCorrupt) as info:
        TinyDBStore(path).close()
    assert str(path) in str(info.value)
    assert path.read_bytes() == content
