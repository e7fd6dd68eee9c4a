"""Causal language-modelling data: a corpus cut into (input, next-token target) windows."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from text.corpus import load_corpus
from text.tokenizers import TOKENIZERS, Tokenizer, build_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")


class TokenWindows(Dataset[dict[str, Tensor]]):
    """Every window of ``context_len`` tokens of a 1-D id tensor, indexed by start offset.

    Item ``i`` is ``{"input_ids": ids[i : i + T], "targets": ids[i + 1 : i + T + 1]}``:
    the target at each position is the next token.

    Args:
        ids: Token ids, shape (N,), with N > ``context_len``.
        context_len: Window length T.
    """

    def __init__(self, ids: Tensor, context_len: int) -> None:
        self.ids = ids
        self.context_len = context_len

    def __len__(self) -> int:
        return len(self.ids) - self.context_len

    def __getitem__(self, start: int) -> dict[str, Tensor]:
        end = start + self.context_len
        return {"input_ids": self.ids[start:end], "targets": self.ids[start + 1 : end + 1]}  # (T,)


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"TextDataModule.{name} must be >= 1, got {value!r}")


class TextDataModule(pl.LightningDataModule):
    """Next-token prediction on one corpus, split by characters into train (first part) and val.

    The tokenizer is trained on the train text only (or loaded), and each split is encoded once
    into a 1-D id tensor. Training draws random windows from a seeded generator; validation
    uses a fixed, evenly spaced set of windows so its loss is comparable across runs and seeds.
    Batches are ``{"input_ids": (B, T) long, "targets": (B, T) long}``.

    ``tokenizer``, ``vocab_size`` and ``val_chars_per_token`` work right after construction
    (without ``setup()``), so a CLI can size the model from ``data.vocab_size``. Because those
    two names are taken by the built tokenizer, the ``tokenizer`` and ``vocab_size`` arguments
    are kept as ``tokenizer_kind`` and ``requested_vocab_size``; every other argument is an
    attribute of the same name (e.g. ``data.context_len``, linked into the model config).

    Args:
        source: Corpus: ``"pydoc"``, ``"tinyshakespeare"`` or a path; see :func:`load_corpus`.
        tokenizer: Tokenizer kind to train: ``"bpe"`` or ``"char"``.
        vocab_size: Target BPE vocabulary size (``char`` takes the corpus alphabet instead).
        tokenizer_path: JSON file from ``Tokenizer.save`` to load instead of training one; its
            kind must equal ``tokenizer``.
        context_len: Tokens per training window (T).
        batch_size: Windows per batch (B).
        val_fraction: Share of the corpus characters, taken from the end, used for validation.
        train_batches_per_epoch: Random batches that make up one training epoch.
        val_batches: Batches in the fixed validation set (fewer if the val split is short).
        num_workers: DataLoader worker processes.
        seed: Seed of the generator that draws training windows.
    """

    def __init__(
        self,
        source: str = "pydoc",
        tokenizer: str = "bpe",
        vocab_size: int = 512,
        tokenizer_path: str | None = None,
        context_len: int = 64,
        batch_size: int = 12,
        val_fraction: float = 0.1,
        train_batches_per_epoch: int = 1000,
        val_batches: int = 50,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        if tokenizer not in TOKENIZERS:
            raise ValueError(f"TextDataModule.tokenizer={tokenizer!r} is not one of {sorted(TOKENIZERS)}")
        for name, value in [
            ("context_len", context_len),
            ("batch_size", batch_size),
            ("train_batches_per_epoch", train_batches_per_epoch),
            ("val_batches", val_batches),
        ]:
            _check_positive(name, value)
        if not 0 < val_fraction < 1:
            raise ValueError(f"TextDataModule.val_fraction must be in (0, 1), got {val_fraction!r}")
        if num_workers < 0:
            raise ValueError(f"TextDataModule.num_workers must be >= 0, got {num_workers!r}")
        self.source = source
        self.tokenizer_kind = tokenizer
        self.requested_vocab_size = vocab_size
        self.tokenizer_path = tokenizer_path
        self.context_len = context_len
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.train_batches_per_epoch = train_batches_per_epoch
        self.val_batches = val_batches
        self.num_workers = num_workers
        self.seed = seed
        self._texts: tuple[str, str] | None = None
        self._tokenizer: Tokenizer | None = None
        self._ids: dict[str, Tensor] = {}
        # Created once so every epoch draws new windows while a run stays reproducible.
        self._generator = torch.Generator().manual_seed(seed)

    def _train_val_text(self) -> tuple[str, str]:
        """Read the corpus once and split it by characters into (train, val) text."""
        if self._texts is None:
            text = load_corpus(self.source)
            split = int(len(text) * (1 - self.val_fraction))
            self._texts = text[:split], text[split:]
        return self._texts

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer, loaded from ``tokenizer_path`` or trained on the train text on first use."""
        if self._tokenizer is None:
            self._tokenizer = self._load_or_train_tokenizer()
        return self._tokenizer

    def _load_or_train_tokenizer(self) -> Tokenizer:
        kind = self.tokenizer_kind
        path = self.tokenizer_path
        if path is None:
            train_text, _ = self._train_val_text()
            return build_tokenizer(kind, [train_text], self.requested_vocab_size)
        tokenizer = load_tokenizer(path)
        if tokenizer.kind != kind:
            raise ValueError(
                f"tokenizer_path {path} holds a {tokenizer.kind!r} tokenizer but TextDataModule.tokenizer={kind!r}"
            )
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of :attr:`tokenizer`: the model's embedding and output size."""
        return self.tokenizer.vocab_size

    def token_ids(self, split: str) -> Tensor:
        """All ids of one split's text, shape (N,), encoded on first use.

        Args:
            split: ``"train"`` or ``"val"``.

        Raises:
            ValueError: Unknown split, or fewer than ``context_len + 1`` tokens in it.
        """
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {list(SPLITS)}")
        if split not in self._ids:
            text = self._train_val_text()[SPLITS.index(split)]
            try:
                ids = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
            except ValueError as err:  # e.g. a val character the char tokenizer never saw
                raise ValueError(f"cannot encode the {split} split: {err}") from err
            needed = self.context_len + 1
            if len(ids) < needed:
                raise ValueError(
                    f"the {split} split of corpus {self.source!r} has {len(ids)} tokens, "
                    f"but context_len={self.context_len} needs at least {needed}; use a "
                    "longer corpus, a smaller context_len or another val_fraction"
                )
            logger.info("%s split: %d characters, %d tokens", split, len(text), len(ids))
            self._ids[split] = ids
        return self._ids[split]

    @property
    def val_chars_per_token(self) -> float:
        """Characters per token of the val text, to turn nats/token into bits/char.

        ``bits_per_char = nats_per_token / ln(2) / val_chars_per_token``.
        """
        _, val_text = self._train_val_text()
        return len(val_text) / len(self.token_ids("val"))

    def setup(self, stage: str) -> None:
        """Encode both splits (train/val are all this module has)."""
        for split in SPLITS:
            self.token_ids(split)

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """``train_batches_per_epoch`` batches of windows drawn uniformly with replacement."""
        windows = TokenWindows(self.token_ids("train"), self.context_len)
        sampler = RandomSampler(
            windows,
            replacement=True,
            num_samples=self.train_batches_per_epoch * self.batch_size,
            generator=self._generator,
        )
        return self._loader(windows, sampler=sampler)

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Up to ``val_batches`` batches of windows at evenly spaced, fixed start offsets."""
        windows = TokenWindows(self.token_ids("val"), self.context_len)
        n_windows = min(self.val_batches * self.batch_size, len(windows))
        # Spacing >= 1 since n_windows <= len(windows), so the floored starts are distinct.
        starts = torch.linspace(0, len(windows) - 1, n_windows, dtype=torch.float64).long()
        return self._loader(Subset(windows, starts.tolist()))

    def _loader(
        self, dataset: Dataset[dict[str, Tensor]], sampler: RandomSampler | None = None
    ) -> DataLoader[dict[str, Tensor]]:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
