"""Parallel text for translation: line i of the source file translates line i of the target file.

Three sources of pairs:

- ``"multi30k"``: the Multi30k task-1 captions (``train.de``/``train.en``, ``val.*``,
  ``test_2016_flickr.*``, ...) of :mod:`anyformer.core.data`: read from ``root``, else
  ``$ANYFORMER_DATA``, else the user cache, else downloaded into that cache, and verified;
- a folder holding ``{split}.{lang}`` files (any parallel corpus laid out like Multi30k);
- ``"synthetic"`` (the offline default, no download): a deterministic made-up "translation" of
  Python's own documentation (``pydoc_data.topics``, shipped with every Python) into word-for-word
  pseudo-French. The text is cut into sentences at ``.``, ``!``, ``?``, ``:`` and ``;``; each
  sentence's alphabetic words (``[A-Za-z]+``), lowercased, are taken in chunks of at most 12
  words, and chunks of >= 3 words are kept, de-duplicated and sorted. The **source** is such a
  chunk; the **target** replaces every word found in :data:`GLOSSARY` (48 frequent words, about
  43% of the running words) by its French gloss and copies every other word, keeping the word
  order: ``"the value is returned"`` -> ``"le valeur est returned"``. Chunks go to val / test /
  train by ``zlib.crc32(chunk) % 20`` == 0 / == 1 / otherwise (257 / 291 / 4,551 pairs).
  (A harder variant, reversed word order plus a letter-substitution cipher, stayed below BLEU 1
  after the demo model's 1,000 steps; a monotone alignment with mostly copied tokens is what a
  small model learns in about a minute of CPU.)

Tokenizers (``anyformer.text.tokenizer``) are trained on the training split only: one shared vocabulary
over both sides, or one per side. Each pair is encoded as

    source  = tokens(src)[: max_source_len - 1] + [EOS]
    target_in = [BOS] + tokens(tgt)[: max_target_len - 1]      (decoder input, teacher forcing)
    labels  =         tokens(tgt)[: max_target_len - 1] + [EOS]

with BOS = ``[CLS]``, EOS = ``<|endoftext|>`` and ``[PAD]`` padding (labels are padded with
``-100``, the ignore index of ``cross_entropy``). Longer sentences are cropped and the count is
logged as a warning. Batches group sentences of similar length (see
:class:`~anyformer.text.batching.LengthBatchSampler`), optionally up to a token budget instead of a
fixed number of sentences.
"""

from __future__ import annotations

import logging
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from anyformer.core.data import resolve
from anyformer.core.train.data_order import batch_loader, distributed, placement
from anyformer.text.batching import IGNORE_INDEX, LengthBatchSampler
from anyformer.text.tokenizer import CLS, EOS, PAD, TOKENIZERS, Tokenizer, build_tokenizer

logger = logging.getLogger(__name__)

BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = CLS, EOS, PAD
"""The decoder starts from ``[CLS]``, a translation ends with ``<|endoftext|>``, batches pad with ``[PAD]``."""
SYNTHETIC = "synthetic"
DATASETS = ("multi30k",)
"""Named sources of :mod:`anyformer.core.data` whose folders hold ``{split}.{lang}`` files."""
Pair = tuple[str, str]


# -- the offline synthetic task ------------------------------------------------------------
GLOSSARY: dict[str, str] = {
    "the": "le", "a": "un", "an": "un", "one": "un", "is": "est", "are": "sont", "be": "etre",
    "of": "de", "in": "dans", "to": "a", "and": "et", "for": "pour", "if": "si", "that": "que",
    "or": "ou", "as": "comme", "with": "avec", "not": "pas", "by": "par", "it": "il", "this": "ce",
    "can": "peut", "may": "peut", "when": "quand", "from": "depuis", "on": "sur", "all": "tous",
    "which": "qui", "will": "va", "same": "meme", "other": "autre", "only": "seulement",
    "class": "classe", "object": "objet", "objects": "objets", "value": "valeur",
    "function": "fonction", "name": "nom", "method": "methode", "list": "liste", "string": "chaine",
    "statement": "instruction", "return": "renvoyer", "used": "utilise", "attribute": "attribut",
    "defined": "defini", "pattern": "motif", "new": "nouveau",
}  # fmt: skip
"""Word-for-word glosses of the synthetic task (English -> pseudo-French, accents dropped)."""


def synthetic_target(source: str) -> str:
    """The synthetic task's translation: each word glossed by :data:`GLOSSARY` or copied."""
    return " ".join(GLOSSARY.get(word, word) for word in source.split())


