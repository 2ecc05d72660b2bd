"""Atomic file writes: every file xaibench writes under its final name goes through here.

The content goes to a temporary file in the same folder (hidden, ``.NAME.*.tmp``), is flushed
to disk (fsync), then renamed over the final name (``os.replace``, atomic on POSIX), so a crash
or a kill -9 at any moment leaves either the old file or the new one, never a torn one; the
temporary file is removed if the write fails.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path | str, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)``, fsync the temporary file, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
