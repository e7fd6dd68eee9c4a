"""Checking a dataset folder against its pinned sha256, with a stamp that makes re-checks cheap.

Hashing the 2,500 FSDD recordings or the MNIST files at every training start would cost about
a second each time. After a successful check, the size and modification time (ns) of every
verified file are written to a small JSON *stamp* in the cache; the next check hashes only the
files whose size or mtime changed (or that the stamp does not list). Editing a file in place
changes its mtime, so it is hashed again. A file rewritten with identical size and a forged
mtime would pass; ``anyformer data list`` ignores stamps and hashes everything.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .specs import Dataset

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Check:
    """What a check of a folder found.

    Attributes:
        missing: Required pinned files that are absent.
        mismatched: ``(path, expected, actual)`` of every pinned file whose sha256 differs.
        verified: Pinned files that match (hashed now or trusted from the stamp).
        hashed: How many of them were hashed now (the others were trusted from the stamp).
        unpinned: Files matching the dataset's ``unpinned_glob`` that are not pinned (never verified).
    """

    missing: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)
    hashed: int = 0
    unpinned: list[str] = field(default_factory=list)


def _pins_digest(spec: Dataset) -> str:
    """Digest of the pinned table, so that a stamp is void once any pin changes."""
    lines = sorted(f"{f.sha256} {f.path}" for f in spec.files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def stamp_path(stamp_dir: Path, spec: Dataset, folder: Path) -> Path:
    """Where the stamp of ``spec`` read from ``folder`` lives (one per dataset and folder)."""
    key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    return stamp_dir / f"{spec.name}-{key}.json"


def _read_stamp(path: Path, spec: Dataset, folder: Path) -> dict[str, list[int]]:
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stamp, dict) or stamp.get("pins") != _pins_digest(spec):
        return {}
    if stamp.get("folder") != str(folder.resolve()) or not isinstance(stamp.get("files"), dict):
        return {}
    return stamp["files"]


def _write_stamp(path: Path, spec: Dataset, folder: Path, files: dict[str, list[int]]) -> None:
    """Write the stamp atomically; a cache that cannot be written only costs a re-hash next time."""
    stamp = {"dataset": spec.name, "folder": str(folder.resolve()), "pins": _pins_digest(spec), "files": files}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(stamp, file, sort_keys=True)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as error:
        logger.debug("cannot write verification stamp %s: %s", path, error)


def check(spec: Dataset, folder: Path, *, stamp_dir: Path | None = None, full: bool = False) -> Check:
    """Compare every pinned file present in ``folder`` with its sha256.

    Args:
        spec: The dataset.
        folder: The dataset's folder.
        stamp_dir: Folder of verification stamps; ``None`` keeps no stamp.
        full: Hash every file even if the stamp vouches for it (the stamp is then refreshed).

    Returns:
        What was found; nothing is raised for a missing or mismatching file.
    """
    result = Check()
    stamp_file = stamp_path(stamp_dir, spec, folder) if stamp_dir is not None else None
    old = {} if stamp_file is None or full else _read_stamp(stamp_file, spec, folder)
    new: dict[str, list[int]] = {}
    for pinned in spec.files:
        path = folder / pinned.path
        try:
            info = path.stat()
        except OSError:
            if not pinned.optional:
                result.missing.append(pinned.path)
            continue
        key = [info.st_size, info.st_mtime_ns]
        if old.get(pinned.path) != key:
            actual = sha256_file(path)
            result.hashed += 1
            if actual != pinned.sha256:
                result.mismatched.append((pinned.path, pinned.sha256, actual))
                continue
        result.verified.append(pinned.path)
        new[pinned.path] = key
    if spec.unpinned_glob and folder.is_dir():
        pinned_paths = {f.path for f in spec.files}
        found = (p.relative_to(folder).as_posix() for p in folder.glob(spec.unpinned_glob) if p.is_file())
        result.unpinned = sorted(p for p in found if p not in pinned_paths and not p.startswith("."))
    if stamp_file is not None and new and new != old:
        _write_stamp(stamp_file, spec, folder, new)
    elif stamp_file is not None and not new:
        with contextlib.suppress(OSError):
            stamp_file.unlink()
    return result
