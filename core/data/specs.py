"""What a dataset is: its folder in a data folder, its pinned files, the remote files they come from.

A test or a caller can build its own :class:`Dataset` and pass it wherever a dataset name is
accepted (the datasets this suite knows are in :mod:`.registry`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

Kind = Literal["file", "gz", "zip", "tar"]


def _check_relative(path: str, what: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or "\\" in path or ".." in parts:
        raise ValueError(f"{what} {path!r} must be a relative POSIX path without '..'")


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset and its pinned sha256.

    Attributes:
        path: Relative to the dataset's folder (POSIX separators).
        sha256: Pinned lowercase hex digest.
        optional: Verified when present, never required and never downloaded (for example a
            file that only an offline copy has).
    """

    path: str
    sha256: str
    optional: bool = False

    def __post_init__(self) -> None:
        _check_relative(self.path, "data file")
        if len(self.sha256) != 64 or set(self.sha256) - set("0123456789abcdef"):
            raise ValueError(f"data file {self.path!r}: sha256 {self.sha256!r} is not 64 lowercase hex digits")


@dataclass(frozen=True)
class Remote:
    """One file to download and the dataset files it becomes.

    Attributes:
        url: Canonical URL.
        mirror_path: Path of the same file under ``$ANYFORMER_DATA_MIRROR`` (one per remote file).
        kind: ``file`` (saved as is), ``gz`` (decompressed), ``zip`` or ``tar`` (any compression;
            the listed members are extracted).
        target: For ``file``/``gz``: the dataset file it becomes.
        members: For ``zip``/``tar``: archive member -> dataset file. Other members are never written.
        sha256: Pinned digest of the downloaded file itself, or ``None`` when it cannot be pinned
            (a server-generated archive); every output is pinned either way.
    """

    url: str
    mirror_path: str
    kind: Kind
    target: str = ""
    members: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None

    def __post_init__(self) -> None:
        _check_relative(self.mirror_path, "mirror path")
        if self.kind in ("file", "gz") and (not self.target or self.members):
            raise ValueError(f"remote {self.url}: a {self.kind!r} remote needs a target and no members")
        if self.kind in ("zip", "tar") and (self.target or not self.members):
            raise ValueError(f"remote {self.url}: a {self.kind!r} remote needs members and no target")
        if self.kind not in ("file", "gz", "zip", "tar"):
            raise ValueError(f"remote {self.url}: unknown kind {self.kind!r}")

    @property
    def filename(self) -> str:
        """Name of the downloaded file (also its name when saved by hand in the dataset folder)."""
        return PurePosixPath(self.mirror_path).name

    @property
    def targets(self) -> tuple[str, ...]:
        """The dataset files this remote produces."""
        return (self.target,) if self.target else tuple(target for _, target in self.members)


@dataclass(frozen=True)
class Dataset:
    """A dataset: its folder in a data folder, pinned files, remote files and how to report it.

    Attributes:
        name: Registry key, e.g. ``sst2``.
        description: One sentence for ``anyformer data list``.
        folder: Relative folder in a data folder, e.g. ``fsdd/recordings``.
        files: Pinned files. Every output of :attr:`remotes` must be one of them.
        remotes: Files to download when the dataset is missing.
        managed_by: ``torchvision`` / ``torchaudio`` when that library downloads the dataset itself
            (and checks its md5); this layer then only picks the folder and verifies pinned files.
        markers: Files whose presence shows a managed dataset is there (when none is pinned).
        unpinned_glob: Files in the folder matching it but not pinned are reported, never verified.
        note: One line about what is (not) verified, shown by ``anyformer data list``.
        factory: ``module:attribute`` of the managed dataset class; ``fetch`` calls it with the
            folder, ``download=True`` and each of :attr:`factory_calls` as keyword arguments.
        factory_calls: Keyword arguments of each call (one per split to download).
        url: For a managed dataset: the file that library downloads first (named in messages).
    """

    name: str
    description: str
    folder: str
    files: tuple[DataFile, ...] = ()
    remotes: tuple[Remote, ...] = ()
    managed_by: str = ""
    markers: tuple[str, ...] = ()
    unpinned_glob: str = ""
    note: str = ""
    factory: str = ""
    factory_calls: tuple[Mapping[str, Any], ...] = field(default=({},))
    url: str = ""

    def __post_init__(self) -> None:
        _check_relative(self.folder, f"dataset {self.name!r} folder")
        pinned = {f.path for f in self.files}
        for remote in self.remotes:
            for target in remote.targets:
                _check_relative(target, f"dataset {self.name!r} target")
                if target not in pinned:
                    raise ValueError(f"dataset {self.name!r}: {remote.url} yields {target!r}, which is not pinned")
        optional_made = {f.path for f in self.files if f.optional} & {t for r in self.remotes for t in r.targets}
        if optional_made:
            raise ValueError(f"dataset {self.name!r}: optional files are never downloaded: {sorted(optional_made)}")

    @property
    def required(self) -> tuple[DataFile, ...]:
        """The pinned files that must be present."""
        return tuple(f for f in self.files if not f.optional)
