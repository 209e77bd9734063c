"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half.

Every output mixspec writes (results.json, summary.md, sidecars, HTML pages) goes
through here: a temp file in the target folder, fsync, ordinary permissions, os.replace.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_beside(path: Path) -> str:
    """A new empty temp file in path's folder (created if missing); the caller fills it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return tmp


def publish(tmp: str, path: Path) -> None:
    """Give the temp file ordinary permissions (mkstemp makes it 0600, which a web server
    serving reports/ could not read) and rename it into place."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


@contextmanager
def replacing(path: Path) -> Iterator[str]:
    """A temp file beside `path` for the caller to fill: published as `path` when the block
    ends normally, removed when it raises (an interrupt included)."""
    tmp = temp_beside(path)
    try:
        yield tmp
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic_bytes(path: Path, data: bytes) -> Path:
    """Write bytes to path atomically."""
    with replacing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return path


def write_atomic_text(path: Path, text: str) -> Path:
    """Write UTF-8 text with LF line ends to path atomically."""
    return write_atomic_bytes(path, text.encode("utf-8"))
