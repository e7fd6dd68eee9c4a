"""Labelled sentences for classification (``[CLS] text [SEP]`` -> class), the data of both the BERT
classifier (``bert-classify``) and the bag-of-words baseline (``text-bow``); also :func:`read_table`,
the TSV/CSV reader of the labelled tables (and of SST-2's sentences for BERT pretraining).
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from anyformer.core.data import resolve
from anyformer.core.train.data_order import ShuffledBatches, batch_loader, placement
from anyformer.text.batching import LengthBatchSampler, pad_batch
from anyformer.text.bert.pretrained import pretrained_tokenizer
from anyformer.text.sentence_encoding import encode_sentence
from anyformer.text.tokenizer import Tokenizer, build_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

SST2_CLASS_NAMES = ("negative", "positive")


def sst2_table(name: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A table of GLUE SST-2 (``train.tsv``, ``dev.tsv``; header ``sentence<TAB>label``), verified.

    Args:
        name: The file, e.g. ``train.tsv``.
        root: The SST-2 folder, first in the lookup order of :mod:`anyformer.core.data` (then
            ``$ANYFORMER_DATA``, the user cache, a download).

    Raises:
        DataUnavailableError: Not on disk and not downloadable (one line naming the URL and path).
    """
    return resolve("sst2", root) / name


def read_table(
    path: str | Path, text_column: str, label_column: str | None = None, delimiter: str | None = None
) -> tuple[list[str], list[str]]:
    """Texts and labels (as strings) of a TSV/CSV file with a header row (see :func:`read_table_lines`)."""
    texts, labels, _ = read_table_lines(path, text_column, label_column, delimiter)
    return texts, labels


def read_table_lines(
    path: str | Path, text_column: str, label_column: str | None = None, delimiter: str | None = None
) -> tuple[list[str], list[str], list[int]]:
    """Texts, labels (as strings) and the line number of each row, of a TSV/CSV file with a header row.

    Args:
        path: the file; ``.tsv`` is read tab-separated without quoting (GLUE), ``.csv`` as CSV.
        text_column: header name of the text column.
        label_column: header name of the label column; None reads texts only (labels empty).
        delimiter: overrides the delimiter implied by the extension.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, not UTF-8, missing column or short row (named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"table {path} does not exist (expected a .tsv or .csv file with a header row)")
    if delimiter is None:
        delimiter = {".tsv": "\t", ".csv": ","}.get(path.suffix.lower())
        if delimiter is None:
            raise ValueError(f"{path}: cannot tell the delimiter from the extension; use .tsv or .csv or pass one")
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    try:
        with path.open(encoding="utf-8", newline="") as file:
            rows = list(csv.reader(file, delimiter=delimiter, quoting=quoting))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 ({err})") from err
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable table ({err})") from err
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row naming the columns")
    header = [name.strip() for name in rows[0]]
    columns = [text_column] + ([label_column] if label_column is not None else [])
    missing = [name for name in columns if name not in header]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r}; its header has {header}")
    text_at = header.index(text_column)
    label_at = header.index(label_column) if label_column is not None else None
    texts, labels, lines = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) <= max(text_at, label_at or 0):
            raise ValueError(f"{path}:{line} has {len(row)} fields, expected {len(header)} like the header")
        texts.append(row[text_at].strip())
        lines.append(line)
        if label_at is not None:
            labels.append(row[label_at].strip())
    if not texts:
        raise ValueError(f"{path} has a header but no rows")
    return texts, labels, lines


def pydoc_indent_dataset() -> tuple[list[str], list[str]]:
    """An offline labelled set from Python's own pydoc topics (ships with Python).

    Every paragraph of three or more words is labelled ``indented`` when all its lines are
    indented in the help text (code examples, grammar, method descriptions) and ``prose``
    otherwise; its whitespace is collapsed, so the model must tell them apart from content.
    Repeated paragraphs are kept once: 1,877 paragraphs, 64% prose (Python 3.11).
    """
    from pydoc_data.topics import topics

    texts, labels, seen = [], [], set()
    for name in sorted(topics):
        for block in re.split(r"\n[ \t]*\n", topics[name]):
            lines = [line for line in block.split("\n") if line.strip()]
            text = " ".join(block.split())
            if len(text.split()) < 3 or text in seen:  # repeated paragraphs would leak into val
                continue
            seen.add(text)
            texts.append(text)
            labels.append("indented" if all(line.startswith("   ") for line in lines) else "prose")
    return texts, labels


CLASSIFICATION_SOURCES = ("pydoc-indent", "sst2", "files")


def class_indices(labels: Sequence[str], class_names: Sequence[str], where: str | Sequence[str]) -> list[int]:
    """Label strings -> class indices: by name, or as integers ``0..K-1`` into ``class_names``.

    ``where`` names the labels' origin in an error: one string for all, or one per label (``file:line``).
    """
    by_name = {name: i for i, name in enumerate(class_names)}
    indices = []
    for i, label in enumerate(labels):
        if label in by_name:
            indices.append(by_name[label])
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(class_names):
            indices.append(int(label))
        else:
            origin = where if isinstance(where, str) else where[i]
            raise ValueError(
                f"{origin}: label {label!r} is neither a class name of {list(class_names)} "
                f"nor an integer in 0..{len(class_names) - 1}"
            )
    return indices


class LabelledSentences(Dataset[dict[str, Tensor]]):
    """Encoded ``[CLS] text [SEP]`` sequences with their class index."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        ids = torch.tensor(self.ids[index], dtype=torch.long)
        return {"input_ids": ids, "segment_ids": torch.zeros_like(ids), "labels": torch.tensor(self.labels[index])}


