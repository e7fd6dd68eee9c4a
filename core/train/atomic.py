"""Crash-safe file writes: a reader sees either the old file or the complete new one."""

from __future__ import annotations

import contextlib
import errno
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


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
"""errno values of a write refused for lack of space (the device, or the user's quota)."""


class DiskFullError(OSError):
    """A write ran out of space; the message names the file and says the previous one is intact.

    An ``OSError`` with ``errno`` ENOSPC (or EDQUOT), so callers that handle ``OSError`` still do.
    """

    def __str__(self) -> str:
        return str(self.strerror)  # the message alone, without the "[Errno 28]" prefix


def _disk_full(path: Path, err: OSError) -> DiskFullError:
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return DiskFullError(err.errno, f"no space left on device while writing {path} ({kept}); free some space and rerun")


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        if err.errno in DISK_FULL:
            raise _disk_full(path, err) from err
        raise
    try:
        with os.fdopen(fd, mode, encoding=encoding) as tmp:
            os.chmod(tmp_name, _default_file_mode())
            yield tmp
            tmp.flush()
            # Without fsync the rename can reach the disk before the data, and a crash would
            # leave an empty file under the final name.
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException as err:
        Path(tmp_name).unlink(missing_ok=True)
        full = _full_disk_cause(err)
        if full is not None and not isinstance(err, DiskFullError):
            raise _disk_full(path, full) from err
        raise


def _full_disk_cause(err: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT ``OSError`` behind ``err`` (itself, or a cause a writer wrapped it in:
    torch's zip writer re-raises a failed write as ``RuntimeError``), or None."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current
        current = current.__cause__ or current.__context__
    return None


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", encoding="utf-8") as file:
        file.write(text)
