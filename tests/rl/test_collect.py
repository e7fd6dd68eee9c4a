import numpy as np
import pytest

from anyformer.rl.collect import collect, main
from anyformer.rl.envs import MINATAR_MAX_EPISODE_STEPS, env_spec_summary, make_env
from anyformer.rl.experts import MIXTURE, PolicySpec, plan_episodes
from anyformer.rl.trajectories import ARRAY_FIELDS, load_trajectories
from tests.helpers import run_cli


def test_unknown_env_id_names_the_id_and_the_supported_families():
    with pytest.raises(ValueError, match=r"'Pong-v9'.*gymnasium registry ids.*MinAtar"):
        make_env("Pong-v9")


def test_cartpole_summary():
    summary = env_spec_summary(make_env("CartPole-v1", seed=0))
    assert summary == {"obs_shape": (4,), "obs_kind": "vector", "action_kind": "discrete", "n_actions": 2}


def test_make_env_seed_makes_later_resets_reproducible():
    first, second = make_env("CartPole-v1", seed=5), make_env("CartPole-v1", seed=5)
    np.testing.assert_array_equal(first.reset()[0], second.reset()[0])


def test_cartpole_expert_scores_at_least_475_on_every_seed():
    for seed in (0, 1, 2):
        assert collect("CartPole-v1", "expert", episodes=3, seed=seed).returns.min() >= 475


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    first, second = (collect("CartPole-v1", "mixed", episodes=6, seed=11) for _ in range(2))
    for name in ARRAY_FIELDS:
        assert getattr(first, name).tobytes() == getattr(second, name).tobytes(), name
    assert first.meta == second.meta
    other = collect("CartPole-v1", "mixed", episodes=6, seed=12)
    assert other.observations.shape != first.observations.shape or not np.array_equal(
        other.observations, first.observations
    )


def test_mixed_plan_has_exact_shares_in_shuffled_order():
    plan = plan_episodes("mixed", 50, np.random.default_rng(0))
    for spec, share in MIXTURE:
        assert plan.count(spec) == round(share * 50)
    assert plan[:15] != [PolicySpec("expert")] * 15
    assert plan_episodes("noisy", 2, np.random.default_rng(0), epsilon=0.3) == [PolicySpec("noisy", 0.3)] * 2
    with pytest.raises(ValueError, match="epsilon"):
        plan_episodes("noisy", 2, np.random.default_rng(0), epsilon=1.5)


def test_mixed_cartpole_data_spans_low_to_expert_returns_with_a_mean_of_at_most_250():
    # What the Decision Transformer acceptance trains on: mediocre on average, but a healthy
    # share of full-length expert episodes and intermediate noisy ones.
    returns = collect("CartPole-v1", "mixed", episodes=50, seed=0).returns
    assert returns.mean() <= 250
    assert 0.25 <= np.mean(returns == 500) <= 0.4
    assert np.mean(returns < 50) >= 0.25
    assert np.sum((returns > 100) & (returns < 475)) >= 5


def test_max_steps_truncates_episodes():
    data = collect("CartPole-v1", "expert", episodes=2, seed=0, max_steps=30)
    np.testing.assert_array_equal(data.episode_lengths, [30, 30])
    assert data.truncations.sum() == 2 and not data.terminations.any()


def test_expert_needs_a_registered_expert():
    with pytest.raises(ValueError, match=r"no expert policy for 'Acrobot-v1'"):
        collect("Acrobot-v1", "expert", episodes=1, seed=0)
    assert collect("Acrobot-v1", "random", episodes=1, seed=0, max_steps=5).n_steps == 5


def test_breakout_collection_has_channels_first_frames():
    pytest.importorskip("minatar")
    env = make_env("MinAtar/Breakout-v1")
    assert env_spec_summary(env) == {
        "obs_shape": (4, 10, 10),
        "obs_kind": "frame",
        "action_kind": "discrete",
        "n_actions": 3,
    }
    assert env.spec.max_episode_steps == MINATAR_MAX_EPISODE_STEPS
    data = collect("MinAtar/Breakout-v1", "mixed", episodes=4, seed=0, max_steps=200)
    assert data.observations.shape[1:] == (4, 10, 10) and data.observations.dtype == np.float32
    assert set(np.unique(data.observations)) <= {0.0, 1.0}
    # One paddle and one ball in every frame.
    np.testing.assert_array_equal(data.observations[:, :2].sum(axis=(2, 3)), 1)
    assert data.meta["env"]["obs_kind"] == "frame" and "minatar" in data.meta["versions"]


def test_breakout_expert_outlasts_random_play():
    pytest.importorskip("minatar")
    expert = collect("MinAtar/Breakout-v1", "expert", episodes=3, seed=0, max_steps=200)
    random = collect("MinAtar/Breakout-v1", "random", episodes=3, seed=0, max_steps=200)
    assert expert.returns.mean() >= 5 > random.returns.mean()