class TextClassificationDataModule(pl.LightningDataModule):
    """Single-sentence classification: ``[CLS] text [SEP]`` -> class.

    With ``init_from`` (a ``bert`` pretraining checkpoint, or a Hugging Face BERT ``hf:<folder or
    hub id>``) the tokenizer is the checkpoint's (the HF folder's) and the path is linked into the
    model, which loads the pretrained encoder from it. Batches are dicts of (B, T) ``input_ids``,
    ``segment_ids`` (zeros), ``attention_mask`` (bool, True = real token) and (B,) ``labels``.

    Args:
        source: ``pydoc-indent`` (offline, see :func:`pydoc_indent_dataset`; every fifth
            paragraph is validation), ``sst2`` (GLUE SST-2 ``train.tsv``/``dev.tsv`` through
            :mod:`anyformer.core.data`) or ``files``.
        root: The SST-2 folder (``source: sst2``), first in the data lookup order; None:
            ``$ANYFORMER_DATA``, the user cache, then a download.
        train_path: training table (``source: files``), TSV or CSV with a header row.
        val_path: validation table (``source: files``).
        text_column: header of the text column of the tables.
        label_column: header of the label column.
        class_names: names of the classes; integer labels ``i`` mean ``class_names[i]``. None: the
            sorted distinct training labels (``sst2``: negative, positive).
        init_from: ``bert`` checkpoint or ``hf:<folder or hub id>`` whose tokenizer (and, in the
            model, weights) to reuse.
        tokenizer_path: JSON tokenizer to load when there is no ``init_from``.
        vocab_size: target BPE vocabulary size when training a tokenizer on the training texts.
        max_seq_len: longest sequence; longer texts are cropped from the right (linked into the model).
        batch_size: sentences per batch.
        num_workers: DataLoader worker processes.
        seed: seed of the training order (epoch ``e``'s from ``(seed, e)``, so a resumed fit replays it).
        length_buckets: batch sentences of similar length (:class:`~anyformer.text.batching.LengthBatchSampler`:
            less padding) instead of uniformly shuffled batches. Off by default: wherever length goes
            with the class, buckets are nearly one-class batches, and the classifier then learns the
            batch's class before the words (a toy sentiment set whose lengths told 60% of the labels
            stayed at chance for 3 epochs in 8 of 11 seeds with buckets, in none of 5 with shuffled batches).
    """

    def __init__(
        self,
        source: str = "pydoc-indent",
        root: str | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        text_column: str = "sentence",
        label_column: str = "label",
        class_names: list[str] | None = None,
        init_from: str | None = None,
        tokenizer_path: str | None = None,
        vocab_size: int = 2048,
        max_seq_len: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 1337,
        length_buckets: bool = False,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if source not in CLASSIFICATION_SOURCES:
            raise ValueError(f"{owner}.source={source!r} is not one of {list(CLASSIFICATION_SOURCES)}")
        if source == "files" and (train_path is None or val_path is None):
            raise ValueError(f"{owner}.source='files' needs train_path and val_path (TSV/CSV tables)")
        if max_seq_len < 3:
            raise ValueError(f"{owner}.max_seq_len must be >= 3 ([CLS] text [SEP]), got {max_seq_len}")
        if batch_size < 1:
            raise ValueError(f"{owner}.batch_size must be >= 1, got {batch_size!r}")
        self.source, self.root, self.train_path, self.val_path = source, root, train_path, val_path
        self.text_column, self.label_column = text_column, label_column
        self._class_names = list(class_names) if class_names is not None else None
        self.init_from, self.tokenizer_path, self.requested_vocab_size = init_from, tokenizer_path, vocab_size
        self.max_seq_len, self.batch_size, self.num_workers, self.seed = max_seq_len, batch_size, num_workers, seed
        self.length_buckets = length_buckets
        self._tables: dict[str, tuple[list[str], list[str]]] | None = None
        self._where: dict[str, list[str]] = {}  # file:line of each row of a table source
        self._tokenizer: Tokenizer | None = None
        self._datasets: dict[str, LabelledSentences] = {}

    def tables(self, split: str) -> tuple[list[str], list[str]]:
        """(texts, label strings) of ``"train"`` or ``"val"``."""
        if self._tables is None:
            if self.source == "pydoc-indent":
                texts, labels = pydoc_indent_dataset()
                self._tables = {"train": ([], []), "val": ([], [])}
                for i, (text, label) in enumerate(zip(texts, labels)):
                    part = "val" if i % 5 == 4 else "train"
                    self._tables[part][0].append(text)
                    self._tables[part][1].append(label)
            else:
                if self.source == "sst2":
                    paths = {"train": sst2_table("train.tsv", self.root), "val": sst2_table("dev.tsv", self.root)}
                else:
                    paths = {"train": self.train_path, "val": self.val_path}
                self._tables = {}
                for part, path in paths.items():
                    texts, labels, lines = read_table_lines(path, self.text_column, self.label_column)
                    self._tables[part] = texts, labels
                    self._where[part] = [f"{path}:{line}" for line in lines]
        return self._tables[split]

    @property
    def class_names(self) -> list[str]:
        """Names of the classes, index = class id."""
        if self._class_names is None:
            if self.source == "sst2":
                self._class_names = list(SST2_CLASS_NAMES)
            else:
                distinct = set(self.tables("train")[1])
                numeric = all(label.lstrip("-").isdigit() for label in distinct)
                self._class_names = sorted(distinct, key=int if numeric else str)
        return self._class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def tokenizer(self) -> Tokenizer:
        """The checkpoint's tokenizer (``init_from``), a loaded one, or BPE trained on the train texts."""
        if self._tokenizer is None:
            if self.init_from is not None:
                self._tokenizer = pretrained_tokenizer(self.init_from)
            elif self.tokenizer_path is not None:
                self._tokenizer = load_tokenizer(self.tokenizer_path)
            else:
                self._tokenizer = build_tokenizer("bpe", self.tables("train")[0], self.requested_vocab_size)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def dataset(self, split: str) -> LabelledSentences:
        if split not in self._datasets:
            texts, labels = self.tables(split)
            where = f"{self.source} {split} split"
            encoded = [encode_sentence(self.tokenizer, text, self.max_seq_len) for text in texts]
            n_cropped = sum(cropped > 0 for _, cropped, _ in encoded)
            if n_cropped:
                logger.info(
                    "%s: %d of %d texts cropped to max_seq_len=%d", where, n_cropped, len(texts), self.max_seq_len
                )
            ids = [e[0] for e in encoded]
            labels = class_indices(labels, self.class_names, self._where.get(split, where))
            self._datasets[split] = LabelledSentences(ids, labels)
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        for split in ("train", "val"):
            self.dataset(split)

    def train_dataloader(self) -> DataLoader:
        train = self.dataset("train")
        if self.length_buckets:
            lengths = [len(ids) for ids in train.ids]
            sampler = LengthBatchSampler(lengths, self.batch_size, shuffle=True, seed=self.seed, **placement(self))
        else:
            sampler = ShuffledBatches(len(train), self.batch_size, seed=self.seed, **placement(self))
        return batch_loader(train, sampler, partial(pad_batch, pad_id=self.tokenizer.pad_id), self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), batch_size=self.batch_size, shuffle=False)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        pad_id = self.tokenizer.pad_id
        return DataLoader(
            dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            collate_fn=partial(pad_batch, pad_id=pad_id), generator=torch.Generator().manual_seed(self.seed), **kwargs,
        )  # fmt: skip
