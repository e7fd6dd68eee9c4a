"""The data layer's errors: all ``ValueError``, so a command reports them as one line and exit 2.

Every message is one line (no newlines) and names the dataset and the file concerned, so that
``anyformer <command>: error: <message>`` tells the user what to do without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset cannot be used: unknown name, bad spec, unreadable archive, failed download."""


class DataUnavailableError(DataError):
    """A dataset is neither on disk nor downloadable (offline, server gone, download refused).

    Attributes:
        dataset: The dataset's name.
        url: The URL that was (or would have been) downloaded.
        path: Where to save that URL by hand so that the next run finds it.
    """

    def __init__(self, message: str, *, dataset: str, url: str = "", path: Path | None = None) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.url = url
        self.path = path


class ChecksumMismatchError(DataError):
    """A file's sha256 differs from its pinned value.

    Attributes:
        path: The file (for a download: where it would have been saved; it has been deleted).
        expected: The pinned sha256.
        actual: The sha256 of the bytes found.
    """

    def __init__(self, message: str, *, path: Path, expected: str, actual: str) -> None:
        super().__init__(message)
        self.path = path
        self.expected = expected
        self.actual = actual


class UnsafeArchiveError(DataError):
    """An archive holds a member that could write outside its folder (``..``, absolute path, link)."""
