"""Crash-safe file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically.

    The text goes to a temporary file in the same folder (``os.replace`` is only atomic within
    one file system), is flushed to disk, then renamed over ``path``. If anything fails on the way
    the temporary file is removed and an existing ``path`` is left untouched.

    Args:
        path: Destination file; its folder must exist.
        text: Full new content.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            # Without fsync the rename can reach the disk before the data and a crash would
            # leave an empty file under the final name.
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
