import dataclasses
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anyformer.rl.trajectories import (
    ARRAY_FIELDS,
    FORMAT_NAME,
    FORMAT_VERSION,
    Trajectories,
    TrajectoryFormatError,
    load_trajectories,
    returns_to_go,
    save_trajectories,
)


def naive_returns_to_go(rewards, gamma):
    return np.array([sum(gamma**k * r for k, r in enumerate(rewards[t:])) for t in range(len(rewards))])


def make_dataset() -> Trajectories:
    """Two episodes of 3 and 2 steps: the first terminated, the second cut by a time limit."""
    return Trajectories(
        observations=np.arange(5 * 2, dtype=np.float32).reshape(5, 2),
        actions=np.array([0, 1, 1, 0, 1]),
        rewards=np.array([1.0, 2.0, 3.0, 0.5, -1.0]),
        terminations=np.array([False, False, True, False, False]),
        truncations=np.array([False, False, False, False, True]),
        episode_starts=np.array([0, 3]),
        meta={"env_id": "Test-v0", "seed": 3},
    )


def test_returns_to_go_matches_hand_computed_values():
    np.testing.assert_array_equal(returns_to_go(np.array([1.0, 2.0, 3.0])), [6.0, 5.0, 3.0])
    # 1 + 0.5 * 2 + 0.25 * 3 = 2.75; 2 + 0.5 * 3 = 3.5
    np.testing.assert_array_equal(returns_to_go(np.array([1.0, 2.0, 3.0]), gamma=0.5), [2.75, 3.5, 3.0])
    assert returns_to_go(np.array([1.0, 2.0])).dtype == np.float32


@settings(max_examples=50, deadline=None)
@given(
    rewards=st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=40),
    gamma=st.sampled_from([0.0, 0.5, 0.99, 1.0]),
)
def test_returns_to_go_matches_a_naive_loop(rewards, gamma):
    expected = naive_returns_to_go(rewards, gamma)
    np.testing.assert_allclose(returns_to_go(np.array(rewards), gamma), expected, rtol=1e-5, atol=1e-4)


def test_returns_to_go_rejects_bad_input():
    with pytest.raises(ValueError, match="1-D"):
        returns_to_go(np.ones((2, 3)))
    with pytest.raises(ValueError, match="gamma"):
        returns_to_go(np.ones(3), gamma=1.5)


def test_episode_access_and_returns():
    data = make_dataset()
    assert len(data) == 2 and data.n_steps == 5
    np.testing.assert_array_equal(data.episode_lengths, [3, 2])
    np.testing.assert_array_equal(data.returns, [6.0, -0.5])
    first, last = data.episode(0), data.episode(-1)
    assert len(first) == 3 and first.terminated and not last.terminated
    np.testing.assert_array_equal(last.observations, [[6, 7], [8, 9]])
    np.testing.assert_array_equal(last.returns_to_go(), [-0.5, -1.0])
    assert [episode.episode_return for episode in data] == [6.0, -0.5]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"episode_starts": np.array([1, 3])}, "start at 0"),
        ({"episode_starts": np.array([0, 3, 3])}, "increase"),
        ({"rewards": np.zeros(4)}, "steps"),
        ({"terminations": np.array([False, True, True, False, False])}, "last step only"),
        ({"truncations": np.zeros(5, dtype=bool)}, "last step only"),
    ],
)
def test_inconsistent_arrays_are_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        Trajectories(**(dataclasses.asdict(make_dataset()) | change))


def test_save_load_round_trip(tmp_path):
    data = make_dataset()
    path = save_trajectories(tmp_path / "data.npz", data)
    loaded = load_trajectories(path)
    for name in ARRAY_FIELDS:
        original, restored = getattr(data, name), getattr(loaded, name)
        assert restored.dtype == original.dtype
        np.testing.assert_array_equal(restored, original)
    assert loaded.meta == data.meta
    np.testing.assert_array_equal(loaded.returns, data.returns)


def test_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    save_trajectories(path, make_dataset())
    good_bytes = path.read_bytes()

    def fail_half_way(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        save_trajectories(path, make_dataset())
    assert path.read_bytes() == good_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["data.npz"], "the temporary file must be removed"
    monkeypatch.undo()
    np.testing.assert_array_equal(load_trajectories(path).returns, [6.0, -0.5])


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_trajectories(tmp_path / "nope.npz")


def test_truncated_and_garbage_files_are_format_errors(tmp_path):
    good = save_trajectories(tmp_path / "good.npz", make_dataset()).read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good[: len(good) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not an archive at all")
    for path in (truncated, garbage):
        with pytest.raises(TrajectoryFormatError, match="corrupt or truncated"):
            load_trajectories(path)


def test_other_npz_and_npy_files_are_format_errors(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(TrajectoryFormatError, match=r"missing fields \['observations'"):
        load_trajectories(tmp_path / "other.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(TrajectoryFormatError, match="single array"):
        load_trajectories(tmp_path / "single.npy")


def test_unsupported_format_version_is_rejected(tmp_path):
    data = make_dataset()
    meta = data.meta | {"format": FORMAT_NAME, "format_version": FORMAT_VERSION + 1}
    np.savez(
        tmp_path / "future.npz",
        meta=np.array(json.dumps(meta)),
        **{name: getattr(data, name) for name in ARRAY_FIELDS},
    )
    with pytest.raises(TrajectoryFormatError, match=f"format version {FORMAT_VERSION + 1}"):
        load_trajectories(tmp_path / "future.npz")
