"""``anyformer rollout``: play a Decision Transformer checkpoint in its environment.

    anyformer rollout --ckpt runs/dt_cartpole/checkpoints/last.ckpt --target-return 500 --episodes 20
    anyformer rollout --ckpt runs/dt_cartpole/checkpoints/last.ckpt --targets 100,200,300,500 --episodes 20

Each episode starts from the target return R; after every reward r the return-to-go becomes
R - r, so the model is always told how much return is still wanted. The last K steps are the
context. Episodes run side by side as one batch. Discrete actions are sampled from the
predicted distribution (as in the paper's Atari runs; ``--greedy`` takes the argmax instead):
the argmax of a noisy policy is its noise-free expert, so greedy play cannot reproduce the
mediocre behaviour that a low target asks for. Episode i is reset with seed ``--seed + i`` and
the sampler is seeded by ``--seed``, so runs are reproducible.

With ``--run-name NAME`` the returns are also recorded in ``runs/NAME/run.json``
(``anyformer.core.train.run_record.record_evaluation``) as ``return_mean_target_<T>`` and ``return_std_target_<T>``
per target T (written ``%g``: 100, 0.5), so a comparison can list the rollout in a table.

Exit codes: 0 on success, 2 for usage errors (bad checkpoint, unknown environment, an
environment whose observations or actions do not match the checkpoint).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from anyformer.core.cli.errors import ArgumentParser, positive_int, reports_usage_errors
from anyformer.core.train import run_record
from anyformer.core.train.atomic import atomic_open
from anyformer.core.train.checkpoint import CheckpointError, load_task
from anyformer.rl.envs import env_spec_summary, make_env

PROG = "anyformer rollout"


class EpisodeHistory:
    """Everything one running episode has shown the policy, with its return-to-go bookkeeping.

    ``returns_to_go[t]`` is the return still wanted before step t: the target minus the rewards
    of steps 0..t-1.
    """

    def __init__(self, observation: np.ndarray, target_return: float) -> None:
        self.states: list[np.ndarray] = [np.asarray(observation, dtype=np.float32)]
        self.returns_to_go: list[float] = [float(target_return)]
        self.actions: list[Any] = []
        self.rewards: list[float] = []
        self.done = False

    @property
    def episode_return(self) -> float:
        return float(sum(self.rewards))

    def __len__(self) -> int:
        """Steps taken."""
        return len(self.rewards)

    def record(self, action: Any, reward: float, next_observation: np.ndarray, done: bool) -> None:
        """Account for one step: its action and reward, and (unless it ended the episode) the next state."""
        self.actions.append(action)
        self.rewards.append(float(reward))
        self.done = done
        if not done:
            self.states.append(np.asarray(next_observation, dtype=np.float32))
            self.returns_to_go.append(self.returns_to_go[-1] - float(reward))

    def window(self, context_len: int, max_timestep: int, action_placeholder: np.ndarray) -> dict[str, np.ndarray]:
        """The last K steps up to the current one, left-padded like the training windows.

        The current step's action is still unknown: ``action_placeholder`` stands in for it
        (the prediction at its state token cannot see it). Timesteps past the embedding's range
        are clamped to its last entry. Returns unscaled returns-to-go.
        """
        now = len(self.states)
        first = max(0, now - context_len)
        pad = context_len - (now - first)
        actions = [*self.actions[first:], action_placeholder]

        def padded(values: Sequence, dtype) -> np.ndarray:
            values = np.asarray(values, dtype=dtype)
            out = np.zeros((context_len, *values.shape[1:]), dtype=dtype)
            out[pad:] = values
            return out

        return {
            "returns_to_go": padded(self.returns_to_go[first:], np.float32),
            "states": padded(self.states[first:], np.float32),
            "actions": padded(actions, action_placeholder.dtype),
            "timesteps": padded(np.minimum(np.arange(first, now), max_timestep - 1), np.int64),
            "keep": np.arange(context_len) >= pad,
        }


@torch.inference_mode()
def rollout(
    model: nn.Module,
    envs: Sequence[gym.Env],
    target_return: float,
    seeds: Sequence[int],
    max_steps: int | None = None,
    *,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> list[EpisodeHistory]:
    """Play one episode per environment, all conditioned on ``target_return``, as one batch.

    Args:
        model: a ``DecisionTransformer`` (anything with its ``cfg`` and ``forward``), in eval mode.
        envs: one environment per episode.
        target_return: the return asked for at the first step (unscaled).
        seeds: reset seed of each episode.
        max_steps: stop an episode after this many steps (None: the environment's own limit).
        greedy: take the most likely discrete action instead of sampling one.
        generator: random source of the action sampling.

    Returns:
        The histories of the finished episodes, in the order of ``envs``.
    """
    cfg = model.cfg
    discrete = cfg.action_kind == "discrete"
    placeholder = np.zeros((), np.int64) if discrete else np.zeros(cfg.action_dim, np.float32)
    histories = [
        EpisodeHistory(env.reset(seed=int(seed))[0], target_return) for env, seed in zip(envs, seeds, strict=True)
    ]
    while running := [i for i, history in enumerate(histories) if not history.done]:
        windows = [histories[i].window(cfg.context_len, cfg.max_timestep, placeholder) for i in running]
        batch = {key: torch.from_numpy(np.stack([w[key] for w in windows])) for key in windows[0]}  # (B, K, ...)
        predictions = model(
            batch["returns_to_go"] / cfg.rtg_scale, batch["states"], batch["actions"], batch["timesteps"],
            keep=batch["keep"],
        )[:, -1]  # fmt: skip
        if not discrete:
            chosen = predictions.float().numpy()
        elif greedy:
            chosen = predictions.argmax(-1).numpy()
        else:
            chosen = torch.multinomial(predictions.float().softmax(-1), 1, generator=generator)[:, 0].numpy()
        for i, action in zip(running, chosen, strict=True):
            env, history = envs[i], histories[i]
            if discrete:
                action = int(action)
            elif isinstance(env.action_space, gym.spaces.Box):
                action = np.clip(action, env.action_space.low, env.action_space.high)
            observation, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated or (max_steps is not None and len(history) + 1 >= max_steps)
            history.record(action, float(reward), observation, done)
    return histories


# -- pictures -------------------------------------------------------------------------------
PALETTE = np.array(
    [[66, 133, 244], [234, 67, 53], [251, 188, 5], [52, 168, 83], [171, 71, 188], [0, 172, 193], [255, 112, 67]],
    dtype=np.uint8,
)
"""Colours of frame channels (MinAtar Breakout: paddle, ball, trail, brick)."""


def render_frame(frame: np.ndarray, scale: int = 8) -> np.ndarray:
    """(C, H, W) binary channels -> (H*scale, W*scale, 3) uint8 RGB; a later channel paints over earlier ones."""
    channels, height, width = frame.shape
    image = np.zeros((height, width, 3), dtype=np.uint8)
    for channel in range(channels):
        image[frame[channel] > 0.5] = PALETTE[channel % len(PALETTE)]
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def render_cartpole(state: np.ndarray, width: int = 120, height: int = 80) -> np.ndarray:
    """CartPole ``[x, x_dot, theta, theta_dot]`` -> (height, width, 3) uint8 drawing of cart and pole."""
    from PIL import Image, ImageDraw

    x, _, theta, _ = (float(v) for v in state)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    track_y = height - 20
    draw.line([(0, track_y), (width, track_y)], fill=(0, 0, 0))
    cart_x = width / 2 + x / 2.4 * (width / 2 - 10)  # the episode ends at |x| = 2.4
    draw.rectangle([cart_x - 10, track_y - 8, cart_x + 10, track_y], fill=(40, 40, 40))
    pole = 45
    top = (cart_x + pole * np.sin(theta), track_y - 8 - pole * np.cos(theta))
    draw.line([(cart_x, track_y - 8), top], fill=tuple(int(c) for c in PALETTE[1]), width=4)
    return np.asarray(image)


def frame_strip(states: Sequence[np.ndarray], env_id: str, max_frames: int = 16) -> np.ndarray | None:
    """Up to ``max_frames`` evenly spaced observations side by side as one RGB image.

    Returns None for observations that cannot be drawn (vector environments other than CartPole).
    """
    states = np.asarray(states)
    if states.ndim == 4:
        draw = render_frame
    elif env_id.startswith("CartPole"):
        draw = render_cartpole
    else:
        return None
    picks = np.linspace(0, len(states) - 1, min(max_frames, len(states))).round().astype(int)
    images = [draw(states[i]) for i in picks]
    gap = np.full((images[0].shape[0], 2, 3), 255, dtype=np.uint8)
    return np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)


def save_png(path: Path, image: np.ndarray) -> None:
    """Write an RGB image atomically (``anyformer.core.train.atomic``)."""
    from PIL import Image

    with atomic_open(path) as file:
        Image.fromarray(image).save(file, format="PNG")


# -- command line ---------------------------------------------------------------------------
def _targets(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 100,200,500, got {text!r}") from error
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 100,200,500, got {text!r}")
    return values


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Play a Decision Transformer checkpoint conditioned on a target return."
    )
    parser.add_argument("--ckpt", required=True, help="checkpoint written by `anyformer dt fit`")
    parser.add_argument("--env", help="environment id (default: the one the training data came from)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-return", type=float, help="return to condition every episode on")
    target.add_argument(
        "--targets", type=_targets, help="comma-separated returns, e.g. 100,200,300,500: prints target vs achieved"
    )
    parser.add_argument("--episodes", type=positive_int, default=10, help="episodes per target (default 10)")
    parser.add_argument(
        "--seed", type=int, default=0, help="episode i is reset with seed + i; seeds the sampler too (default 0)"
    )
    parser.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="cap on steps per episode")
    parser.add_argument("--frames", type=Path, metavar="OUT.png", help="write a frame strip of the first episode")
    parser.add_argument("--run-name", help="also record the returns in runs/RUN_NAME/run.json")
    return parser


def check_env(env: gym.Env, env_id: str, inference: dict[str, Any], cfg) -> None:
    """Raise ValueError (one line) if the environment's spaces differ from the checkpoint's."""
    summary = env_spec_summary(env)
    if tuple(summary["obs_shape"]) != tuple(cfg.obs_shape):
        raise ValueError(
            f"environment {env_id!r} gives observations of shape {tuple(summary['obs_shape'])}, but the checkpoint "
            f"was trained on {tuple(cfg.obs_shape)} (from {inference.get('env_id')!r})"
        )
    if summary["action_kind"] != cfg.action_kind or summary.get("n_actions", 0) != cfg.n_actions:
        raise ValueError(
            f"environment {env_id!r} has {summary['action_kind']} actions ({summary.get('n_actions')}), but the "
            f"checkpoint predicts {cfg.action_kind} actions ({cfg.n_actions})"
        )


def return_metrics(targets: Sequence[float], results: Sequence[np.ndarray]) -> dict[str, float]:
    """``return_mean_target_<T>`` and ``return_std_target_<T>`` (population std) of each target's returns."""
    metrics = {}
    for target, returns in zip(targets, results, strict=True):
        metrics[f"return_mean_target_{target:g}"] = float(returns.mean())
        metrics[f"return_std_target_{target:g}"] = float(returns.std())
    return metrics


def _stats(returns: np.ndarray) -> str:
    return f"mean {returns.mean():.1f} std {returns.std():.1f} (min {returns.min():g}, max {returns.max():g})"


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    typed = ["anyformer", "rollout", *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed) if args.run_name is not None else None
    started = run_record.utc_now()
    try:
        module = load_task(args.ckpt, tasks=("dt",))
        env_id = args.env or module.env_id
        if env_id is None:
            raise ValueError(f"{args.ckpt} does not name its environment; pass --env")
        envs = [make_env(env_id) for _ in range(args.episodes)]
        check_env(envs[0], env_id, module.inference_state(), module.config)
    except (CheckpointError, ValueError) as error:
        parser.error(" ".join(str(error).split()))
    targets = args.targets or [args.target_return]
    seeds = [args.seed + i for i in range(args.episodes)]
    results = []
    for target in targets:
        generator = torch.Generator().manual_seed(args.seed)
        histories = rollout(module.model, envs, target, seeds, args.max_steps, greedy=args.greedy, generator=generator)
        results.append(np.array([history.episode_return for history in histories]))
        if args.frames is not None and target == targets[-1]:
            strip = frame_strip(histories[0].states, env_id)
            if strip is None:
                print(f"{PROG}: note: cannot draw {env_id} observations; no --frames written")
            else:
                save_png(args.frames, strip)
                print(f"frames of episode 0 (target {target:g}, {len(histories[0])} steps) -> {args.frames}")
    for env in envs:
        env.close()
    dataset = module.dataset_returns
    dataset_line = (
        f"dataset: {dataset['episodes']} episodes, return mean {dataset['mean']:.1f} std {dataset['std']:.1f} "
        f"(min {dataset['min']:g}, max {dataset['max']:g})"
        if dataset
        else "dataset: return statistics not recorded in the checkpoint"
    )
    if args.targets is None:
        print(f"{env_id}, target {targets[0]:g}: return {_stats(results[0])} over {args.episodes} episodes")
    else:
        print(f"{env_id}, {args.episodes} episodes per target")
        print(f"{'target':>8} {'mean':>8} {'std':>7} {'min':>7} {'max':>7}")
        for target, returns in zip(targets, results, strict=True):
            print(f"{target:>8g} {returns.mean():>8.1f} {returns.std():>7.1f} {returns.min():>7g} {returns.max():>7g}")
    print(dataset_line)
    if run_dir is not None:
        run_record.record_evaluation(run_dir, typed, return_metrics(targets, results), started, run_record.utc_now())
        print(f"recorded in {run_dir / run_record.RUN_FILE}")
    return 0