def test_unknown_minatar_game_lists_the_known_ones():
    pytest.importorskip("minatar")
    with pytest.raises(ValueError, match=r"'MinAtar/Pong-v1'.*MinAtar/Breakout-v1"):
        make_env("MinAtar/Pong-v1")


def test_cli_writes_a_loadable_file_and_prints_one_summary_line(tmp_path, capsys):
    out = tmp_path / "cartpole.npz"
    argv = ["--env", "CartPole-v1", "--policy", "expert", "--episodes", "2", "--out", str(out), "--seed", "4"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and "2 episodes, 1000 steps, return mean 500.0" in lines[0]
    data = load_trajectories(out)
    assert data.meta["seed"] == 4 and data.meta["policy"] == "expert"


def test_cli_creates_the_missing_folders_of_its_output(tmp_path, capsys):
    """The README's `anyformer collect ... --out data/cartpole_mixed.npz` in a fresh checkout (no data/)."""
    argv = ["collect", "--env", "CartPole-v1", "--policy", "random", "--episodes", "2", "--seed", "0"]
    run_cli(tmp_path, [*argv, "--out", "data/nested/cartpole_mixed.npz"])
    assert capsys.readouterr().out.startswith("data/nested/cartpole_mixed.npz: CartPole-v1 random, 2 episodes")
    assert len(load_trajectories(tmp_path / "data" / "nested" / "cartpole_mixed.npz")) == 2
    assert [path.name for path in (tmp_path / "data" / "nested").iterdir()] == ["cartpole_mixed.npz"]


def test_cli_output_under_a_file_exits_with_status_1(tmp_path, capsys):
    (tmp_path / "data").write_text("a file where the folder should be")
    argv = ["collect", "--env", "CartPole-v1", "--policy", "random", "--episodes", "1", "--out", "data/x.npz"]
    run_cli(tmp_path, argv, expect=1)
    assert capsys.readouterr().err.startswith("anyformer collect: error: cannot write data/x.npz: ")
    assert (tmp_path / "data").read_text() == "a file where the folder should be"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--env", "CartPole-v1", "--policy", "expert", "--episodes", "2"], "--out"),
        (["--env", "CartPole-v1", "--policy", "greedy", "--episodes", "2", "--out", "x.npz"], "greedy"),
        (["--env", "CartPole-v1", "--policy", "expert", "--episodes", "0", "--out", "x.npz"], "positive"),
        (["--env", "Nope-v0", "--policy", "random", "--episodes", "1", "--out", "x.npz"], "'Nope-v0'"),
    ],
)
def test_cli_usage_errors_exit_with_status_2(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    error_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert error_line.startswith("anyformer collect: error:") and message in error_line
    assert not (tmp_path / "x.npz").exists()


def test_cli_write_failure_exits_with_status_1(tmp_path, monkeypatch, capsys):
    def disk_full(path, trajectories):
        raise OSError("disk full")

    monkeypatch.setattr("anyformer.rl.collect.save_trajectories", disk_full)
    argv = ["--env", "CartPole-v1", "--policy", "random", "--episodes", "1", "--out", str(tmp_path / "x.npz")]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == f"anyformer collect: error: cannot write {tmp_path / 'x.npz'}: disk full"


def test_medium_policies_score_between_random_and_expert_and_disagree_with_the_expert():
    # What makes them "medium" (see anyformer.rl.experts): returns well above random but far below the
    # expert's, from actions that differ from the expert's systematically, not at random.
    from anyformer.rl.experts import breakout_expert, breakout_medium

    cartpole = collect("CartPole-v1", "medium", episodes=5, seed=0).returns
    assert 100 < cartpole.mean() < 300
    # Medium returns are long-tailed (0 to ~50, median ~5): 40 episodes pin the mean near 8.
    breakout = collect("MinAtar/Breakout-v1", "medium", episodes=40, seed=0)
    expert = collect("MinAtar/Breakout-v1", "expert", episodes=2, seed=0)
    random = collect("MinAtar/Breakout-v1", "random", episodes=20, seed=0)
    assert random.returns.mean() + 2 < breakout.returns.mean() < expert.returns.mean() / 2
    agreement = np.mean([breakout_medium(frame) == breakout_expert(frame) for frame in expert.observations])
    assert agreement < 0.5


def test_medium_policy_of_an_env_without_one_is_a_clear_error():
    from anyformer.rl.experts import MEDIUMS, PolicySpec, build_policy

    with pytest.raises(ValueError, match=r"no medium policy for 'Acrobot-v1'.*medium policies exist"):
        build_policy(PolicySpec("medium"), "Acrobot-v1", make_env("Acrobot-v1").action_space)
    assert "MinAtar/Breakout-v1" in MEDIUMS
