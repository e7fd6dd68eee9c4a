"""Every draw of the training data is a function of (seed, epoch, place): samplers, the trainer's
position, item and batch seeds, DataLoader workers (``anyformer.core.train.data_order``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Dataset

from anyformer.core.train.data_order import (
    RandomBatches,
    ShuffledBatches,
    batch_loader,
    resume_position,
)
from anyformer.text.batching import LengthBatchSampler


def trainer(global_step: int, accumulate: int = 1, limit: int | float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(global_step=global_step, accumulate_grad_batches=accumulate, limit_train_batches=limit)


def test_an_epoch_is_a_function_of_seed_and_epoch_alone() -> None:
    first = ShuffledBatches(50, 8, seed=3)
    epochs = [list(first) for _ in range(3)]  # without a trainer, each iteration is the next epoch
    again = ShuffledBatches(50, 8, seed=3)
    assert [list(again.batches(e)) for e in (2, 0, 1)] == [epochs[2], epochs[0], epochs[1]]
    assert epochs[0] != epochs[1] and sorted(i for b in epochs[0] for i in b) == list(range(50))
    assert [len(b) for b in epochs[0]] == [8] * 6 + [2]
    assert [len(b) for b in ShuffledBatches(50, 8, seed=3, drop_last=True).batches(0)] == [8] * 6
    assert list(ShuffledBatches(50, 8, seed=4).batches(0)) != epochs[0]
    with pytest.raises(ValueError, match="seed must be >= 0"):
        ShuffledBatches(50, 8, seed=-1)


@pytest.mark.parametrize("step", [0, 2, 6, 7, 13])
def test_an_iteration_under_a_trainer_continues_from_its_step(step: int) -> None:
    sampler = ShuffledBatches(50, 8, seed=0)  # 7 batches an epoch
    run = [batch for epoch in range(3) for batch in sampler.batches(epoch)]
    resumed = ShuffledBatches(50, 8, seed=0, position=lambda s: resume_position(trainer(step), s))
    epoch = step // 7
    assert list(resumed) == run[step : (epoch + 1) * 7]
    assert len(resumed) == 7


def test_the_position_counts_limited_epochs_and_accumulated_steps() -> None:
    sampler = RandomBatches(100, 4, batches_per_epoch=10, seed=0)
    # limit_train_batches=6: epochs of 6 batches; accumulate 4: 2 steps an epoch (4 + 2 batches).
    assert resume_position(trainer(0, 4, 6), sampler) == (0, 0)
    assert resume_position(trainer(1, 4, 6), sampler) == (0, 4)
    assert resume_position(trainer(2, 4, 6), sampler) == (1, 0)
    assert resume_position(trainer(5, 4, 6), sampler) == (2, 4)
    assert resume_position(trainer(7, 1, 0.5), sampler) == (1, 2)  # a float limit: half of 10


def test_epochs_of_different_lengths_are_walked_one_by_one() -> None:
    lengths = torch.randint(1, 40, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthBatchSampler(lengths, 4, max_tokens=60, shuffle=True, seed=1)  # pools of 200 items
    assert not sampler.fixed_length
    sizes = [len(sampler.batches(e)) for e in range(4)]
    cap = len(sampler)  # epoch 0's length: Lightning caps every epoch at what it read when the fit started
    runs = [min(size, cap) for size in sizes]
    assert len(set(sizes)) > 1, sizes  # the premise: the draw changes the number of batches
    step = runs[0] + runs[1] + 1
    assert resume_position(trainer(step), sampler) == (2, 1)


def test_under_ddp_ranks_share_one_plan() -> None:
    whole = ShuffledBatches(40, 4, seed=2).batches(1)
    shares = [ShuffledBatches(40, 4, seed=2, rank=r, world_size=3).batches(1) for r in range(3)]
    assert all(share == whole[r::3][:3] for r, share in enumerate(shares))
    assert len(RandomBatches(40, 4, 5, seed=0, rank=1, world_size=2).batches(0)) == 5  # per rank


class Noisy(Dataset):
    """Items drawn from the global generators, as torchvision's transforms and the waveform augmentations draw."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.rand(3) + index


def mix(items: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(items) * torch.rand(())  # a batch-level draw, as MixUp's


def test_item_and_batch_draws_are_the_same_in_workers_and_leave_the_global_generator_alone() -> None:
    torch.manual_seed(0)
    before = torch.get_rng_state()
    alone = list(batch_loader(Noisy(), ShuffledBatches(24, 5, seed=7), mix))
    assert torch.equal(torch.get_rng_state(), before)  # dropout's stream does not move
    workers = list(batch_loader(Noisy(), ShuffledBatches(24, 5, seed=7), mix, num_workers=2))
    assert all(torch.equal(a, b) for a, b in zip(alone, workers, strict=True))
    next_epoch = batch_loader(Noisy(), ShuffledBatches(24, 5, seed=7), mix).sampler.batches(1)
    assert list(next_epoch) != list(ShuffledBatches(24, 5, seed=7).batches(0))
    # The same item in another place draws anew: epoch 1's first batch is not epoch 0's reshuffled.
    sampler = ShuffledBatches(24, 5, seed=7)
    epoch_0, epoch_1 = list(batch_loader(Noisy(), sampler, mix)), list(batch_loader(Noisy(), sampler, mix))
    assert not torch.equal(torch.cat(epoch_0).sort().values, torch.cat(epoch_1).sort().values)


def test_text_classification_shuffles_freely_unless_asked_for_length_buckets(tmp_path) -> None:
    from anyformer.text.classification_data import TextClassificationDataModule

    rows = "".join(f"{'word ' * (i % 4 + 1)}\t{i % 2}\n" for i in range(40))
    for name in ("train", "val"):
        (tmp_path / f"{name}.tsv").write_text("sentence\tlabel\n" + rows)
    paths = {"train_path": str(tmp_path / "train.tsv"), "val_path": str(tmp_path / "val.tsv")}
    plain = TextClassificationDataModule(source="files", **paths, vocab_size=300, batch_size=8)
    bucketed = TextClassificationDataModule(source="files", **paths, vocab_size=300, batch_size=8, length_buckets=True)
    assert type(plain.train_dataloader().sampler) is ShuffledBatches
    assert type(bucketed.train_dataloader().sampler) is LengthBatchSampler
