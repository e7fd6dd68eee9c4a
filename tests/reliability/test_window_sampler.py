"""The training windows are a function of (seed, batch number): resumable, and split across DDP ranks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from anyformer.text.gpt.data import TextDataModule, WindowSampler

N_WINDOWS, BATCH, EPOCH = 1000, 4, 6


def batches(sampler: WindowSampler) -> list[list[int]]:
    """One iteration of ``sampler``, cut into batches."""
    starts = list(sampler)
    return [starts[i : i + sampler.batch_size] for i in range(0, len(starts), sampler.batch_size)]


def test_batch_g_is_drawn_by_a_generator_seeded_with_seed_and_g() -> None:
    sampler = WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=7)
    for g, batch in enumerate(batches(sampler)):
        assert batch == np.random.default_rng((7, g)).integers(0, N_WINDOWS, size=BATCH).tolist()
    assert len(sampler) == EPOCH * BATCH


def test_iterations_without_a_trainer_continue_into_the_next_epoch() -> None:
    sampler = WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=7)
    first, second = batches(sampler), batches(sampler)
    assert second == [sampler.batch_starts(g) for g in range(EPOCH, 2 * EPOCH)]
    assert first != second


@pytest.mark.parametrize("trained", [0, 4, EPOCH, EPOCH + 1])
def test_an_iteration_resumes_at_the_trained_batch_until_the_end_of_its_epoch(trained: int) -> None:
    uninterrupted = WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=3)
    run = batches(uninterrupted) + batches(uninterrupted)  # two whole epochs
    resumed = WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=3, position=lambda: trained)
    end_of_epoch = (trained // EPOCH + 1) * EPOCH
    assert batches(resumed) == run[trained:end_of_epoch]


def test_ranks_split_the_batch_of_one_process_with_the_total_batch_size() -> None:
    single = WindowSampler(N_WINDOWS, 2 * BATCH, EPOCH, seed=5)
    ranks = [WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=5, rank=r, world_size=2) for r in range(2)]
    rank_0, rank_1 = (batches(sampler) for sampler in ranks)
    assert [a + b for a, b in zip(rank_0, rank_1, strict=True)] == batches(single)
    assert all(a != b for a, b in zip(rank_0, rank_1, strict=True))  # each rank trains on other windows


def test_the_seed_changes_the_windows() -> None:
    seed_1, seed_2 = (batches(WindowSampler(N_WINDOWS, BATCH, EPOCH, seed=seed)) for seed in (1, 2))
    assert seed_1 != seed_2


def test_the_data_module_resumes_from_the_trainer_step_and_splits_by_rank(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 300)
    data = TextDataModule(str(corpus), tokenizer="char", context_len=8, batch_size=2, train_batches_per_epoch=5)
    data.trainer = SimpleNamespace(global_step=7, accumulate_grad_batches=1, global_rank=1, world_size=3)
    sampler = data.train_dataloader().sampler
    assert (sampler.rank, sampler.num_replicas) == (1, 3)
    assert batches(sampler) == [sampler.batch_starts(g) for g in (7, 8, 9)]  # the rest of epoch 1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_windows_divide_evenly_between_ranks(tmp_path, world_size: int) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcdefghij" * 300)
    data = TextDataModule(str(corpus), tokenizer="char", context_len=8, batch_size=2, val_batches=10**6)
    data.trainer = SimpleNamespace(world_size=world_size)
    all_windows = len(data.token_ids("val")) - data.context_len
    n_windows = len(data.val_dataloader().dataset)
    # Lightning's DistributedSampler would pad an uneven split with repeated windows.
    assert n_windows % world_size == 0
    assert all_windows - world_size < n_windows <= all_windows


def test_a_negative_seed_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match=r"TextDataModule.seed must be >= 0, got -1"):
        TextDataModule(seed=-1)
