"""Raw text corpora for language modelling, read into one string."""

from __future__ import annotations

import logging
import urllib.request
from http.client import HTTPException
from pathlib import Path

from anyformer.core.train.atomic import atomic_write_text

logger = logging.getLogger(__name__)

TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHARED_TINYSHAKESPEARE = Path("../shared/data/tinyshakespeare/input.txt")
"""Offline copy, relative to the working directory (the repository root)."""
DOCUMENT_SEPARATOR = "\n\n"
"""Joins the documents of a multi-document corpus (pydoc topics, the files of a folder)."""
_DOWNLOAD_TIMEOUT_S = 60


def load_corpus(source: str) -> str:
    """Read a corpus.

    Args:
        source: One of

            - ``"pydoc"``: the pydoc topic help that ships with every Python (~0.5 MB of
              English prose and code; offline).
            - ``"tinyshakespeare"``: Karpathy's 1.1 MB of Shakespeare, from
              ``../shared/data/tinyshakespeare/input.txt``, else ``~/.cache/anyformer/``,
              else downloaded into that cache.
            - a path to a UTF-8 text file, or to a folder whose ``*.txt`` files (not recursive)
              are read in sorted order and joined by :data:`DOCUMENT_SEPARATOR`.

    Returns:
        The corpus text.

    Raises:
        FileNotFoundError: The path does not exist, a folder has no ``.txt`` files, or
            tinyshakespeare is neither on disk nor downloadable.
        ValueError: A file is not valid UTF-8 or holds NUL characters (binary or UTF-16), or the
            corpus has no non-whitespace text.
    """
    if source == "pydoc":
        text = _pydoc_text()
    elif source == "tinyshakespeare":
        text = _read_utf8(_tinyshakespeare_path())
    else:
        text = DOCUMENT_SEPARATOR.join(_read_utf8(path) for path in _text_files(Path(source)))
    if not text.strip():
        raise ValueError(f"corpus {source!r} is empty: it has no non-whitespace characters")
    logger.info("loaded corpus %r: %d characters", source, len(text))
    return text


def _pydoc_text() -> str:
    # Imported here: the half-megabyte dict is only needed when this corpus is asked for.
    from pydoc_data.topics import topics

    # Sorted so the text does not depend on the order the generator wrote the dict in.
    return DOCUMENT_SEPARATOR.join(topics[name] for name in sorted(topics))


def _text_files(path: Path) -> list[Path]:
    path = path.expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"corpus folder {path} contains no *.txt files")
        return files
    raise FileNotFoundError(
        f"corpus source {str(path)!r} is not 'pydoc', 'tinyshakespeare', "
        "an existing UTF-8 text file or a folder of *.txt files"
    )


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not valid UTF-8: undecodable bytes {data[err.start : err.end]!r} at byte offset {err.start}"
        ) from err
    # NUL is valid UTF-8 but never text: it marks a binary file or UTF-16 ("h\x00e\x00..."), which
    # would otherwise train a tokenizer on garbage without a word of warning.
    if "\x00" in text:
        raise ValueError(
            f"{path} holds a NUL character at character offset {text.index(chr(0))}: it looks binary or UTF-16; "
            "expected a UTF-8 text file"
        )
    return text


def _cache_path() -> Path:
    return Path.home() / ".cache" / "anyformer" / "tinyshakespeare.txt"


def _tinyshakespeare_path() -> Path:
    if SHARED_TINYSHAKESPEARE.is_file():
        return SHARED_TINYSHAKESPEARE
    cache = _cache_path()
    if not cache.is_file():
        _download(TINYSHAKESPEARE_URL, cache)
    return cache


def _download(url: str, destination: Path) -> None:
    logger.info("downloading %s to %s", url, destination)
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response:
            data: bytes = response.read()
        text = data.decode("utf-8")
    except (OSError, HTTPException, UnicodeDecodeError) as err:  # URLError is an OSError
        raise FileNotFoundError(
            f"tinyshakespeare is not at {SHARED_TINYSHAKESPEARE.resolve()} nor at {destination}, "
            f"and downloading {url} failed ({err}); save that file as either path"
        ) from err
    destination.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(destination, text)
