"""Crash-safe file writes, shared by the store and the transports that keep state files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` so that a crash leaves the old or the new file.

    A temporary file in the same directory (a rename across file systems is a copy) is written
    and fsynced, renamed over ``path``, and the directory is fsynced. Owner-only permissions.
    """
    write_parts_atomically(path, (payload,))


def write_parts_atomically(path: Path, parts: Iterable[bytes | str]) -> None:
    """``write_atomically`` of the concatenation of ``parts`` (text encoded as UTF-8), written
    one after the other: a large file is never one string in memory."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            for part in parts:
                handle.write(part.encode() if isinstance(part, str) else part)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
