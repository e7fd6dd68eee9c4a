"""Raw text corpora for language modelling, read into one string."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from anyformer.core.data import resolve

logger = logging.getLogger(__name__)

DOCUMENT_SEPARATOR = "\n\n"
"""Joins the documents of a multi-document corpus (pydoc topics, the files of a folder)."""


def load_corpus(source: str, root: str | os.PathLike[str] | None = None) -> str:
    """Read a corpus.

    Args:
        source: One of

            - ``"pydoc"``: the pydoc topic help that ships with every Python (~0.5 MB of
              English prose and code; offline).
            - ``"tinyshakespeare"``: Karpathy's 1.1 MB of Shakespeare, ``input.txt`` of the
              dataset ``tinyshakespeare`` of :mod:`anyformer.core.data` (``root``, else
              ``$ANYFORMER_DATA``, else the user cache, else downloaded into that cache; verified).
            - ``"sst2"``: the 67k SST-2 training sentences and phrases (``train.tsv`` of the dataset
              ``sst2``, labels unused), one per line, in file order (found as tinyshakespeare is).
            - a path to a UTF-8 text file, or to a folder whose ``*.txt`` files (not recursive)
              are read in sorted order and joined by :data:`DOCUMENT_SEPARATOR`.
        root: The folder of a named dataset (``tinyshakespeare``, ``sst2``), first in the lookup order;
            ignored by the other sources.

    Returns:
        The corpus text.

    Raises:
        FileNotFoundError: The path does not exist or a folder has no ``.txt`` files.
        DataUnavailableError: tinyshakespeare is neither on disk nor downloadable (a ValueError
            whose one line names the URL and where to save it).
        ValueError: A file is not valid UTF-8 or holds NUL characters (binary or UTF-16), or the
            corpus has no non-whitespace text.
    """
    if source == "pydoc":
        text = _pydoc_text()
    elif source == "tinyshakespeare":
        text = _read_utf8(resolve("tinyshakespeare", root) / "input.txt")
    elif source == "sst2":
        text = _sst2_text(root)
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


def _sst2_text(root: str | os.PathLike[str] | None) -> str:
    # Imported here: the table reader lives with the classification data, which imports Lightning.
    from anyformer.text.classification_data import read_table, sst2_table

    sentences, _ = read_table(sst2_table("train.tsv", root), "sentence")
    return "\n".join(sentences) + "\n"


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
        f"corpus source {str(path)!r} is not 'pydoc', 'tinyshakespeare', 'sst2', "
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
