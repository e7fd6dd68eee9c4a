"""Resolve a dataset to a folder of verified files, downloading it into the cache when needed.

A download never leaves anything a later run could mistake for data:

- everything is downloaded into a hidden temporary folder ``.fetch-XXXX`` inside the dataset's
  folder (same file system, so the final renames are atomic), as ``NAME.part`` until the transfer
  is complete;
- the downloaded file is checked against its pinned sha256 (when it has one), decompressed or
  extracted (see :mod:`.archives`) into that temporary folder, and every output is checked
  against its pinned sha256;
- only then is each output renamed into the dataset's folder. Any failure (or Ctrl-C) removes
  the temporary folder; one left by a killed process is hidden, never read, and removed by the
  next download into that folder once it is a day old.

The HTTP transfer itself is pooch's ``HTTPDownloader`` (requests, optional tqdm progress bar).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .archives import extract
from .errors import ChecksumMismatchError, DataError, DataUnavailableError
from .locations import ENV_DATA, ENV_OFFLINE, is_offline, is_present, locate, remote_url, stamp_dir
from .registry import get
from .specs import Dataset, Remote
from .verify import check, sha256_file

logger = logging.getLogger(__name__)

TIMEOUT_S = 60
"""Seconds without an answer (connect or between bytes) before a download is given up."""
_STALE_S = 24 * 3600


@dataclass(frozen=True)
class DatasetStatus:
    """Where a dataset would be read from and what is there.

    Attributes:
        name: The dataset.
        folder: The folder it is (or would be) read from; for a missing dataset, where it would go.
        source: Which step of the lookup order chose it: ``root``, ``$ANYFORMER_DATA`` or ``cache``.
        present: Every required file (or marker of a torchvision/torchaudio dataset) exists.
        verified: ``True``: every pinned file present matches; ``False``: some file does not;
            ``None``: nothing to check (absent, or nothing pinned for it).
        missing: Required files (and markers) that are absent.
        mismatched: ``(path, expected, actual)`` of each file whose sha256 differs.
        unpinned: Files that are not pinned and were not verified (FSDD speakers without sums).
    """

    name: str
    folder: Path
    source: str
    present: bool
    verified: bool | None
    missing: tuple[str, ...] = field(default=(), repr=False)
    mismatched: tuple[tuple[str, str, str], ...] = ()
    unpinned: tuple[str, ...] = field(default=(), repr=False)


def status(name: str | Dataset, root: str | os.PathLike[str] | None = None, *, full: bool = False) -> DatasetStatus:
    """Where ``name`` would be read from, whether it is there and whether it verifies.

    Args:
        name: A dataset name or a :class:`Dataset`.
        root: An explicit dataset folder (lookup step 1).
        full: Hash every file, ignoring the verification stamp.

    Raises:
        DataError: Unknown dataset.
    """
    spec = get(name)
    folder, source = locate(spec, root)
    present = is_present(spec, folder)
    found = check(spec, folder, stamp_dir=stamp_dir(), full=full) if folder.is_dir() else None
    missing = tuple(found.missing if found else (f.path for f in spec.required))
    missing += tuple(marker for marker in spec.markers if not (folder / marker).is_file())
    mismatched = tuple(found.mismatched) if found else ()
    verified = False if mismatched else (True if present and spec.files else None)
    unpinned = tuple(found.unpinned) if found else ()
    return DatasetStatus(spec.name, folder, source, present, verified, missing, mismatched, unpinned)


def resolve(
    name: str | Dataset,
    root: str | os.PathLike[str] | None = None,
    download: bool = True,
    *,
    progress: bool = False,
) -> Path:
    """The folder of ``name``, its pinned files verified, downloaded into the cache first if needed.

    Lookup order: ``root``, then ``$ANYFORMER_DATA``, then the cache (see :mod:`.locations`).
    For a dataset that torchvision or torchaudio downloads itself (``mnist``, ``fashion_mnist``,
    ``cifar10``, ``speech_commands``) a missing dataset is not downloaded here: the returned
    folder is the ``root`` to give that library with ``download=True`` (or call :func:`fetch`).

    Args:
        name: A dataset name or a :class:`Dataset`.
        root: An explicit dataset folder; a missing dataset is downloaded into it.
        download: Download a missing dataset (else raise :class:`DataUnavailableError`).
        progress: Show a progress bar while downloading.

    Returns:
        The dataset's folder.

    Raises:
        DataUnavailableError: Missing and not downloadable (offline, ``download=False``, server gone).
        ChecksumMismatchError: A file differs from its pinned sha256 (a bad download is deleted).
        UnsafeArchiveError: A downloaded archive holds a member that escapes its folder, or a link.
        DataError: Unknown dataset, or a corrupt archive.
    """
    spec = get(name)
    folder, _ = locate(spec, root)
    if not is_present(spec, folder):
        if not download:
            raise _unavailable(spec, folder, "it is not there and download=False")
        if spec.managed_by:
            if is_offline():
                raise _unavailable(spec, folder, f"${ENV_OFFLINE} is set")
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        _download_into(spec, folder, progress)
    _require_verified(spec, folder)
    return folder


def fetch(name: str | Dataset, root: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Make ``name`` available ahead of time (``anyformer data fetch``): :func:`resolve`, and for a
    torchvision/torchaudio dataset also run that library's download. Same errors as :func:`resolve`."""
    spec = get(name)
    folder = resolve(spec, root, download=True, progress=progress)
    if spec.managed_by and not is_present(spec, folder):
        _run_factory(spec, folder)
        if not is_present(spec, folder):
            raise DataError(f"dataset {spec.name!r}: {spec.managed_by} finished but {folder} still lacks its files")
        _require_verified(spec, folder)
    return folder


