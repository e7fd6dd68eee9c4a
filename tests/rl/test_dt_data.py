import numpy as np
import pytest
import torch

from anyformer.rl.data import TrajectoryDataModule, TrajectoryWindows
from anyformer.rl.trajectories import Trajectories, returns_to_go, save_trajectories


def make_dataset(lengths=(6, 3, 8, 5), obs_shape=(2,), env_id="Test-v0", seed=0) -> Trajectories:
    """Episodes whose observation i is [i, i + 0.5, ...], so windows can be checked by index."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    ends = np.cumsum(lengths) - 1
    observations = np.arange(n, dtype=np.float32).reshape(n, *[1] * len(obs_shape)) + np.zeros(obs_shape)
    return Trajectories(
        observations=observations,
        actions=rng.integers(3, size=n),
        rewards=rng.integers(0, 4, n).astype(np.float32),
        terminations=np.isin(np.arange(n), ends),
        truncations=np.zeros(n, bool),
        episode_starts=np.concatenate([[0], ends[:-1] + 1]),
        meta={"env_id": env_id, "env": {"n_actions": 3}},
    )


def test_windows_end_at_every_step_and_are_left_padded_within_their_episode():
    data = make_dataset()
    windows = TrajectoryWindows(data, np.array([0, 2]), context_len=4, rtg_scale=2.0)
    assert len(windows) == 6 + 8
    # Step 1 of episode 0: two padding steps, then steps 0 and 1.
    item = windows[1]
    np.testing.assert_array_equal(item["keep"], [False, False, True, True])
    np.testing.assert_array_equal(item["states"][:, 0], [0, 0, 0, 1])
    np.testing.assert_array_equal(item["timesteps"], [0, 0, 0, 1])
    np.testing.assert_array_equal(item["actions"][2:], data.actions[0:2])
    rtg = returns_to_go(data.episode(0).rewards) / 2.0
    np.testing.assert_allclose(item["returns_to_go"], [0, 0, *rtg[:2]])
    # The first window of episode 2 (global steps 9..16) never reaches back into episode 1.
    item = windows[6]
    np.testing.assert_array_equal(item["keep"], [False, False, False, True])
    np.testing.assert_array_equal(item["states"][:, 0], [0, 0, 0, 9])
    # A full window in the middle of episode 2: steps 3..6 of the episode.
    item = windows[6 + 6]
    assert item["keep"].all()
    np.testing.assert_array_equal(item["states"][:, 0], [12, 13, 14, 15])
    np.testing.assert_array_equal(item["timesteps"], [3, 4, 5, 6])
    np.testing.assert_allclose(item["returns_to_go"], returns_to_go(data.episode(2).rewards)[3:7] / 2.0)
    assert item["actions"].dtype == torch.int64 and item["timesteps"].dtype == torch.int64


def test_data_module_exposes_the_spec_and_splits_by_episode(tmp_path):
    path = save_trajectories(tmp_path / "d.npz", make_dataset(lengths=(6, 3, 8, 5, 4, 7, 2, 9, 3, 5)))
    data = TrajectoryDataModule(str(path), context_len=4, rtg_scale=5, batch_size=8, val_fraction=0.2)
    assert (data.obs_shape, data.obs_kind, data.action_kind, data.n_actions, data.action_dim) == (
        (2,),
        "vector",
        "discrete",
        3,
        0,
    )
    assert data.max_timestep == 9 and data.env_id == "Test-v0"
    assert data.return_stats["episodes"] == 10
    assert len(data.val_episodes) == 2 and len(data.train_episodes) == 8
    assert set(data.val_episodes) | set(data.train_episodes) == set(range(10))
    batch = next(iter(data.train_dataloader()))
    assert batch["states"].shape == (8, 4, 2) and batch["keep"].dtype == torch.bool
    val_states = torch.cat([b["states"][b["keep"]][:, 0] for b in data.val_dataloader()])
    starts, lengths = data.trajectories.episode_starts, data.trajectories.episode_lengths
    val_steps = {s for e in data.val_episodes for s in range(starts[e], starts[e] + lengths[e])}
    assert set(val_states.long().tolist()) <= val_steps


def test_several_files_are_concatenated(tmp_path):
    first = save_trajectories(tmp_path / "a.npz", make_dataset(lengths=(3, 4)))
    second = save_trajectories(tmp_path / "b.npz", make_dataset(lengths=(5, 2, 6), seed=1))
    data = TrajectoryDataModule([str(first), str(second)], context_len=3)
    np.testing.assert_array_equal(data.trajectories.episode_lengths, [3, 4, 5, 2, 6])
    assert data.max_timestep == 6 and data.return_stats["episodes"] == 5
    other = save_trajectories(tmp_path / "c.npz", make_dataset(lengths=(3, 4), env_id="Other-v0"))
    with pytest.raises(ValueError, match=r"c\.npz is from 'Other-v0'"):
        TrajectoryDataModule([str(first), str(other)])
    frames = save_trajectories(tmp_path / "f.npz", make_dataset(lengths=(3, 4), obs_shape=(1, 2, 2)))
    with pytest.raises(ValueError, match=r"f\.npz has observations \(1, 2, 2\)"):
        TrajectoryDataModule([str(first), str(frames)])


def test_bad_inputs_name_the_file_or_field(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz.*anyformer collect"):
        TrajectoryDataModule(str(tmp_path / "nope.npz"))
    single = save_trajectories(tmp_path / "one.npz", make_dataset(lengths=(4,)))
    with pytest.raises(ValueError, match="at least 2"):
        TrajectoryDataModule(str(single))
    path = save_trajectories(tmp_path / "d.npz", make_dataset())
    with pytest.raises(ValueError, match=r"max_timestep=5 is below the longest episode \(8 steps\)"):
        TrajectoryDataModule(str(path), max_timestep=5)
    with pytest.raises(ValueError, match=r"TrajectoryDataModule\.context_len"):
        TrajectoryDataModule(str(path), context_len=0)
