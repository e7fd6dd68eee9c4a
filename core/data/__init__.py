"""One data layer for every loader: datasets found on disk, else downloaded, always verified.

Every file a loader reads is checked against a pinned sha256 (a verification stamp makes the
check cheap after the first time). Lookup order for a dataset's folder: an explicit folder,
then ``$ANYFORMER_DATA`` (a folder laid out as in :mod:`.registry`), then the user cache
(``$ANYFORMER_CACHE``), downloading into the cache as a last resort (from
``$ANYFORMER_DATA_MIRROR`` when set; never when ``$ANYFORMER_OFFLINE=1``)::

    from anyformer.core.data import resolve
    folder = resolve("sst2")               # Path holding verified train.tsv, dev.tsv, test.tsv
    folder = resolve("sst2", root=args.root, download=False)

``anyformer data list`` / ``anyformer data fetch NAME`` are the command line (:mod:`.cli`).
"""

from .errors import ChecksumMismatchError, DataError, DataUnavailableError, UnsafeArchiveError
from .fetch import DatasetStatus, fetch, resolve, status
from .locations import ENV_CACHE, ENV_DATA, ENV_MIRROR, ENV_OFFLINE, cache_dir
from .registry import DATASETS, get
from .specs import DataFile, Dataset, Remote

__all__ = [
    "DATASETS",
    "ENV_CACHE",
    "ENV_DATA",
    "ENV_MIRROR",
    "ENV_OFFLINE",
    "ChecksumMismatchError",
    "DataError",
    "DataFile",
    "DataUnavailableError",
    "Dataset",
    "DatasetStatus",
    "Remote",
    "UnsafeArchiveError",
    "cache_dir",
    "fetch",
    "get",
    "resolve",
    "status",
]
