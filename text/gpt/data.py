"""Causal language-modelling data: a corpus cut into (input, next-token target) windows."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from anyformer.core.train.data_order import ResumableLoader
from anyformer.text.batching import distributed
from anyformer.text.corpus import load_corpus
from anyformer.text.hf import hf_tokenizer, is_hf
from anyformer.text.tokenizer import TOKENIZERS, Tokenizer, build_tokenizer, load_tokenizer

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


class WindowSampler(DistributedSampler):
    """Start offsets of random training windows, a pure function of the seed and the batch number.

    Training batch ``g`` (numbered from the start of the run) is the ``world_size * batch_size``
    starts drawn uniformly with replacement by ``numpy.random.default_rng((seed, g))``; rank ``r``
    takes the ``r``-th slice of ``batch_size``. Hence a run resumed at any step draws the batches an
    uninterrupted run would have drawn, and ``n`` ranks with batch ``B`` train on exactly the windows
    of one process with batch ``n * B``. An epoch is ``batches_per_epoch`` batches; one iteration
    yields the rest of the current epoch, from batch ``position()`` (batches already trained, which
    the data module reads from the trainer) or, without ``position``, from where the previous
    iteration stopped.

    It subclasses ``DistributedSampler`` only so that Lightning sees the data as already split
    across ranks and does not wrap it in a sampler of its own.

    Args:
        n_windows: Number of windows to draw from (starts are ``0 .. n_windows - 1``).
        batch_size: Windows per batch on one rank.
        batches_per_epoch: Batches in one epoch (the same on every rank).
        seed: Non-negative seed of the draws.
        rank: This process's rank.
        world_size: Number of ranks.
        position: Returns the number of batches trained so far; read when an iteration starts.
    """

    def __init__(
        self,
        n_windows: int,
        batch_size: int,
        batches_per_epoch: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        position: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(range(n_windows), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.n_windows = n_windows
        self.batch_size = batch_size
        self.batches_per_epoch = batches_per_epoch
        self.position = position
        self._next_batch = 0

    def batch_starts(self, batch: int) -> list[int]:
        """This rank's window starts in training batch number ``batch``."""
        starts = np.random.default_rng((self.seed, batch)).integers(
            0, self.n_windows, size=self.num_replicas * self.batch_size
        )
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        return mine.tolist()

    def __iter__(self) -> Iterator[int]:
        first = self.position() if self.position is not None else self._next_batch
        end_of_epoch = (first // self.batches_per_epoch + 1) * self.batches_per_epoch
        for batch in range(first, end_of_epoch):
            self._next_batch = batch + 1
            yield from self.batch_starts(batch)

    def __len__(self) -> int:
        # A whole epoch, also when resuming part-way: Lightning counts the batches already
        # trained in the epoch and stops after the rest.
        return self.batches_per_epoch * self.batch_size


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"TextDataModule.{name} must be >= 1, got {value!r}")


