"""Safe extraction of the listed members of a zip, tar or gz file into a (temporary) folder.

An archive is refused as a whole, before anything is written, when any of its members has an
absolute name or a ``..`` component, or is a symbolic link, hard link, device or FIFO. The
datasets' archives contain none of these, so one is a sign of a tampered or wrong download;
refusing the whole archive (not just the member) keeps the rule simple to state and to test.
Members are written to paths built from the dataset's own member -> file table, never from the
names in the archive, so even an unforeseen name cannot steer a write outside the folder.
"""

from __future__ import annotations

import gzip
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .errors import DataError, UnsafeArchiveError

_COPY_CHUNK = 1 << 20


def _unsafe_name(name: str) -> bool:
    """Whether an archive member name could address a file outside the extraction folder."""
    posix = name.replace("\\", "/")
    drive = len(posix) > 1 and posix[1] == ":"
    return posix.startswith("/") or drive or ".." in PurePosixPath(posix).parts


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(f"refusing to extract {archive.name}: member {member!r} {why}; nothing was extracted")


def _write(source, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "wb") as out:
        shutil.copyfileobj(source, out, _COPY_CHUNK)


def _extract_zip(archive: Path, members: dict[str, str], dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = {}
        for info in zf.infolist():
            if _unsafe_name(info.filename):
                raise _refuse(archive, info.filename, "points outside the extraction folder")
            # Unix-made zips keep the file type in the high bits (0 when the maker did not say).
            file_type = stat.S_IFMT(info.external_attr >> 16)
            if file_type not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "is a link or special file")
            infos[info.filename] = info
        _check_listed(archive, members, infos)
        for name, target in members.items():
            if infos[name].is_dir():
                raise DataError(f"{archive.name}: member {name!r} is a folder, expected a file")
            with zf.open(infos[name]) as source:
                _write(source, dest / target)


def _extract_tar(archive: Path, members: dict[str, str], dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tf:
        infos = {}
        for info in tf.getmembers():
            if _unsafe_name(info.name):
                raise _refuse(archive, info.name, "points outside the extraction folder")
            if info.issym() or info.islnk():
                raise _refuse(archive, info.name, f"is a link (to {info.linkname!r})")
            if not (info.isfile() or info.isdir()):
                raise _refuse(archive, info.name, "is a device, FIFO or other special file")
            infos[info.name] = info
        _check_listed(archive, members, infos)
        for name, target in members.items():
            if not infos[name].isfile():
                raise DataError(f"{archive.name}: member {name!r} is a folder, expected a file")
            source = tf.extractfile(infos[name])
            assert source is not None  # a regular file always has a reader
            with source:
                _write(source, dest / target)


def _check_listed(archive: Path, members: dict[str, str], found: Iterable[str]) -> None:
    absent = sorted(set(members) - set(found))
    if absent:
        raise DataError(f"{archive.name} lacks {len(absent)} expected member(s), e.g. {absent[0]!r}: wrong archive?")


def extract(archive: Path, kind: str, dest: Path, *, members: dict[str, str] | None = None, target: str = "") -> None:
    """Extract ``archive`` into ``dest``.

    Args:
        archive: The downloaded file.
        kind: ``gz`` (decompressed to ``dest / target``), ``zip`` or ``tar`` (any compression).
        dest: Extraction folder (a temporary one: the caller verifies, then moves files out).
        members: For ``zip``/``tar``: member name -> path relative to ``dest``. Others are skipped.
        target: For ``gz``: path relative to ``dest`` of the decompressed file.

    Raises:
        UnsafeArchiveError: A member with an absolute or ``..`` name, or a link or special file.
        DataError: The archive is corrupt or truncated, or lacks a listed member.
    """
    try:
        if kind == "gz":
            with gzip.open(archive, "rb") as source:
                _write(source, dest / target)
        elif kind == "zip":
            _extract_zip(archive, members or {}, dest)
        elif kind == "tar":
            _extract_tar(archive, members or {}, dest)
        else:
            raise DataError(f"cannot extract {archive.name}: unknown archive kind {kind!r}")
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, zlib.error) as error:
        # gzip.BadGzipFile is an OSError; a truncated stream ends in EOFError.
        raise DataError(
            f"cannot extract {archive.name} ({type(error).__name__}: {error}): a corrupt or truncated download?"
        ) from error
