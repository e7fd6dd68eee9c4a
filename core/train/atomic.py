"""Crash-safe file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file: 0o666 minus the process umask."""
    # The umask can only be read by setting it; it is put back at once.
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` when the block exits cleanly.

    Missing parent folders of ``path`` are created first, so every tool that writes through here
    accepts an output in a new folder (``--out data/set.npz``). The temporary file lies in the same
    folder (``os.replace`` is only atomic within one file system), is flushed and fsynced, then
    renamed over ``path``. If the block raises, the temporary file is removed and an existing
    ``path`` is left untouched (the folders made for it stay). The new file gets the permissions of
    a file made by ``open()`` (``mkstemp`` alone would leave it private, 0600).

    Args:
        path: Destination file; its folder is created if missing.
        mode: ``"wb"`` or ``"w"``.
        encoding: Text encoding for ``mode="w"``.

    Yields:
        The open temporary file.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode={mode!r} must be 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as tmp:
            os.chmod(tmp_name, _default_file_mode())
            yield tmp
            tmp.flush()
            # Without fsync the rename can reach the disk before the data, and a crash would
            # leave an empty file under the final name.
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding="utf-8") as file:
        file.write(text)