class TextDataModule(pl.LightningDataModule):
    """Next-token prediction on one corpus, split by characters into train (first part) and val.

    The tokenizer is trained on the train text only (or loaded), and each split is encoded once
    into a 1-D id tensor. Training draws random windows as a function of (seed, batch number) (see
    :class:`WindowSampler`), so a resumed run sees the same batches as an uninterrupted one and
    DDP ranks see different windows; validation uses a fixed, evenly spaced set of windows so its
    loss is comparable across runs and seeds.
    Batches are ``{"input_ids": (B, T) long, "targets": (B, T) long}``.

    ``tokenizer``, ``vocab_size`` and ``val_chars_per_token`` work right after construction
    (without ``setup()``), so a CLI can size the model from ``data.vocab_size``. Because those
    two names are taken by the built tokenizer, the ``tokenizer`` and ``vocab_size`` arguments
    are kept as ``tokenizer_kind`` and ``requested_vocab_size``; every other argument is an
    attribute of the same name (e.g. ``data.context_len``, linked into the model config).

    Args:
        source: Corpus: ``"pydoc"``, ``"tinyshakespeare"`` or a path; see :func:`load_corpus`.
        root: Folder of a named dataset source (``tinyshakespeare``), first in the lookup order of
            :mod:`anyformer.core.data`; None: ``$ANYFORMER_DATA``, the user cache, then a download.
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
        seed: Seed of the training windows (>= 0).
        init_from: ``hf:<folder or hub id>`` of a GPT-2 model: its tokenizer replaces the trained
            one (``tokenizer``, ``vocab_size`` and ``tokenizer_path`` are then unused), and the path is
            linked into the model, which starts from its weights (see ``anyformer.text.hf``).
    """

    def __init__(
        self,
        source: str = "pydoc",
        root: str | None = None,
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
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if init_from is not None and not is_hf(init_from):
            raise ValueError(f"TextDataModule.init_from={init_from!r} must be hf:<folder or hub id> (a GPT-2 model)")
        if init_from is not None and tokenizer_path is not None:
            raise ValueError("TextDataModule: give init_from (the HF model's tokenizer) or tokenizer_path, not both")
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
        if seed < 0:
            raise ValueError(f"TextDataModule.seed must be >= 0, got {seed!r}")
        self.source = source
        self.root = root
        self.tokenizer_kind = tokenizer
        self.requested_vocab_size = vocab_size
        self.tokenizer_path = tokenizer_path
        self.init_from = init_from
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

    def _train_val_text(self) -> tuple[str, str]:
        """Read the corpus once and split it by characters into (train, val) text."""
        if self._texts is None:
            text = load_corpus(self.source, self.root)
            split = int(len(text) * (1 - self.val_fraction))
            self._texts = text[:split], text[split:]
        return self._texts

    @property
    def tokenizer(self) -> Tokenizer:
        """The tokenizer of ``init_from``, loaded from ``tokenizer_path`` or trained on the train text, on first use."""
        if self._tokenizer is None:
            self._tokenizer = self._load_or_train_tokenizer()
        return self._tokenizer

    def _load_or_train_tokenizer(self) -> Tokenizer:
        if self.init_from is not None:
            return hf_tokenizer(self.init_from)
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

    def _batches_trained(self) -> int:
        """Training batches consumed so far by the attached trainer (restored on resume)."""
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """``train_batches_per_epoch`` batches of windows drawn uniformly with replacement.

        Under a trainer, the draws continue from the trainer's step (see :class:`WindowSampler`);
        with gradient accumulation this assumes ``train_batches_per_epoch`` is a multiple of
        ``accumulate_grad_batches``.
        """
        windows = TokenWindows(self.token_ids("train"), self.context_len)
        trainer = self.trainer
        sampler = WindowSampler(
            len(windows),
            self.batch_size,
            self.train_batches_per_epoch,
            self.seed,
            **distributed(self),
            position=self._batches_trained if trainer else None,
        )
        # Resumable: the sampler continues from the trainer's step, read at the first batch.
        return self._loader(windows, sampler=sampler, loader_class=ResumableLoader)

    def val_dataloader(self) -> DataLoader[dict[str, Tensor]]:
        """Up to ``val_batches`` batches of windows at evenly spaced, fixed start offsets.

        Under DDP the count is rounded down to a multiple of the number of ranks, so Lightning's
        distributed sampler never pads a rank with repeated windows (which would count them twice).
        """
        windows = TokenWindows(self.token_ids("val"), self.context_len)
        n_windows = min(self.val_batches * self.batch_size, len(windows))
        world_size = self.trainer.world_size if self.trainer else 1
        n_windows -= n_windows % world_size
        # Spacing >= 1 since n_windows <= len(windows), so the floored starts are distinct.
        starts = torch.linspace(0, len(windows) - 1, n_windows, dtype=torch.float64).long()
        return self._loader(Subset(windows, starts.tolist()))

    def _loader(
        self,
        dataset: Dataset[dict[str, Tensor]],
        sampler: Sampler[int] | None = None,
        loader_class: type[DataLoader] = DataLoader,
    ) -> DataLoader[dict[str, Tensor]]:
        return loader_class(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Its own generator: starting an iteration then draws (the workers' base seed) from it,
            # not from the global RNG, so validation does not shift dropout masks or resumed runs.
            generator=torch.Generator().manual_seed(self.seed),
        )
