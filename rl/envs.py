"""Environment construction for offline-RL data collection.

Two families of ids are supported:

- any id in gymnasium's registry, e.g. ``CartPole-v1``;
- MinAtar games as ``MinAtar/<Game>-v0`` (all 6 actions) or ``MinAtar/<Game>-v1`` (the game's
  minimal action set), e.g. ``MinAtar/Breakout-v1``. Their frames are returned channels-first as
  float32 (C x 10 x 10), the layout a convolutional or patch tokenizer expects.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

MINATAR_NAMESPACE = "MinAtar"
MINATAR_MAX_EPISODE_STEPS = 1000
"""MinAtar registers its games without a time limit and a good Breakout player never loses, so
episodes are capped here (1000 steps, as gymnax does for MinAtar)."""
SUPPORTED_FAMILIES = (
    "gymnasium registry ids (e.g. 'CartPole-v1')",
    "MinAtar games 'MinAtar/<Game>-v0|v1' (e.g. 'MinAtar/Breakout-v1')",
)


class ChannelsFirstFrame(gym.ObservationWrapper):
    """Turn MinAtar's (H, W, C) boolean frames into (C, H, W) float32 frames."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = spaces.Box(0.0, 1.0, (channels, height, width), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.float32)


def _register_minatar() -> None:
    """Register MinAtar's games with gymnasium on first use.

    MinAtar declares its registration as a gymnasium plugin entry point, which gymnasium 1.x no
    longer loads automatically. It is imported lazily because it pulls in matplotlib and seaborn
    (about 3 s of import time) that CartPole users should not pay for.
    """
    if gym.registry.get(f"{MINATAR_NAMESPACE}/Breakout-v1") is not None:
        return
    try:
        import minatar.gym
    except ImportError as error:
        raise ImportError("MinAtar environments need the 'minatar' package: pip install minatar") from error
    minatar.gym.register_envs()


def make_env(env_id: str, seed: int | None = None) -> gym.Env:
    """Create an environment by id.

    Args:
        env_id: A gymnasium id such as ``CartPole-v1`` or a MinAtar id such as
            ``MinAtar/Breakout-v1``.
        seed: If given, the environment is reset once with this seed and its action space seeded,
            so that later ``reset()`` calls without a seed are reproducible too.

    Returns:
        The environment; MinAtar games are wrapped to give channels-first float32 frames and are
        truncated after ``MINATAR_MAX_EPISODE_STEPS`` steps.

    Raises:
        ValueError: If ``env_id`` belongs to no supported family.
    """
    if env_id.startswith(f"{MINATAR_NAMESPACE}/"):
        _register_minatar()
        if env_id not in gym.registry:
            games = sorted(key for key in gym.registry if key.startswith(f"{MINATAR_NAMESPACE}/"))
            raise ValueError(f"unknown MinAtar environment {env_id!r}; known MinAtar ids: {games}")
        env = ChannelsFirstFrame(gym.make(env_id, max_episode_steps=MINATAR_MAX_EPISODE_STEPS))
    elif env_id in gym.registry:
        env = gym.make(env_id)
    else:
        raise ValueError(f"unknown environment id {env_id!r}; supported families: {'; '.join(SUPPORTED_FAMILIES)}")
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def env_spec_summary(env: gym.Env) -> dict[str, Any]:
    """Describe what an environment's observations and actions look like to a tokenizer.

    Args:
        env: An environment with a ``Box`` observation space and a ``Discrete`` or ``Box`` action
            space.

    Returns:
        ``obs_shape`` (tuple), ``obs_kind`` (``"vector"`` for 1-D observations, ``"frame"`` for
        C x H x W ones), ``action_kind`` (``"discrete"`` or ``"continuous"``) and either
        ``n_actions`` (discrete) or ``action_dim`` (continuous).

    Raises:
        ValueError: For observation or action spaces a tokenizer here cannot handle.
    """
    obs_space, action_space = env.observation_space, env.action_space
    if not isinstance(obs_space, spaces.Box) or len(obs_space.shape) not in (1, 3):
        raise ValueError(f"unsupported observation space {obs_space}: need a 1-D or C x H x W Box")
    summary: dict[str, Any] = {
        "obs_shape": tuple(obs_space.shape),
        "obs_kind": "vector" if len(obs_space.shape) == 1 else "frame",
    }
    if isinstance(action_space, spaces.Discrete):
        summary |= {"action_kind": "discrete", "n_actions": int(action_space.n)}
    elif isinstance(action_space, spaces.Box) and len(action_space.shape) == 1:
        summary |= {"action_kind": "continuous", "action_dim": int(action_space.shape[0])}
    else:
        raise ValueError(f"unsupported action space {action_space}: need Discrete or a 1-D Box")
    return summary
