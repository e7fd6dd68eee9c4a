"""Decision-Transformer data: windows of K consecutive steps from a trajectories ``.npz`` file."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from anyformer.core.train.data_order import RandomBatches, batch_loader, placement
from anyformer.rl.trajectories import ARRAY_FIELDS, Trajectories, load_trajectories, returns_to_go

logger = logging.getLogger(__name__)


def concatenate(parts: list[Trajectories], names: list[str]) -> Trajectories:
    """One dataset from several files of the same environment (episodes in the given order).

    Raises:
        ValueError: If the files disagree on the environment, observation shape or action layout.
    """
    first = parts[0]
    for part, name in zip(parts[1:], names[1:], strict=True):
        env, first_env = part.meta.get("env_id"), first.meta.get("env_id")
        if env != first_env:
            raise ValueError(f"{name} is from {env!r} but {names[0]} from {first_env!r}; mix one environment only")
        obs_shape, action_shape = part.observations.shape[1:], part.actions.shape[1:]
        if obs_shape != first.observations.shape[1:] or action_shape != first.actions.shape[1:]:
            raise ValueError(
                f"{name} has observations {obs_shape} / actions {action_shape} but "
                f"{names[0]} has {first.observations.shape[1:]} / {first.actions.shape[1:]}"
            )
    if len(parts) == 1:
        return first
    offsets = np.cumsum([0] + [part.n_steps for part in parts[:-1]])
    return Trajectories(
        **{name: np.concatenate([getattr(part, name) for part in parts]) for name in ARRAY_FIELDS[:-1]},
        episode_starts=np.concatenate([part.episode_starts + offset for part, offset in zip(parts, offsets)]),
        meta=first.meta | {"sources": names},
    )


def return_stats(returns: np.ndarray) -> dict[str, float]:
    """Mean, std, min and max of episode returns (plain floats, for checkpoints and tables)."""
    returns = np.asarray(returns, dtype=np.float64)
    return {
        "episodes": len(returns),
        "mean": float(returns.mean()),
        "std": float(returns.std()),
        "min": float(returns.min()),
        "max": float(returns.max()),
    }


class TrajectoryWindows(Dataset[dict[str, Tensor]]):
    """Item i is the window of K steps ending at the i-th step of the selected episodes.

    A window that would start before its episode is left-padded (zeros) and ``keep`` is False
    there, so the last real step always sits at position K - 1, as it does during a rollout.

    Items: ``returns_to_go`` (K,) float32 divided by ``rtg_scale``, ``states`` (K, *obs_shape),
    ``actions`` (K,) long or (K, action_dim), ``timesteps`` (K,) long (step within the episode),
    ``keep`` (K,) bool.

    Args:
        trajectories: The dataset.
        episodes: Indices of the episodes to draw windows from.
        context_len: K.
        rtg_scale: Returns-to-go are divided by it.
    """

    def __init__(self, trajectories: Trajectories, episodes: np.ndarray, context_len: int, rtg_scale: float) -> None:
        self.data, self.context_len = trajectories, context_len
        starts, lengths = trajectories.episode_starts, trajectories.episode_lengths
        self.step_episode_start = np.repeat(starts, lengths)  # (N,) first step of each step's episode
        self.rtg = np.concatenate([returns_to_go(episode.rewards) for episode in trajectories]) / np.float32(rtg_scale)
        self.ends = np.concatenate([np.arange(starts[e], starts[e] + lengths[e]) for e in episodes])

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        end = int(self.ends[index]) + 1  # exclusive
        first = max(int(self.step_episode_start[end - 1]), end - self.context_len)
        pad = self.context_len - (end - first)

        def padded(values: np.ndarray) -> Tensor:
            out = np.zeros((self.context_len, *values.shape[1:]), dtype=values.dtype)
            out[pad:] = values
            return torch.from_numpy(out)

        steps = np.arange(first, end)
        return {
            "returns_to_go": padded(self.rtg[first:end].astype(np.float32)),
            "states": padded(self.data.observations[first:end]),
            "actions": padded(self.data.actions[first:end]),
            "timesteps": padded(steps - self.step_episode_start[steps]),
            "keep": torch.arange(self.context_len) >= pad,
        }


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"TrajectoryDataModule.{name} must be > 0, got {value!r}")


class TrajectoryDataModule(pl.LightningDataModule):
    """Windows of K steps from one trajectories file, split by episode into train and val.

    The file is read at construction, so the observation/action description, ``max_timestep``
    and the return statistics are attributes right away and the CLI can size the model from
    them (``obs_shape``, ``obs_kind``, ``action_kind``, ``n_actions``, ``action_dim``,
    ``context_len``, ``max_timestep``, ``rtg_scale``). Training draws random windows (every step
    of every training episode ends one window), epoch ``e``'s by a generator seeded with ``(seed, e)``
    (:class:`~anyformer.core.train.data_order.RandomBatches`), so a resumed fit draws what an
    uninterrupted one would; validation uses a fixed, evenly spaced set of windows of the held-out episodes.

    Args:
        path: ``.npz`` file written by ``anyformer collect``, or a list of such files of one
            environment (e.g. expert, noisy and random episodes collected separately), concatenated.
        context_len: K, steps per window.
        rtg_scale: Returns-to-go are divided by it (a typical return, so the input is ~1).
        batch_size: Windows per batch.
        val_fraction: Share of the episodes (at least one) held out for validation, chosen at random.
        train_batches_per_epoch: Random batches that make up one training epoch.
        val_batches: Batches in the fixed validation set (fewer if the val episodes are short).
        max_timestep: Size of the timestep embedding; None takes the longest episode (rollouts
            clamp later timesteps to the last one).
        num_workers: DataLoader worker processes.
        seed: Seed of the episode split and of the training windows.
    """

    def __init__(
        self,
        path: str | list[str] = "data/cartpole_mixed.npz",
        context_len: int = 20,
        rtg_scale: float = 1.0,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        train_batches_per_epoch: int = 500,
        val_batches: int = 20,
        max_timestep: int | None = None,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        for name, value in [
            ("context_len", context_len),
            ("rtg_scale", rtg_scale),
            ("batch_size", batch_size),
            ("train_batches_per_epoch", train_batches_per_epoch),
            ("val_batches", val_batches),
        ]:
            _check_positive(name, value)
        if not 0 < val_fraction < 1:
            raise ValueError(f"TrajectoryDataModule.val_fraction must be in (0, 1), got {val_fraction!r}")
        if num_workers < 0:
            raise ValueError(f"TrajectoryDataModule.num_workers must be >= 0, got {num_workers!r}")
        self.path, self.context_len, self.rtg_scale = path, context_len, float(rtg_scale)
        self.batch_size, self.val_fraction = batch_size, val_fraction
        self.train_batches_per_epoch, self.val_batches = train_batches_per_epoch, val_batches
        self.num_workers, self.seed = num_workers, seed

        names = [path] if isinstance(path, str) else [str(name) for name in path]
        if not names:
            raise ValueError("TrajectoryDataModule.path is an empty list; give at least one .npz file")
        parts = []
        for name in names:
            try:
                parts.append(load_trajectories(name))
            except FileNotFoundError as error:
                raise FileNotFoundError(
                    f"{error}; make one with `anyformer collect --env ENV --policy mixed --episodes N --out {name}`"
                ) from error
        self.trajectories = data = concatenate(parts, names)
        if len(data) < 2:
            raise ValueError(f"{path} holds {len(data)} episode; need at least 2 (train and val episodes)")
        self.obs_shape: tuple[int, ...] = tuple(data.observations.shape[1:])
        if len(self.obs_shape) not in (1, 3):
            raise ValueError(f"{path}: observations of shape {self.obs_shape}; need (obs_dim,) or (C, H, W)")
        self.obs_kind = "vector" if len(self.obs_shape) == 1 else "frame"
        env_meta: dict[str, Any] = data.meta.get("env", {})
        if data.actions.ndim == 1:
            self.action_kind, self.action_dim = "discrete", 0
            self.n_actions = int(env_meta.get("n_actions", data.actions.max() + 1))
            if data.actions.min() < 0 or data.actions.max() >= self.n_actions:
                raise ValueError(f"{path}: actions must be in [0, {self.n_actions}), got [{data.actions.min()}, ...]")
        else:
            self.action_kind, self.n_actions, self.action_dim = "continuous", 0, int(data.actions.shape[1])
        longest = int(data.episode_lengths.max())
        if max_timestep is not None and max_timestep < longest:
            raise ValueError(
                f"TrajectoryDataModule.max_timestep={max_timestep} is below the longest episode ({longest} steps)"
            )
        self.max_timestep = max_timestep or longest
        self.env_id: str | None = data.meta.get("env_id")
        self.return_stats = return_stats(data.returns)

        order = np.random.default_rng(seed).permutation(len(data))
        n_val = min(len(data) - 1, max(1, math.ceil(val_fraction * len(data))))
        self.val_episodes, self.train_episodes = np.sort(order[:n_val]), np.sort(order[n_val:])
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.train_set = TrajectoryWindows(self.trajectories, self.train_episodes, self.context_len, self.rtg_scale)
        val = TrajectoryWindows(self.trajectories, self.val_episodes, self.context_len, self.rtg_scale)
        count = min(len(val), self.val_batches * self.batch_size)
        self.val_set = Subset(val, np.linspace(0, len(val) - 1, count).round().astype(int).tolist())
        logger.info(
            "%s: %d train / %d val episodes, %d / %d windows of %d steps; returns %s",
            self.path, len(self.train_episodes), len(self.val_episodes), len(self.train_set), len(self.val_set),
            self.context_len, self.return_stats,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        self.setup()
        sampler = RandomBatches(
            len(self.train_set), self.batch_size, self.train_batches_per_epoch, seed=self.seed, **placement(self)
        )
        return batch_loader(self.train_set, sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        generator = torch.Generator().manual_seed(self.seed)  # the workers' base seed, not the global generator's
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers, generator=generator)
