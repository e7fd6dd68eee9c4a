"""Where a dataset is read from: the lookup order and the environment variables behind it.

Lookup order for a dataset's folder:

1. an explicit folder passed by the caller (a loader's ``--data.root`` or path argument, or
   ``anyformer data fetch NAME --root DIR``): the dataset's own folder (e.g. the one holding
   ``train.tsv``). A data folder laid out like ``$ANYFORMER_DATA`` is accepted too when
   ``DIR/<folder>`` holds the dataset. Otherwise ``DIR`` itself is used (and downloaded into);
2. ``$ANYFORMER_DATA/<folder>`` when it holds every required file (``$ANYFORMER_DATA`` is a
   data folder laid out as in :mod:`.registry`; nothing is ever written there);
3. the user cache, ``$ANYFORMER_CACHE/data/<folder>`` (default
   ``platformdirs.user_cache_dir("anyformer")/data``), which is also where downloads go.

``$ANYFORMER_DATA_MIRROR`` (an http(s) base URL) replaces every download URL by
``$ANYFORMER_DATA_MIRROR/<mirror_path>``, one relative path per remote file (``anyformer data
list`` prints them). ``$ANYFORMER_OFFLINE=1`` forbids downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DataError
from .specs import Dataset, Remote

ENV_DATA = "ANYFORMER_DATA"
"""A data folder to read datasets from (read only), e.g. a shared offline copy."""
ENV_CACHE = "ANYFORMER_CACHE"
"""Overrides the user cache folder (``platformdirs.user_cache_dir("anyformer")``)."""
ENV_MIRROR = "ANYFORMER_DATA_MIRROR"
"""Base URL that replaces each download's origin: ``$ANYFORMER_DATA_MIRROR/<mirror_path>``."""
ENV_OFFLINE = "ANYFORMER_OFFLINE"
"""``1`` (or ``true``/``yes``/``on``): never download; a missing dataset raises at once."""

SOURCE_ROOT = "root"
SOURCE_DATA = f"${ENV_DATA}"
SOURCE_CACHE = "cache"


def cache_dir() -> Path:
    """The data folder in the user cache (``$ANYFORMER_CACHE/data`` or the platform's cache)."""
    base = os.environ.get(ENV_CACHE, "").strip()
    if not base:
        # Imported here: only the cache needs it, and an explicit folder then works without it.
        import platformdirs

        base = platformdirs.user_cache_dir("anyformer")
    return Path(base).expanduser() / "data"


def stamp_dir() -> Path:
    """Folder of the verification stamps (see :mod:`.verify`), inside the cache."""
    return cache_dir() / ".verified"


def data_dir() -> Path | None:
    """``$ANYFORMER_DATA`` as a path, or ``None`` when it is unset or empty."""
    value = os.environ.get(ENV_DATA, "").strip()
    return Path(value).expanduser() if value else None


def is_offline() -> bool:
    """Whether ``$ANYFORMER_OFFLINE`` forbids downloads."""
    return os.environ.get(ENV_OFFLINE, "").strip().lower() in ("1", "true", "yes", "on")


def mirror() -> str:
    """``$ANYFORMER_DATA_MIRROR`` without its trailing ``/`` ('' when unset).

    Raises:
        DataError: It is set but is not an http(s) URL (a local copy belongs in ``$ANYFORMER_DATA``).
    """
    base = os.environ.get(ENV_MIRROR, "").strip().rstrip("/")
    if base and not base.startswith(("http://", "https://")):
        raise DataError(
            f"${ENV_MIRROR}={base!r} must be an http:// or https:// URL; for a local folder set ${ENV_DATA} instead"
        )
    return base


def remote_url(remote: Remote) -> str:
    """The URL a remote file is downloaded from: the mirror's when one is set, else the canonical one."""
    base = mirror()
    return f"{base}/{remote.mirror_path}" if base else remote.url


def is_present(spec: Dataset, folder: Path) -> bool:
    """Whether ``folder`` holds every required file and marker of ``spec`` (content not checked)."""
    needed = [f.path for f in spec.required] + list(spec.markers)
    return folder.is_dir() and all((folder / path).is_file() for path in needed)


def locate(spec: Dataset, root: str | os.PathLike[str] | None = None) -> tuple[Path, str]:
    """The folder ``spec`` is (or would be) read from, and which step of the lookup order chose it.

    Args:
        spec: The dataset.
        root: An explicit dataset folder (or a data folder holding ``<spec.folder>``); it wins
            even when it does not hold the data yet.

    Returns:
        ``(folder, source)`` where source is ``"root"``, ``"$ANYFORMER_DATA"`` or ``"cache"``.
        When the data is nowhere, the cache folder (where a download would go) is returned.
    """
    if root is not None:
        root = Path(root).expanduser()
        # A whole data folder given where the dataset's own folder was expected: take the dataset.
        if not is_present(spec, root) and is_present(spec, root / spec.folder):
            return root / spec.folder, SOURCE_ROOT
        return root, SOURCE_ROOT
    data = data_dir()
    if data is not None and is_present(spec, data / spec.folder):
        return data / spec.folder, SOURCE_DATA
    return cache_dir() / spec.folder, SOURCE_CACHE
