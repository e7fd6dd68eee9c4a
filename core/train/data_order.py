"""Training data whose every random draw a resumed fit replays: a pure function of (seed, epoch, place).

No draw of a training data pipeline comes from a stream that runs across epochs, loaders or
processes; each is a function of the data module's ``seed`` and where it happens:

- the batches of epoch ``e`` are planned from ``(seed, e)`` alone (:class:`EpochBatchSampler`, and
  its subclasses :class:`ShuffledBatches`, :class:`RandomBatches` and the text domain's length buckets);
- a batch's items are read (in order, by one process), and the batch collated, with torch's, NumPy's
  and Python's global generators seeded by ``(seed, e, batch)`` and put back after (:func:`batch_loader`,
  :func:`seeded`): augmentations that draw from the global generators (torchvision's transforms,
  waveform perturbations, MixUp) become functions of the place too, in the main process or in any
  number of workers, and never move the stream that dropout draws from;
- an iteration starts where the attached trainer is (:func:`trainer_position`): the epoch and the
  batches of it already trained, read from ``global_step``, which a checkpoint restores.

So a fit resumed from any checkpoint trains on the batches, and with the augmentations, that an
uninterrupted fit would have. Under DDP every rank plans the same epoch and takes every
``world_size``-th batch (the "place" is the batch's number in the shared plan, so an item is
augmented alike whatever the number of ranks); the samplers are ``DistributedSampler``s, so
Lightning does not wrap them in a sampler of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

ITEM, BATCH = 0, 1
"""Tags that keep an item's seed apart from a batch's with the same numbers."""


def mix_seed(*parts: int) -> int:
    """A seed in ``[0, 2**63)`` from non-negative integers; different tuples give unrelated seeds
    (NumPy's ``SeedSequence`` hashing), so ``(seed, epoch)`` never collides with ``(seed + 1, epoch - 1)``."""
    state = np.random.SeedSequence([int(part) for part in parts]).generate_state(1, np.uint64)
    return int(state[0]) >> 1


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A torch generator seeded by ``(seed, epoch, stream)``."""
    return torch.Generator().manual_seed(mix_seed(seed, epoch, stream))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Runs the block with torch's CPU generator, NumPy's and Python's global generators seeded by
    ``seed``, and restores their states after (CUDA generators are not touched)."""
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class Batch(list):
    """The items (indices or requests) of one batch, and its place: the sampler's ``seed``, the
    ``epoch`` and ``number``, the batch's place in the epoch's plan (before the rank split)."""

    def __init__(self, items: Sequence[Any], seed: int, epoch: int, number: int) -> None:
        super().__init__(items)
        self.seed, self.epoch, self.number = seed, epoch, number

    def read_seed(self) -> int:
        """Seed of the draws made while reading the batch's items, in order (crops, SpecAugment)."""
        return mix_seed(self.seed, self.epoch, ITEM, self.number)

    def batch_seed(self) -> int:
        """Seed of the draws made while collating the batch (MixUp, masking)."""
        return mix_seed(self.seed, self.epoch, BATCH, self.number)


Position = Callable[["EpochBatchSampler"], tuple[int, int]]
"""Where the next iteration of a sampler starts: ``(epoch, batches of it already trained)``."""


class EpochBatchSampler(DistributedSampler):
    """Yields :class:`Batch` es; epoch ``e``'s are ``plan(e)``, a pure function of ``(seed, e)``.

    Under a trainer (``position``), an iteration yields the rest of the epoch the trainer is in,
    from its first untrained batch; ``len()`` is then the length of epoch 0, the one Lightning reads
    when a fit starts (and caps every epoch at), so a resumed fit counts its epochs the same way.
    Without ``position``, iterations run epoch ``self.epoch`` (see ``set_epoch``) and move to the
    next one, and ``len()`` is the length of the next iteration.

    Subclasses implement :meth:`plan` and say whether every epoch has the same number of batches
    (``fixed_length``), which lets a resumed fit find its epoch without planning the earlier ones.

    Args:
        n_items: the dataset's length.
        seed: non-negative seed of every draw.
        rank: this process's rank (DDP).
        world_size: number of ranks; each takes every ``world_size``-th batch of the shared plan,
            all the same number of batches (a remainder of fewer than ``world_size`` is left out).
        position: :func:`trainer_position` of the data module, or None (no trainer).
    """

    fixed_length = True

    def __init__(
        self, n_items: int, *, seed: int, rank: int = 0, world_size: int = 1, position: Position | None = None
    ) -> None:
        if seed < 0:
            raise ValueError(f"{type(self).__name__}: seed must be >= 0, got {seed!r}")
        super().__init__(range(n_items), num_replicas=world_size, rank=rank, shuffle=False, seed=seed)
        self.position = position
        self._planned: dict[int, list[Batch]] = {}

    def plan(self, epoch: int) -> list[list[Any]]:
        """The batches of ``epoch`` on all ranks together, in training order."""
        raise NotImplementedError

    def batches(self, epoch: int) -> list[Batch]:
        """This rank's batches of ``epoch`` (epoch 0's and the latest epoch's are kept)."""
        if epoch not in self._planned:
            batches = [Batch(items, self.seed, epoch, number) for number, items in enumerate(self.plan(epoch))]
            if self.num_replicas > 1:
                per_rank = len(batches) // self.num_replicas
                batches = batches[self.rank :: self.num_replicas][:per_rank]
            self._planned = {e: planned for e, planned in self._planned.items() if e == 0} | {epoch: batches}
        return self._planned[epoch]

    def __len__(self) -> int:
        return len(self.batches(0 if self.position is not None else self.epoch))

    def __iter__(self) -> Iterator[Batch]:
        if self.position is None:
            epoch, start = self.epoch, 0
            self.epoch += 1
        else:
            epoch, start = self.position(self)
        yield from self.batches(epoch)[start:]


def _limited(length: int, limit: int | float) -> int:
    """Batches Lightning runs of a loader of ``length`` under ``limit_train_batches`` (its own rule)."""
    return min(length, limit) if isinstance(limit, int) else int(length * limit)


def resume_position(trainer: Any, sampler: EpochBatchSampler) -> tuple[int, int]:
    """``(epoch, batches of it already trained)`` for ``trainer``'s next training batch.

    Walks the epochs from the start: epoch ``e`` runs ``min(len(sampler.batches(e)), cap)`` batches,
    ``cap`` being ``len(sampler)`` under ``limit_train_batches``, in ``ceil(batches / accumulate_grad_batches)``
    optimizer steps (Lightning steps on an epoch's last batch too). ``global_step`` is what a
    checkpoint restores, and is settled whenever Lightning creates the training iterator.
    """
    cap = _limited(len(sampler), trainer.limit_train_batches)
    accumulate, steps = trainer.accumulate_grad_batches, trainer.global_step
    epoch = 0
    while True:
        batches = min(len(sampler.batches(epoch)), cap) if not sampler.fixed_length else cap
        if batches < 1:
            raise ValueError(f"training epoch {epoch} has no batch; more data or a smaller batch size")
        epoch_steps = math.ceil(batches / accumulate)
        if sampler.fixed_length:  # every epoch alike: jump straight to the current one
            epoch, steps = epoch + steps // epoch_steps, steps % epoch_steps
        if steps < epoch_steps:
            return epoch, steps * accumulate
        steps -= epoch_steps
        epoch += 1


def distributed(data_module: Any) -> dict[str, int]:
    """``rank`` and ``world_size`` of the trainer a data module is attached to (one process if none)."""
    trainer = getattr(data_module, "trainer", None)
    if trainer is None:
        return {"rank": 0, "world_size": 1}
    return {"rank": trainer.global_rank, "world_size": trainer.world_size}


def trainer_position(data_module: Any) -> Position | None:
    """The :data:`Position` of the trainer a data module is attached to, or None without one."""
    trainer = getattr(data_module, "trainer", None)
    return None if trainer is None else partial(resume_position, trainer)


def placement(data_module: Any) -> dict[str, Any]:
    """``rank``, ``world_size`` and ``position`` of a training sampler of ``data_module``."""
    return {**distributed(data_module), "position": trainer_position(data_module)}


class ShuffledBatches(EpochBatchSampler):
    """Every item once per epoch, in a random order cut into batches of ``batch_size``.

    Args:
        n_items: the dataset's length.
        batch_size: items per batch.
        seed: seed of the order (epoch ``e``: a permutation by a generator seeded with ``(seed, e)``).
        drop_last: leave out a last batch of fewer than ``batch_size`` items.
        rank, world_size, position: as for :class:`EpochBatchSampler`.
    """

    def __init__(self, n_items: int, batch_size: int, *, seed: int, drop_last: bool = False, **placed: Any) -> None:
        super().__init__(n_items, seed=seed, **placed)
        self.n_items, self.batch_size, self.drop_last = n_items, batch_size, drop_last

    def plan(self, epoch: int) -> list[list[int]]:
        order = torch.randperm(self.n_items, generator=epoch_generator(self.seed, epoch)).tolist()
        batches = [order[i : i + self.batch_size] for i in range(0, self.n_items, self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches


class RandomBatches(EpochBatchSampler):
    """``batches_per_epoch`` batches per rank of items drawn uniformly with replacement.

    Args:
        n_items: the dataset's length.
        batch_size: items per batch.
        batches_per_epoch: batches of one epoch on each rank.
        seed: seed of the draws (epoch ``e``: a generator seeded with ``(seed, e)``).
        rank, world_size, position: as for :class:`EpochBatchSampler`.
    """

    def __init__(self, n_items: int, batch_size: int, batches_per_epoch: int, *, seed: int, **placed: Any) -> None:
        super().__init__(n_items, seed=seed, **placed)
        self.n_items, self.batch_size, self.batches_per_epoch = n_items, batch_size, batches_per_epoch

    def plan(self, epoch: int) -> list[list[int]]:
        shape = (self.batches_per_epoch * self.num_replicas, self.batch_size)
        return torch.randint(self.n_items, shape, generator=epoch_generator(self.seed, epoch)).tolist()


class _SeededBatches(Dataset):
    """A dataset indexed by a whole :class:`Batch`: its items, each read under its own seed."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, batch: Sequence[Any]) -> tuple[int | None, list[Any]]:
        if not isinstance(batch, Batch):
            return None, [self.dataset[item] for item in batch]
        # One seed for the whole batch, not one per item: the items are always read in the same order
        # by one process, so their draws are as reproducible, and saving/restoring three generators'
        # states per item would cost a vision batch of 128 images ~27 ms on one core.
        with seeded(batch.read_seed()):
            items = [self.dataset[item] for item in batch]
        return batch.batch_seed(), items


class _SeededCollate:
    """Collates the items of a batch under the batch's seed."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any]) -> None:
        self.collate_fn = collate_fn

    def __call__(self, fetched: tuple[int | None, list[Any]]) -> Any:
        seed, items = fetched
        if seed is None:
            return self.collate_fn(items)
        with seeded(seed):
            return self.collate_fn(items)


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable: its sampler continues from the trainer's
    step (which the checkpoint restores), so there is no loader state to save, and having
    ``state_dict``/``load_state_dict`` only stops Lightning warning that it is not resumable.

    An iteration starts at its first ``next()``: Lightning creates the first training iterator
    before it restores a checkpoint's step (``estimated_stepping_batches``, read by the schedule,
    sets the data up), and loader workers would read the sampler there, at step 0.
    """

    def __iter__(self) -> Iterator[Any]:
        yield from super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def batch_loader(
    dataset: Any,
    sampler: EpochBatchSampler,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader of ``sampler``'s batches (``batch_size=None``: each sampler element is a whole
    batch), its items read and the batch collated (``collate_fn``, default ``default_collate``)
    under the seeds of its place. The loader's own generator (the workers' base seed) is seeded
    too, so creating an iterator never draws from the global generator."""
    return ResumableLoader(
        _SeededBatches(dataset),
        sampler=sampler,
        batch_size=None,
        collate_fn=_SeededCollate(collate_fn or default_collate),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(sampler.seed),
    )
