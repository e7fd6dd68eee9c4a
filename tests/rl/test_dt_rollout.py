import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from anyformer.core.cli.main import main as anyformer
from anyformer.core.config import TransformerConfig
from anyformer.core.train.base import FORMAT_VERSION
from anyformer.core.train.checkpoint import load_task
from anyformer.core.train.run_record import read_record
from anyformer.rl.collect import collect
from anyformer.rl.dt import DTConfig
from anyformer.rl.dt_task import DTModule
from anyformer.rl.rollout import PALETTE, EpisodeHistory, frame_strip, main, render_frame, return_metrics, rollout
from anyformer.rl.trajectories import save_trajectories

EXPERIMENTS = Path("experiments/rl")


class CountingEnv(gym.Env):
    """Observation [t, t, t]; step t pays reward ``rewards[t]``; ends after ``len(rewards)`` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, rewards):
        self.rewards, self.t = rewards, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.full(3, self.t, np.float32), {}

    def step(self, action):
        reward = self.rewards[self.t]
        self.t += 1
        return np.full(3, self.t, np.float32), reward, self.t == len(self.rewards), False, {}


class SpyModel(nn.Module):
    """Records what a rollout feeds the policy and always prefers action 1."""

    def __init__(self, cfg: DTConfig) -> None:
        super().__init__()
        self.cfg, self.calls = cfg, []

    def forward(self, returns_to_go, states, actions, timesteps, *, keep=None):
        self.calls.append({"returns_to_go": returns_to_go, "states": states, "actions": actions, "keep": keep})
        logits = torch.zeros(*timesteps.shape, self.cfg.n_actions)
        logits[..., 1] = 100.0
        return logits


def test_rollout_return_to_go_drops_by_each_reward_and_keeps_the_last_k_steps():
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    cfg = DTConfig(obs_shape=(3,), n_actions=2, context_len=3, max_timestep=4, rtg_scale=2.0)
    spy = SpyModel(cfg)
    histories = rollout(spy, [CountingEnv(rewards)], target_return=30.0, seeds=[0])
    assert len(spy.calls) == len(rewards) and histories[0].episode_return == sum(rewards)
    wanted = 30.0 - np.concatenate([[0.0], np.cumsum(rewards)])  # before step t: 30 - r_0 - ... - r_{t-1}
    for t, call in enumerate(spy.calls):
        first = max(0, t - 2)
        real = call["keep"][0].numpy()
        assert real.sum() == t + 1 - first
        np.testing.assert_allclose(call["returns_to_go"][0][real].numpy(), wanted[first : t + 1] / 2.0)
        np.testing.assert_array_equal(call["states"][0][real][:, 0].numpy(), np.arange(first, t + 1))
        # Past actions are the ones taken (1), the current one a placeholder (0).
        np.testing.assert_array_equal(call["actions"][0][real].numpy(), [1] * (t - first) + [0])
    np.testing.assert_array_equal(histories[0].actions, [1] * len(rewards))


def test_history_window_clamps_timesteps_and_pads_on_the_left():
    history = EpisodeHistory(np.zeros(2), target_return=10.0)
    for t in range(5):
        history.record(1, 1.0, np.full(2, t + 1.0), done=False)
    window = history.window(context_len=4, max_timestep=4, action_placeholder=np.zeros((), np.int64))
    np.testing.assert_array_equal(window["timesteps"], [2, 3, 3, 3])  # steps 2..5, clamped to 3
    np.testing.assert_array_equal(window["returns_to_go"], [8, 7, 6, 5])
    short = EpisodeHistory(np.ones(2), target_return=3.0).window(4, 10, np.zeros((), np.int64))
    np.testing.assert_array_equal(short["keep"], [False, False, False, True])
    np.testing.assert_array_equal(short["states"][:, 0], [0, 0, 0, 1])


def test_rollout_max_steps_and_seeded_sampling_are_reproducible():
    cfg = DTConfig(
        obs_shape=(4,), n_actions=2, context_len=4, max_timestep=500,
        transformer=TransformerConfig(dim=16, n_layers=1, n_heads=2, position="none"),
    )  # fmt: skip
    torch.manual_seed(0)
    model = DTModule(cfg).model.eval()

    def play():
        envs = [gym.make("CartPole-v1") for _ in range(3)]
        gen = torch.Generator().manual_seed(5)
        return rollout(model, envs, 100.0, seeds=[0, 1, 2], max_steps=7, generator=gen)

    first, second = play(), play()
    assert all(len(h) <= 7 for h in first)
    assert [h.actions for h in first] == [h.actions for h in second]


@pytest.fixture(scope="module")
def cartpole_checkpoint(tmp_path_factory) -> Path:
    """An untrained CartPole checkpoint in the format `anyformer dt fit` writes."""
    cfg = DTConfig(
        obs_shape=(4,), n_actions=2, context_len=4, max_timestep=500,
        transformer=TransformerConfig(dim=16, n_layers=1, n_heads=2, position="none"),
    )  # fmt: skip
    module = DTModule(cfg)
    module.env_id = "CartPole-v1"
    module.dataset_returns = {"episodes": 2, "mean": 20.0, "std": 1.0, "min": 19.0, "max": 21.0}
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["anyformer"]["format_version"] == FORMAT_VERSION
    path = tmp_path_factory.mktemp("ckpt") / "dt.ckpt"
    torch.save(checkpoint, path)
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_observation_shape_mismatch_is_one_clear_line_and_exit_2(cartpole_checkpoint, capsys):
    pytest.importorskip("minatar")
    argv = ["--ckpt", cartpole_checkpoint, "--env", "MinAtar/Breakout-v1", "--target-return", "10", "--episodes", "1"]
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == ""
    line = err.strip().splitlines()[-1]
    assert line.startswith("anyformer rollout: error:")
    assert "'MinAtar/Breakout-v1' gives observations of shape (4, 10, 10)" in line and "trained on (4,)" in line


def test_unknown_env_and_bad_arguments_exit_2(cartpole_checkpoint, capsys, tmp_path):
    code, _, err = run_cli(["--ckpt", cartpole_checkpoint, "--env", "Nope-v9", "--target-return", "1"], capsys)
    assert code == 2 and "unknown environment id 'Nope-v9'" in err.strip().splitlines()[-1]
    code, _, err = run_cli(["--ckpt", tmp_path / "missing.ckpt", "--target-return", "1"], capsys)
    assert code == 2 and "missing.ckpt does not exist" in err
    code, _, err = run_cli(["--ckpt", cartpole_checkpoint, "--targets", "10,abc"], capsys)
    assert code == 2 and "comma-separated numbers" in err
    code, _, err = run_cli(["--ckpt", cartpole_checkpoint, "--target-return", "1", "--targets", "1,2"], capsys)
    assert code == 2 and "not allowed with" in err


def test_targets_table_and_frame_strip(cartpole_checkpoint, capsys, tmp_path):
    frames = tmp_path / "figs" / "f.png"  # in a folder that does not exist yet
    argv = ["--ckpt", cartpole_checkpoint, "--targets", "10,50", "--episodes", "2", "--frames", frames]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    rows = [line.split() for line in out.splitlines() if re.match(r"\s+\d", line)]
    assert [row[0] for row in rows] == ["10", "50"]
    assert all(float(row[3]) <= float(row[1]) <= float(row[4]) for row in rows)  # min <= mean <= max
    assert "dataset: 2 episodes, return mean 20.0" in out
    strip = Image.open(frames)
    assert strip.mode == "RGB" and strip.height == 80 and strip.width >= 120


def test_run_name_records_the_mean_and_std_return_of_each_target(cartpole_checkpoint, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--ckpt", str(cartpole_checkpoint), "--targets", "10,50", "--episodes", "3", "--seed", "2",
            "--max-steps", "30", "--run-name", "dt_returns"]  # fmt: skip
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "recorded in runs/dt_returns/run.json" in out
    record = read_record(tmp_path / "runs" / "dt_returns")
    assert record["status"] == "finished" and record["argv"] == ["anyformer", "rollout", *argv]

    # The same episodes played directly: seeds 2, 3, 4 and a sampler seeded by 2 for each target.
    module = load_task(cartpole_checkpoint)
    expected = {}
    for target in (10, 50):
        envs = [gym.make("CartPole-v1") for _ in range(3)]
        generator = torch.Generator().manual_seed(2)
        returns = [h.episode_return for h in rollout(module.model, envs, target, [2, 3, 4], 30, generator=generator)]
        expected |= {f"return_mean_target_{target}": np.mean(returns), f"return_std_target_{target}": np.std(returns)}
    assert record["metrics"] == pytest.approx(expected)
    by_target = return_metrics([0.5], [np.array([1.0, 3.0])])
    assert by_target == {"return_mean_target_0.5": 2.0, "return_std_target_0.5": 1.0}  # population std

    code, _, err = run_cli([*argv[:-2], "--run-name", "a/b"], capsys)
    assert code == 2 and "--run-name 'a/b' must be a plain folder name" in err


def test_collect_fit_rollout_end_to_end(tmp_path, monkeypatch, capsys):
    """`anyformer collect`, `anyformer dt fit` (a few steps) and `anyformer rollout` chained."""
    config = (EXPERIMENTS / "dt_cartpole.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "cartpole.npz"
    collect_argv = ["collect", "--env", "CartPole-v1", "--policy", "mixed", "--episodes", "6", "--out", str(data)]
    assert anyformer(collect_argv) == 0
    fit = [
        "dt", "fit", "--config", str(config), f"--data.path={data}", "--trainer.max_steps=3",
        "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
        "--data.batch_size=4", "--data.train_batches_per_epoch=3",
    ]  # fmt: skip
    assert anyformer(fit) == 0
    ckpt = tmp_path / "runs" / "dt_cartpole" / "checkpoints" / "last.ckpt"
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["anyformer"]
    assert meta["task"] == "dt" and meta["inference"]["env_id"] == "CartPole-v1"
    assert meta["config"]["max_timestep"] == 500 and meta["config"]["rtg_scale"] == 100.0  # linked from the data
    capsys.readouterr()
    assert anyformer(["rollout", "--ckpt", str(ckpt), "--target-return", "500", "--episodes", "2"]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    stats = r"return mean [\d.]+ std [\d.]+ \(min \d+, max \d+\)"
    assert re.fullmatch(rf"CartPole-v1, target 500: {stats} over 2 episodes", line)


@pytest.mark.parametrize("name", ["bc_cartpole", "dt_breakout", "bc_breakout"])
def test_experiment_configs_run_one_batch(name, tmp_path, monkeypatch):
    config = (EXPERIMENTS / f"{name}.yaml").resolve()
    settings = yaml.safe_load(config.read_text())
    assert settings["model"]["config"]["transformer"]["position"] == "none"
    assert settings["model"]["config"]["behavior_cloning"] == name.startswith("bc_")
    if "breakout" in name:
        pytest.importorskip("minatar")
        data = collect("MinAtar/Breakout-v1", "mixed", episodes=3, seed=0, max_steps=20)
    else:
        data = collect("CartPole-v1", "mixed", episodes=3, seed=0, max_steps=20)
    path = save_trajectories(tmp_path / "data.npz", data)
    monkeypatch.chdir(tmp_path)
    argv = ["dt", "fit", "--config", str(config), f"--data.path={path}", "--trainer.fast_dev_run=true"]
    assert anyformer([*argv, "--data.batch_size=4", "--trainer.enable_progress_bar=false"]) == 0


def test_every_rl_config_is_tested():
    assert {p.stem for p in EXPERIMENTS.glob("*.yaml")} == {"dt_cartpole", "bc_cartpole", "dt_breakout", "bc_breakout"}


def test_frame_channels_are_painted_in_their_colours():
    frame = np.zeros((4, 10, 10), np.float32)
    frame[1, 2, 3] = 1.0  # ball
    frame[3, 0, :] = 1.0  # bricks
    image = render_frame(frame, scale=2)
    assert image.shape == (20, 20, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[4:6, 6:8].reshape(-1, 3), [PALETTE[1]] * 4)
    np.testing.assert_array_equal(image[0, :], [PALETTE[3]] * 20)
    assert not image[10:].any()
    strip = frame_strip([frame] * 20, "MinAtar/Breakout-v1", max_frames=4)
    assert strip.shape == (80, 4 * 80 + 3 * 2, 3)
    assert frame_strip(np.zeros((3, 2)), "Pendulum-v1") is None
