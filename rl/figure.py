"""The trajectory side of ``anyformer attention``: every head's attention in one layer of a
Decision Transformer over the interleaved tokens R1 s1 a1 R2 s2 a2 ... of one K-step window.

The window is the start of the first episode of a trajectories ``.npz`` (INPUT, written by
``anyformer collect``), or, without INPUT, a greedy rollout of K steps in the checkpoint's
environment conditioned on the best return of its dataset (``anyformer.rl.rollout``). An episode shorter
than K steps is left-padded as in training; padding tokens are labelled ``pad`` and never attended.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import LayerAttention, figure_title, head_grid, layer_index
from anyformer.core.cli.errors import UsageError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from anyformer.core.train.base import TaskModule

Window = dict[str, Tensor]
"""One window as a batch of one: ``returns_to_go`` (1, K) divided by ``rtg_scale``, ``states``
(1, K, *obs_shape), ``actions`` (1, K) long or (1, K, action_dim), ``timesteps`` (1, K) long and
``keep`` (1, K) bool (False at left padding)."""

ROLLOUT_SEED = 0


def _window(module: TaskModule, returns_to_go: Sequence[float], states: Any, actions: Any, timesteps: Any) -> Window:
    """Left-pad n <= K steps (unscaled returns-to-go) into a window like the training ones."""
    cfg = module.config
    n, k = len(returns_to_go), cfg.context_len
    action_dtype = np.int64 if cfg.action_kind == "discrete" else np.float32

    def padded(values: Any, dtype: Any) -> Tensor:
        values = np.asarray(values, dtype=dtype)
        out = np.zeros((k, *values.shape[1:]), dtype=dtype)
        out[k - n :] = values
        return torch.from_numpy(out)[None]  # (1, K, ...)

    return {
        "returns_to_go": padded(np.asarray(returns_to_go, dtype=np.float32) / np.float32(cfg.rtg_scale), np.float32),
        "states": padded(states, np.float32),
        "actions": padded(actions, action_dtype),
        "timesteps": padded(np.minimum(timesteps, cfg.max_timestep - 1), np.int64),
        "keep": (torch.arange(k) >= k - n)[None],
    }


def file_window(module: TaskModule, path: str | Path) -> tuple[Window, str]:
    """The first K steps (fewer if shorter) of the first episode of a trajectories file.

    Raises:
        UsageError: a missing or unreadable file, or observations/actions that do not fit the checkpoint.
    """
    from anyformer.rl.trajectories import load_trajectories

    cfg = module.config
    try:
        data = load_trajectories(path)  # TrajectoryFormatError is a UsageError
    except FileNotFoundError as err:
        raise UsageError(f"{err}; INPUT must be a trajectories .npz written by `anyformer collect`") from None
    if tuple(data.observations.shape[1:]) != tuple(cfg.obs_shape):
        raise UsageError(
            f"{path}: observations of shape {tuple(data.observations.shape[1:])}, but the checkpoint was "
            f"trained on {tuple(cfg.obs_shape)}"
        )
    expected_actions = () if cfg.action_kind == "discrete" else (cfg.action_dim,)
    if tuple(data.actions.shape[1:]) != expected_actions:
        shape = tuple(data.actions.shape[1:])
        raise UsageError(f"{path}: actions of shape {shape}, but the checkpoint expects {expected_actions}")
    episode = next(iter(data))
    n = min(cfg.context_len, len(episode))
    actions = episode.actions[:n]
    if cfg.action_kind == "discrete" and not 0 <= actions.min() <= actions.max() < cfg.n_actions:
        raise UsageError(f"{path}: actions outside the checkpoint's range [0, {cfg.n_actions})")
    window = _window(module, episode.returns_to_go()[:n], episode.observations[:n], actions, np.arange(n))
    return window, f"episode 0 of {Path(path).name}"


def rollout_window(module: TaskModule) -> tuple[Window, str]:
    """K steps of a greedy rollout in the checkpoint's environment (fewer if the episode ends first).

    The target return is the best return of the training data (``rtg_scale`` when not recorded).

    Raises:
        UsageError: the checkpoint names no environment, or it cannot be made or does not fit.
    """
    from anyformer.rl.envs import make_env
    from anyformer.rl.rollout import check_env, rollout

    cfg, env_id = module.config, module.env_id
    if env_id is None:
        raise UsageError("no INPUT given and the checkpoint names no environment; give a trajectories .npz")
    try:
        env = make_env(env_id)
        check_env(env, env_id, module.inference_state(), cfg)
    except (ValueError, ImportError) as err:
        raise UsageError(f"no INPUT given and the checkpoint's environment cannot be used: {err}") from None
    target = float(module.dataset_returns.get("max", cfg.rtg_scale))
    history = rollout(module.model, [env], target, [ROLLOUT_SEED], cfg.context_len, greedy=True)[0]
    env.close()
    n = len(history)  # steps taken; the state after the last step is not kept
    window = _window(module, history.returns_to_go[:n], history.states[:n], history.actions, np.arange(n))
    return window, f"a greedy rollout in {env_id} (seed {ROLLOUT_SEED}, target return {target:g})"


def step_labels(timesteps: Tensor, keep: Tensor, tokens_per_step: int) -> list[str]:
    """``R1 s1 a1 R2 ...`` (``s1 a1 s2 ...`` for behaviour cloning): the episode step, from 1; ``pad`` at padding."""
    kinds = ("R", "s", "a")[3 - tokens_per_step :]
    return [
        f"{kind}{int(step) + 1}" if real else "pad"
        for step, real in zip(timesteps.tolist(), keep.tolist())
        for kind in kinds
    ]


@torch.no_grad()
def dt_attention(module: TaskModule, window: Window, layer: int | None = None) -> LayerAttention:
    """Every head's causal attention in one layer over the n K tokens of a window.

    Args:
        module: a ``dt`` module.
        window: see :data:`Window`.
        layer: 1-based layer (None: the last).

    Returns:
        (H, n K, n K) probabilities (zero above the diagonal and at padding keys) and the token labels.
    """
    model = module.model
    index = layer_index(module.config.transformer.n_layers, layer)
    maps = AttentionMaps()
    model.eval()
    model.forward_features(  # the action head is not needed
        window["returns_to_go"], window["states"], window["actions"], window["timesteps"], keep=window["keep"],
        maps=maps,
    )  # fmt: skip
    labels = step_labels(window["timesteps"][0], window["keep"][0], module.config.tokens_per_step)
    return LayerAttention(maps.self_attn[index][0].float(), labels, index, len(maps.self_attn))


def dt_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``dt`` checkpoint; ``source`` is a trajectories ``.npz``."""
    layer_index(module.config.transformer.n_layers, layer)  # a bad --layer fails before the rollout
    window, description = rollout_window(module) if source is None else file_window(module, source)
    attention = dt_attention(module, window, layer)
    n_steps = int(window["keep"].sum())
    kinds = "s (state), a (action)" if module.config.behavior_cloning else "R (return-to-go), s (state), a (action)"
    what = f"causal attention of each head over the {kinds} tokens"
    title = figure_title(module.task_name, f"layer {attention.layer + 1} of {attention.n_layers}", what)
    return head_grid(attention, f"{title}\n{n_steps} steps of {description}", group=module.config.tokens_per_step)