def synthetic_pairs() -> dict[str, list[Pair]]:
    """The synthetic glossary task, split into ``train``/``val``/``test`` (module docstring)."""
    from pydoc_data.topics import topics

    chunks: set[str] = set()
    for name in sorted(topics):
        for sentence in re.split(r"(?<=[.!?:;])\s+", topics[name]):
            words = [w.lower() for w in re.findall(r"[A-Za-z]+", sentence)]
            for i in range(0, len(words), 12):
                if len(words[i : i + 12]) >= 3:
                    chunks.add(" ".join(words[i : i + 12]))
    splits: dict[str, list[Pair]] = {"train": [], "val": [], "test": []}
    for chunk in sorted(chunks):
        bucket = zlib.crc32(chunk.encode()) % 20
        split = "val" if bucket == 0 else "test" if bucket == 1 else "train"
        splits[split].append((chunk, synthetic_target(chunk)))
    return splits


# -- parallel files ------------------------------------------------------------------------
def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"parallel text file {path} does not exist (expected one sentence per line)")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path} is not valid UTF-8: undecodable bytes at line {line}") from err
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return [line.rstrip("\r") for line in lines]


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[Pair]:
    """Read two aligned files into (source, target) pairs; their line counts must match."""
    src, tgt = _read_lines(Path(src_path)), _read_lines(Path(tgt_path))
    if len(src) != len(tgt):
        raise ValueError(f"parallel files are not aligned: {src_path} has {len(src)} lines, {tgt_path} has {len(tgt)}")
    if not src:
        raise ValueError(f"parallel files {src_path} and {tgt_path} are empty")
    return list(zip(src, tgt))


# -- encoding --------------------------------------------------------------------------------
def encode_source(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], list[int]]:
    """``tokens + [EOS]`` per text, cropped to ``max_len`` ids.

    Returns:
        The id lists, and the indices of the texts that had to be cropped.
    """
    encoded = tokenizer.encode_batch(list(texts))
    cropped = [i for i, ids in enumerate(encoded) if len(ids) > max_len - 1]
    return [[*ids[: max_len - 1], tokenizer.token_id(EOS_TOKEN)] for ids in encoded], cropped


def encode_target(tokenizer: Tokenizer, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], list[int]]:
    """Target tokens cropped to ``max_len - 1`` (room for BOS / EOS); returns them and the cropped indices."""
    encoded = tokenizer.encode_batch(list(texts))
    cropped = [i for i, ids in enumerate(encoded) if len(ids) > max_len - 1]
    return [ids[: max_len - 1] for ids in encoded], cropped