def _require_verified(spec: Dataset, folder: Path) -> None:
    found = check(spec, folder, stamp_dir=stamp_dir())
    if found.mismatched:
        path, expected, actual = found.mismatched[0]
        more = f" (and {len(found.mismatched) - 1} more files)" if len(found.mismatched) > 1 else ""
        raise ChecksumMismatchError(
            f"dataset {spec.name!r}: {folder / path} has sha256 {actual}, expected {expected}{more}; "
            "delete it to download it again, or restore the original",
            path=folder / path,
            expected=expected,
            actual=actual,
        )
    if found.missing:
        raise _unavailable(spec, folder, f"{found.missing[0]} disappeared while it was being checked")
    if found.unpinned:
        logger.warning(
            "dataset %r: %d file(s) in %s have no pinned sha256 and were not verified, e.g. %s",
            spec.name, len(found.unpinned), folder, found.unpinned[0],
        )  # fmt: skip


def _unavailable(spec: Dataset, folder: Path, reason: str, remote: Remote | None = None) -> DataUnavailableError:
    """The one-line error for a dataset that is not there: what failed, and where to put what."""
    elsewhere = f"or set ${ENV_DATA} to a folder holding {spec.folder}/"
    if spec.managed_by or not spec.remotes:
        needed = [f.path for f in spec.required] + list(spec.markers)
        path = folder / needed[0] if needed else folder
        fetch_it = f"`anyformer data fetch {spec.name}`"
        origin = f" from {spec.url}" if spec.url else ""
        how = f"{spec.managed_by} downloads it{origin} when online ({fetch_it}), " if spec.managed_by else ""
        message = f"dataset {spec.name!r} is not in {folder}: {reason}; {how}put its files there (e.g. {path}), "
        return DataUnavailableError(message + elsewhere, dataset=spec.name, url=spec.url, path=path)
    if remote is None:
        remote = next((r for r in spec.remotes if not all((folder / t).is_file() for t in r.targets)), spec.remotes[0])
    url, path = remote_url(remote), folder / remote.filename
    others = len(spec.remotes) - 1
    likewise = f" (and likewise its {others} other files, listed by `anyformer data list`)" if others else ""
    message = f"dataset {spec.name!r} is not in {folder}: {reason}; download {url} and save it as {path}{likewise}, "
    return DataUnavailableError(message + elsewhere, dataset=spec.name, url=url, path=path)


