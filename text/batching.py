"""Batching of variable-length text: the one length-bucketing batch sampler and BERT-style padding.

A batch is padded to its longest sequence, so a batch of items of similar length wastes little
compute on padding. :class:`LengthBatchSampler` makes such batches for every text task that
batches variable-length items: BERT pretraining pairs (``anyformer.text.bert.pairs.PairSampler``,
whose items are drawn anew every epoch), translation, and sentence classification when asked
(``TextClassificationDataModule.length_buckets``: off by default, see there why). Training
order: the items are shuffled, each run of :data:`BUCKET_BATCHES` batches' worth of them is
sorted by length and cut into batches, and the batches of the whole epoch are shuffled (a short
remainder batch stays last); so a batch holds items of similar length, every epoch differs, and
epoch ``e`` is a function of ``(seed, e)``, which a resumed fit replays (see
:mod:`anyformer.core.train.data_order`). Evaluation order: the whole split sorted by length.

Under DDP every rank plans the same batches and takes every ``world_size``-th one; the sampler is a
``DistributedSampler``, so Lightning does not wrap it in a sampler of its own (which would break
the buckets), as with GPT's ``WindowSampler``. The loaders (:func:`batch_loader`) therefore take it
as their ``sampler``, each element a whole batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from anyformer.core.train.data_order import EpochBatchSampler, batch_loader, distributed, epoch_generator

__all__ = ["IGNORE_INDEX", "LengthBatchSampler", "batch_loader", "bucket_by_length", "cut_batches", "distributed",
           "pad_batch"]  # fmt: skip

IGNORE_INDEX = -100
"""Label of positions without a loss (padding, unmasked tokens), as ``F.cross_entropy`` expects."""
BUCKET_BATCHES = 50
"""Batches' worth of shuffled items sorted together: more gives tighter buckets, fewer a more random order."""


def cut_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Cut the positions ``0..N-1`` of ``lengths``, in order, into consecutive batches.

    A batch holds at most ``batch_size`` items and, with ``max_tokens``, at most ``max_tokens``
    padded positions (items x longest length); a single longer item gets a batch of its own.
    """
    batches, batch, longest = [], [], 0
    for i, length in enumerate(lengths):
        longer = max(longest, length)
        full = len(batch) >= batch_size or (max_tokens is not None and (len(batch) + 1) * longer > max_tokens)
        if batch and full:
            batches.append(batch)
            batch, longer = [], length
        batch.append(i)
        longest = longer
    if batch:
        batches.append(batch)
    return batches


def bucket_by_length(
    lengths: Sequence[int],
    batch_size: int,
    max_tokens: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Batches of the positions ``0..N-1`` of ``lengths`` (items given in random order), bucketed by length.

    Each run of ``BUCKET_BATCHES * batch_size`` consecutive items is sorted by length (stably) and
    cut by :func:`cut_batches`; then the batches of all runs are shuffled with ``generator``, except
    the very last one when it holds fewer than ``batch_size`` items: that remainder stays last.
    """
    pool = BUCKET_BATCHES * batch_size
    batches = []
    for start in range(0, len(lengths), pool):
        run = sorted(range(start, min(start + pool, len(lengths))), key=lengths.__getitem__)
        batches += [[run[i] for i in cut] for cut in cut_batches([lengths[i] for i in run], batch_size, max_tokens)]
    # The remainder (a last batch cut short by running out of items) stays last, where a
    # DataLoader puts its short batch; the other batches are shuffled.
    remainder = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    shuffled = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffled] + remainder


class LengthBatchSampler(EpochBatchSampler):
    """Batches of items of similar length, so little of a batch is padding (module docstring).

    The items are the indices ``0..N-1`` of ``lengths``; a subclass whose items are drawn anew
    every epoch overrides :meth:`epoch_items`. Epoch ``e``'s plan is a function of ``(seed, e)``
    (see :class:`~anyformer.core.train.data_order.EpochBatchSampler`: iterations follow the
    attached trainer, or run epoch after epoch). With ``max_tokens`` the number of batches depends
    on the draw, so epochs differ in length.

    Args:
        lengths: (N,) padded cost of each item, e.g. its number of tokens.
        batch_size: most items per batch.
        max_tokens: if set, also at most this many padded positions per batch (batch by tokens).
        shuffle: training order (shuffled, bucketed, a new order every epoch) rather than the
            whole split sorted by length (evaluation).
        seed: non-negative seed of the shuffles.
        rank, world_size, position: as for :class:`~anyformer.core.train.data_order.EpochBatchSampler`.
    """

    def __init__(
        self,
        lengths: Sequence[int] | Tensor,
        batch_size: int,
        max_tokens: int | None = None,
        *,
        shuffle: bool,
        seed: int = 0,
        **placed: Any,
    ) -> None:
        super().__init__(len(lengths), seed=seed, **placed)
        self.lengths = [int(length) for length in lengths]
        self.batch_size, self.max_tokens, self.shuffle = batch_size, max_tokens, shuffle
        self.fixed_length = max_tokens is None or not shuffle

    def epoch_items(self, epoch: int) -> tuple[list[Any], list[int]]:
        """The items of ``epoch`` in the order they are bucketed, and their lengths: the indices,
        shuffled by a generator seeded with ``(seed, epoch)`` (``shuffle``) or sorted by length."""
        n = len(self.lengths)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, epoch)).tolist()
        else:
            order = sorted(range(n), key=self.lengths.__getitem__)
        return order, [self.lengths[i] for i in order]

    def plan(self, epoch: int) -> list[list[Any]]:
        items, lengths = self.epoch_items(epoch)
        if self.shuffle:
            generator = epoch_generator(self.seed, epoch, stream=1)
            batches = bucket_by_length(lengths, self.batch_size, self.max_tokens, generator=generator)
        else:
            batches = cut_batches(lengths, self.batch_size, self.max_tokens)
        return [[items[i] for i in batch] for batch in batches]


def pad_batch(items: Sequence[dict[str, Tensor]], pad_id: int) -> dict[str, Tensor]:
    """Stack variable-length BERT-style items into a batch padded to its longest sequence.

    ``input_ids`` are padded with ``pad_id``, ``segment_ids`` with 0, ``mlm_labels`` with
    :data:`IGNORE_INDEX`; ``attention_mask`` is (B, T) bool, True at real tokens. Scalar
    entries (``nsp_labels``, ``labels``, ``mask_seed``) are stacked.
    """
    longest = max(len(item["input_ids"]) for item in items)
    fills = {"input_ids": pad_id, "segment_ids": 0, "mlm_labels": IGNORE_INDEX}
    batch: dict[str, Tensor] = {}
    for key in items[0]:
        if items[0][key].ndim == 0:
            batch[key] = torch.stack([item[key] for item in items])
            continue
        out = torch.full((len(items), longest), fills[key], dtype=torch.long)
        for row, item in enumerate(items):
            out[row, : len(item[key])] = item[key]
        batch[key] = out
    lengths = torch.tensor([len(item["input_ids"]) for item in items])
    batch["attention_mask"] = torch.arange(longest)[None, :] < lengths[:, None]  # (B, T)
    return batch