def pad_ids(rows: Sequence[Sequence[int]], value: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists -> (B, T) long tensor and (B, T) bool mask, True at real tokens."""
    width = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), width), value, dtype=torch.long)
    keep = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        keep[i, : len(row)] = True
    return ids, keep


class ParallelDataset(Dataset[dict[str, Any]]):
    """Encoded pairs; item i is ``{"source", "target", "reference"}`` (ids, ids, raw target text)."""

    def __init__(self, sources: list[list[int]], targets: list[list[int]], references: list[str]) -> None:
        self.sources, self.targets, self.references = sources, targets, references

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"source": self.sources[i], "target": self.targets[i], "reference": self.references[i]}

    def lengths(self) -> list[int]:
        """Padded cost of each pair: the longer of its source and its decoder sequence."""
        return [max(len(s), len(t) + 1) for s, t in zip(self.sources, self.targets)]


class Collate:
    """Items -> a batch of right-padded tensors for teacher forcing.

    Batch: ``source`` (B, S) long, ``source_keep`` (B, S) bool (True = real token),
    ``target_in`` (B, T) = BOS + target, ``labels`` (B, T) = target + EOS with -100 padding,
    ``reference`` list of B raw target strings.
    """

    def __init__(self, src_pad_id: int, bos_id: int, eos_id: int, pad_id: int) -> None:
        self.src_pad_id, self.bos_id, self.eos_id, self.pad_id = src_pad_id, bos_id, eos_id, pad_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        source, source_keep = pad_ids([item["source"] for item in items], self.src_pad_id)
        target_in, _ = pad_ids([[self.bos_id, *item["target"]] for item in items], self.pad_id)
        labels, _ = pad_ids([[*item["target"], self.eos_id] for item in items], IGNORE_INDEX)
        return {
            "source": source,
            "source_keep": source_keep,
            "target_in": target_in,
            "labels": labels,
            "reference": [item["reference"] for item in items],
        }


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"ParallelDataModule.{name} must be >= 1, got {value!r}")


class ParallelDataModule(pl.LightningDataModule):
    """Translation pairs (see the module docstring), tokenized and batched by length.

    ``src_tokenizer``, ``tgt_tokenizer``, ``src_vocab_size``, ``tgt_vocab_size``, ``shared_vocab``,
    ``max_source_len`` and ``max_target_len`` work right after construction, so the CLI can size
    the model from them (``Seq2SeqModule.data_links``).

    Args:
        source: ``"synthetic"`` (offline, module docstring), ``"multi30k"`` (a named dataset of
            :mod:`anyformer.core.data`) or a folder of ``{split}.{lang}`` files (write ``./multi30k``
            for a folder of that name).
        root: The folder of a named source (``multi30k``), first in the data lookup order; None:
            ``$ANYFORMER_DATA``, the user cache, then a download. Ignored by the other sources.
        src_lang: file suffix of the source language (folder sources).
        tgt_lang: file suffix of the target language (folder sources).
        train_split: training split name (folder sources).
        val_split: validation split name (folder sources).
        test_split: test split name (folder sources), e.g. ``test_2016_flickr``: the ``test_*`` metrics.
        extra_test_splits: more test sets of a folder source, tested after ``test_split`` (one
            test dataloader each), e.g. ``[test_2017_flickr, test_2017_mscoco]``: their metrics are
            named after them (``test_2017_flickr_bleu_beam``, ``Seq2SeqModule``).
        tokenizer: tokenizer kind trained on the training split: ``bpe`` or ``char``.
        vocab_size: target BPE vocabulary size (per side when not shared).
        shared_vocab: one tokenizer trained on both sides (True) or one per side (False).
        max_source_len: source ids per sentence, EOS included (the encoder's max_seq_len).
        max_target_len: decoder positions per sentence, BOS + target (the decoder's max_seq_len).
        batch_size: most pairs per batch.
        max_tokens: if set, also cap each batch at this many padded positions (batch by tokens).
        num_workers: DataLoader worker processes.
        seed: seed of the training batch order (epoch ``e``'s from ``(seed, e)``, so a resumed fit replays it).
    """

    def __init__(
        self,
        source: str = SYNTHETIC,
        root: str | None = None,
        src_lang: str = "de",
        tgt_lang: str = "en",
        train_split: str = "train",
        val_split: str = "val",
        test_split: str = "test_2016_flickr",
        extra_test_splits: list[str] | None = None,
        tokenizer: str = "bpe",
        vocab_size: int = 1000,
        shared_vocab: bool = True,
        max_source_len: int = 64,
        max_target_len: int = 64,
        batch_size: int = 64,
        max_tokens: int | None = None,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"ParallelDataModule.tokenizer={tokenizer!r} is not one of {sorted(TOKENIZERS)}")
        for name, value in [("batch_size", batch_size), ("max_source_len", max_source_len)]:
            _check_positive(name, value)
        if max_target_len < 2:
            raise ValueError(f"ParallelDataModule.max_target_len must be >= 2 (BOS + a token), got {max_target_len}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"ParallelDataModule.max_tokens must be >= 1 or null, got {max_tokens!r}")
        if num_workers < 0:
            raise ValueError(f"ParallelDataModule.num_workers must be >= 0, got {num_workers!r}")
        self.source, self.root, self.src_lang, self.tgt_lang = source, root, src_lang, tgt_lang
        extra_test_splits = list(extra_test_splits or [])
        if extra_test_splits and source == SYNTHETIC:
            raise ValueError(
                f"ParallelDataModule.extra_test_splits={extra_test_splits} needs a folder source or a named dataset; "
                "the synthetic source has one test split"
            )
        names = [train_split, val_split, test_split, *extra_test_splits]
        if len(set(extra_test_splits)) != len(extra_test_splits) or set(extra_test_splits) & set(names[:3]):
            raise ValueError(
                f"ParallelDataModule.extra_test_splits={extra_test_splits} must be distinct and differ from "
                f"the train, val and test splits {names[:3]}"
            )
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.splits |= {name: name for name in extra_test_splits}  # an extra test set's key is its name
        self.extra_test_splits = extra_test_splits
        self.tokenizer_kind, self.requested_vocab_size, self.shared_vocab = tokenizer, vocab_size, shared_vocab
        self.max_source_len, self.max_target_len = max_source_len, max_target_len
        self.batch_size, self.max_tokens, self.num_workers = batch_size, max_tokens, num_workers
        self.seed = seed
        self._pairs: dict[str, list[Pair]] = {}
        self._folder: Path | None = None
        self._tokenizers: tuple[Tokenizer, Tokenizer] | None = None
        self._datasets: dict[str, ParallelDataset] = {}

    # -- raw pairs and tokenizers ------------------------------------------------------
    @property
    def test_names(self) -> list[str]:
        """The file names of the test sets, in the order of the test dataloaders."""
        return [self.splits[key] for key in self.test_keys]

    @property
    def test_keys(self) -> list[str]:
        """The keys of the test sets in ``splits``, in the order of the test dataloaders."""
        return ["test", *self.extra_test_splits]

    def pairs(self, split: str) -> list[Pair]:
        """(source, target) text pairs of ``train``, ``val``, ``test`` or an extra test split, read on first use."""
        if split not in self.splits:
            raise ValueError(f"split {split!r} is not one of {list(self.splits)}")
        if split not in self._pairs:
            if self.source == SYNTHETIC:
                self._pairs.update(synthetic_pairs())
            else:
                folder, name = self.folder(), self.splits[split]
                pairs = read_parallel(folder / f"{name}.{self.src_lang}", folder / f"{name}.{self.tgt_lang}")
                self._pairs[split] = pairs
                logger.info("%s split %s: %d pairs", split, name, len(pairs))
        return self._pairs[split]

    def folder(self) -> Path:
        """The folder of ``{split}.{lang}`` files: a named dataset's (resolved once), or ``source``."""
        if self.source in DATASETS:
            if self._folder is None:
                self._folder = resolve(self.source, self.root)
            return self._folder
        folder = Path(self.source)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"ParallelDataModule.source={self.source!r} is not 'synthetic', one of the datasets "
                f"{list(DATASETS)}, nor a folder of {{split}}.{{lang}} files"
            )
        return folder

    def _train_tokenizers(self) -> tuple[Tokenizer, Tokenizer]:
        sources, targets = zip(*self.pairs("train"))
        kind, size = self.tokenizer_kind, self.requested_vocab_size
        if self.shared_vocab:
            shared = build_tokenizer(kind, [*sources, *targets], size)
            return shared, shared
        return build_tokenizer(kind, list(sources), size), build_tokenizer(kind, list(targets), size)

    @property
    def src_tokenizer(self) -> Tokenizer:
        if self._tokenizers is None:
            self._tokenizers = self._train_tokenizers()
        return self._tokenizers[0]

    @property
    def tgt_tokenizer(self) -> Tokenizer:
        if self._tokenizers is None:
            self._tokenizers = self._train_tokenizers()
        return self._tokenizers[1]

    @property
    def src_vocab_size(self) -> int:
        return self.src_tokenizer.vocab_size

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt_tokenizer.vocab_size

    # -- datasets and loaders ----------------------------------------------------------
    def dataset(self, split: str) -> ParallelDataset:
        """The encoded pairs of one split (encoded once; cropping is logged as a warning)."""
        if split not in self._datasets:
            sources, targets = zip(*self.pairs(split))
            src_ids, src_cropped = encode_source(self.src_tokenizer, sources, self.max_source_len)
            tgt_ids, tgt_cropped = encode_target(self.tgt_tokenizer, targets, self.max_target_len)
            if src_cropped or tgt_cropped:
                logger.warning(
                    "%s split: cropped %d source sentences to max_source_len=%d and %d target sentences to "
                    "max_target_len=%d (of %d pairs)",
                    split, len(src_cropped), self.max_source_len, len(tgt_cropped), self.max_target_len, len(sources),
                )  # fmt: skip
            self._datasets[split] = ParallelDataset(src_ids, tgt_ids, list(targets))
        return self._datasets[split]

    def setup(self, stage: str) -> None:
        needed = {"fit": ("train", "val"), "validate": ("val",), "test": self.test_keys}.get(stage, ())
        for split in needed:
            self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader[dict[str, Any]]:
        data = self.dataset(split)
        placed = placement(self) if shuffle else distributed(self)
        sampler = LengthBatchSampler(
            data.lengths(), self.batch_size, self.max_tokens, shuffle=shuffle, seed=self.seed, **placed
        )
        src, tgt = self.src_tokenizer, self.tgt_tokenizer
        ids = [src.token_id(PAD_TOKEN), *(tgt.token_id(token) for token in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN))]
        return batch_loader(data, sampler, Collate(*ids), self.num_workers)

    def train_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader[dict[str, Any]]:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader[dict[str, Any]] | list[DataLoader[dict[str, Any]]]:
        """The test set's loader; with ``extra_test_splits``, a list: the test set's, then one per extra split."""
        if not self.extra_test_splits:
            return self._loader("test", shuffle=False)
        return [self._loader(split, shuffle=False) for split in self.test_keys]