def _download_into(spec: Dataset, folder: Path, progress: bool) -> None:
    needed = [r for r in spec.remotes if not all((folder / t).is_file() for t in r.targets)]
    if not needed:
        raise _unavailable(spec, folder, "no download provides its missing files")
    for remote in needed:
        # A file saved by hand at the announced path needs no network, even offline.
        if is_offline() and not (folder / remote.filename).is_file():
            raise _unavailable(spec, folder, f"${ENV_OFFLINE} is set", remote)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".fetch-*"):
        with contextlib.suppress(OSError):  # another process may be removing it too
            if stale.is_dir() and time.time() - stale.stat().st_mtime > _STALE_S:
                shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".fetch-") as tmp:
        for index, remote in enumerate(needed):
            work = Path(tmp) / str(index)
            work.mkdir()
            _fetch_remote(spec, remote, folder, work, progress)


def _fetch_remote(spec: Dataset, remote: Remote, folder: Path, work: Path, progress: bool) -> None:
    """Download (or take the hand-saved copy of) one remote file; move its verified outputs in."""
    saved = folder / remote.filename
    if saved.is_file():
        source, origin, downloaded = saved, str(saved), False
    else:
        source, origin, downloaded = work / remote.filename, remote_url(remote), True
        _download(spec, remote, origin, source, folder, progress)
    if remote.sha256 is not None:
        actual = sha256_file(source)
        if actual != remote.sha256:
            if downloaded:
                source.unlink()
            fate = "the download was deleted" if downloaded else "delete or replace that file"
            raise ChecksumMismatchError(
                f"dataset {spec.name!r}: {remote.filename} from {origin} has sha256 {actual}, "
                f"expected {remote.sha256}; {fate}",
                path=saved,
                expected=remote.sha256,
                actual=actual,
            )
    out = work / "out"
    if remote.kind == "file":
        (out / remote.target).parent.mkdir(parents=True, exist_ok=True)
        (os.replace if downloaded else shutil.copyfile)(source, out / remote.target)
    else:
        extract(source, remote.kind, out, members=dict(remote.members), target=remote.target)
    pins = {f.path: f.sha256 for f in spec.files}
    for target in remote.targets:
        actual = sha256_file(out / target)
        if actual != pins[target]:
            raise ChecksumMismatchError(
                f"dataset {spec.name!r}: {target} (from {remote.filename} at {origin}) has sha256 {actual}, "
                f"expected {pins[target]}; nothing was saved",
                path=folder / target,
                expected=pins[target],
                actual=actual,
            )
    # Verified as a whole before the first rename, so a bad archive adds no file at all.
    for target in remote.targets:
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        os.replace(out / target, folder / target)


def _download(spec: Dataset, remote: Remote, url: str, dest: Path, folder: Path, progress: bool) -> None:
    """Download ``url`` to ``dest`` through ``dest.part``; any failure raises DataUnavailableError."""
    import pooch  # imported on first download: most runs find their data on disk
    import requests

    part = dest.with_name(dest.name + ".part")
    logger.info("downloading %s", url)
    try:
        pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S)(url, str(part), None)
    except (requests.RequestException, OSError) as error:
        part.unlink(missing_ok=True)
        raise _unavailable(spec, folder, f"downloading failed ({_reason(error)})", remote) from error
    os.replace(part, dest)


def _reason(error: Exception) -> str:
    """A few words on why a download failed (requests' own messages run to several hundred characters)."""
    import requests

    response = getattr(error, "response", None)
    if isinstance(error, requests.HTTPError) and response is not None:
        return f"the server answered HTTP {response.status_code}"
    if isinstance(error, requests.Timeout):
        return f"no answer within {TIMEOUT_S} s"
    if isinstance(error, (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError)):
        return "the transfer broke off before the end"
    if isinstance(error, requests.ConnectionError):
        return "the connection was refused" if "refused" in str(error).lower() else "cannot connect (offline?)"
    return f"{type(error).__name__}: {' '.join(str(error).split())[:200]}"


def _run_factory(spec: Dataset, folder: Path) -> None:
    """Let torchvision/torchaudio download a dataset it manages (it checks its own md5)."""
    module, _, attribute = spec.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as error:
        raise DataError(f"dataset {spec.name!r} needs {spec.factory} ({error})") from error
    for kwargs in spec.factory_calls:
        try:
            factory(str(folder), download=True, **kwargs)
        except (OSError, RuntimeError) as error:  # URLError is an OSError; torchvision raises RuntimeError
            reason = f"{spec.managed_by} could not download it ({' '.join(str(error).split())[:200]})"
            raise _unavailable(spec, folder, reason) from error
