"""Each source's seen keys in a file of its own, next to the state file.

The seen keys are most of the state (a thousand feeds of 35 items remember 35,000 keys, up to
ten times that as feeds move on) and most polls change none of them. Kept in the main file,
every commit would rewrite all of them; kept apart, a commit writes the main file (health and
validators, small) plus one file per source whose keys changed.

Files are never rewritten: a change writes a new file under a new name, fsyncs it and the
directory, and only then does the main file (written atomically) name it. A crash before that
leaves an unnamed file, removed at the next start; the file the main file named until then is
removed after the commit. Files named by the state as it was at start (the ``.bak`` copy) are
kept until the next start, so that copy stays whole.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bot.errors import StoreCorrupt, StoreError


class SeenFiles:
    def __init__(self, directory: Path, *, read_only: bool) -> None:
        self.directory = directory
        self.read_only = read_only
        self.written: list[str] = []  # by the commit under way
        self.bytes_written = 0
        #: what a read-only store (a preview) would have written: kept in memory instead
        self._previewed: dict[str, bytes] = {}

    def check(self, names: Iterable[str], *, state: Path, hint: str) -> None:
        """Raise ``StoreCorrupt`` if a file the state names is missing."""
        missing = sorted(n for n in names if not (self.directory / n).is_file())
        if missing:
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise StoreCorrupt(
                f"{len(missing)} file(s) of seen items it names are missing from "
                f"{self.directory} ({shown}). {hint}",
                resource=str(state),
            )

    def collect(self, keep: set[str]) -> None:
        """Remove what no state names (left by a crash)."""
        if self.read_only or not self.directory.is_dir():
            return
        for entry in os.scandir(self.directory):
            if entry.name not in keep and entry.is_file():
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)

    def read(self, name: str) -> dict[str, Any]:
        path = self.directory / name
        try:
            data = json.loads(self._previewed.get(name) or path.read_bytes())
        except OSError as err:
            raise StoreError(f"cannot read {path}: {err.strerror}", resource=str(path)) from err
        except ValueError as err:
            raise StoreCorrupt(
                f"not valid JSON ({err}); move the file away and restart: the source's next "
                f"poll then only remembers what its feed lists",
                resource=str(path),
            ) from None
        if not isinstance(data, dict):
            raise StoreCorrupt("not a file of seen items", resource=str(path))
        return data

    def write_new(self, source: str, payload: bytes) -> str:
        """Write ``payload`` durably under a new name; the name."""
        slug = re.sub(r"[^A-Za-z0-9_.-]", "_", source)[:60]
        name = f"{slug}-{uuid.uuid4().hex[:12]}.json"
        if self.read_only:
            self._previewed[name] = payload
            return name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self.written.append(name)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as err:
            reason = (
                "the disk is full"
                if err.errno in (errno.ENOSPC, errno.EFBIG)
                else (err.strerror or str(err))
            )
            raise StoreError(
                f"cannot write: {reason}; the previous state is kept",
                resource=str(self.directory / name),
            ) from err
        self.bytes_written += len(payload)
        return name

    def sync(self) -> None:
        """Make the new names durable (before the state that names them is written)."""
        if not self.written:
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def forget_written(self, *, remove: bool) -> None:
        """End of a commit: on failure, remove what it wrote."""
        if remove:
            self.remove(self.written)
        self.written = []

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(self.directory / name)


V = TypeVar("V")


class _StoredMapping(Mapping[str, V]):
    """A mapping held in a file, read when first looked at (``read`` gives it)."""

    __slots__ = ("_read", "_values", "name")

    def __init__(self, name: str, read: Callable[[], dict[str, V]]) -> None:
        self.name = name
        self._read = read
        self._values: dict[str, V] | None = None

    def _load(self) -> dict[str, V]:
        if self._values is None:
            self._values = self._read()
        return self._values

    def __getitem__(self, key: str) -> V:
        return self._load()[key]

    def __contains__(self, key: object) -> bool:
        return key in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


class StoredSeen(_StoredMapping[datetime]):
    """The seen keys of one source as its file holds them, read when first looked at.

    Most polls end in a 304 or an unchanged body and never look at the keys; only a body that
    is parsed and planned reads the file. A record holding this mapping, written back as it is,
    keeps naming the same file (nothing to write). A file that cannot be read raises the
    store's error where the keys are first needed: the poll of that source fails alone.
    """

    __slots__ = ("_count",)

    def __init__(self, name: str, count: int, read: Callable[[], dict[str, datetime]]) -> None:
        super().__init__(name, read)
        self._count = count

    def __len__(self) -> int:
        return self._count if self._values is None else len(self._values)

    def __repr__(self) -> str:
        unread = "" if self._values is not None else ", unread"
        return f"StoredSeen({self.name!r}, {len(self)} keys{unread})"


class StoredFingerprints(_StoredMapping[str]):
    """The fingerprints of one source's seen keys, from the same file as ``StoredSeen``, read
    when first looked at (the file is read once for both: see ``TinyDBStore``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        unread = "" if self._values is not None else ", unread"
        return f"StoredFingerprints({self.name!r}{unread})"
