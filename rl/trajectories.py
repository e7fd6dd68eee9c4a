"""Offline-RL datasets: episodes in memory and their on-disk format.

On disk a dataset is one ``.npz`` archive (``numpy.savez_compressed``: MinAtar frames are mostly
zeros) of concatenated episodes, with Minari's field names. N is the number of steps over all E
episodes; step i is (observation i, action i, reward i).

==================  ===============================  =============================================
key                 shape, dtype                     meaning
==================  ===============================  =============================================
``observations``    (N, *obs_shape) float32          what action i was chosen from
``actions``         (N,) int64 or (N, act_dim) f32   discrete or continuous action i
``rewards``         (N,) float32                     reward received for action i
``terminations``    (N,) bool                        the episode reached a terminal state at step i
``truncations``     (N,) bool                        the episode was cut (time limit) at step i
``episode_starts``  (E,) int64                       index of each episode's first step
``meta``            () str                           JSON object, see below
==================  ===============================  =============================================

Episode e covers steps ``episode_starts[e]`` to ``episode_starts[e + 1] - 1`` (the last one runs
to N - 1), so ``episode_starts`` starts at 0 and increases. The last step of every episode, and
no other, has ``terminations`` or ``truncations`` set (both if the last step was terminal and at
the time limit). Unlike Minari, the observation after an episode's last step is not stored: a
Decision Transformer never conditions on it.

``meta`` always holds ``format`` (``"anyformer-trajectories"``) and ``format_version``; datasets
from ``anyformer.rl.collect`` add ``env_id``, ``env`` (observation and action description), ``policy``,
``epsilon``, ``seed``, ``episodes``, ``max_steps``, ``episode_policies`` (one label per episode)
and ``versions`` (the Python and package versions that collected it).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.npyio import NpzFile

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.atomic import atomic_open

FORMAT_NAME = "anyformer-trajectories"
FORMAT_VERSION = 1
ARRAY_FIELDS = ("observations", "actions", "rewards", "terminations", "truncations", "episode_starts")


class TrajectoryFormatError(UsageError):
    """A file is not a readable trajectory dataset of a supported format version."""


def returns_to_go(rewards: np.ndarray, gamma: float = 1.0) -> np.ndarray:
    """Discounted sum of the rewards from each step to the end of one episode.

    ``rtg[t] = rewards[t] + gamma * rtg[t + 1]``, the quantity a Decision Transformer is
    conditioned on (with ``gamma = 1``).

    Args:
        rewards: (T,) rewards of a single episode.
        gamma: Discount factor in [0, 1].

    Returns:
        (T,) float32 returns-to-go, accumulated in float64.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be 1-D (one episode), got shape {rewards.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if gamma == 1.0:
        return np.cumsum(rewards[::-1])[::-1].astype(np.float32)
    rtg = np.empty_like(rewards)
    future = 0.0
    for t in range(len(rewards) - 1, -1, -1):
        future = rewards[t] + gamma * future
        rtg[t] = future
    return rtg.astype(np.float32)


@dataclass(frozen=True)
class Episode:
    """One episode: views into a dataset's arrays."""

    observations: np.ndarray
    """(T, *obs_shape)"""
    actions: np.ndarray
    """(T,) or (T, act_dim)"""
    rewards: np.ndarray
    """(T,)"""
    terminated: bool
    """The episode ended in a terminal state (rather than only by a time limit)."""

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of the rewards."""
        return float(self.rewards.sum(dtype=np.float64))

    def returns_to_go(self, gamma: float = 1.0) -> np.ndarray:
        """(T,) float32 returns-to-go, see :func:`returns_to_go`."""
        return returns_to_go(self.rewards, gamma)


@dataclass
class Trajectories:
    """A dataset of episodes stored as concatenated arrays (see the module docstring).

    Arrays are converted to the format's dtypes and checked for consistency on construction.

    Raises:
        ValueError: If lengths, episode boundaries or end-of-episode flags disagree.
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    episode_starts: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.observations = np.asarray(self.observations, dtype=np.float32)
        self.actions = np.asarray(self.actions)
        self.actions = self.actions.astype(np.int64 if self.actions.ndim == 1 else np.float32)
        self.rewards = np.asarray(self.rewards, dtype=np.float32)
        self.terminations = np.asarray(self.terminations, dtype=bool)
        self.truncations = np.asarray(self.truncations, dtype=bool)
        self.episode_starts = np.asarray(self.episode_starts, dtype=np.int64)
        self._check()

    def _check(self) -> None:
        if self.rewards.ndim != 1 or self.terminations.ndim != 1 or self.truncations.ndim != 1:
            raise ValueError("rewards, terminations and truncations must be 1-D (N,) arrays")
        if self.actions.ndim not in (1, 2) or self.observations.ndim < 2:
            raise ValueError(
                f"need actions (N,) or (N, act_dim) and observations (N, *obs_shape), got "
                f"{self.actions.shape} and {self.observations.shape}"
            )
        n_steps = len(self.rewards)
        for name in ("observations", "actions", "terminations", "truncations"):
            if len(getattr(self, name)) != n_steps:
                raise ValueError(f"{name} has {len(getattr(self, name))} steps, rewards has {n_steps}")
        starts = self.episode_starts
        if n_steps == 0 or starts.ndim != 1 or len(starts) == 0 or starts[0] != 0:
            raise ValueError("need at least one step, and episode_starts must be 1-D and start at 0")
        if np.any(np.diff(starts) <= 0) or starts[-1] >= n_steps:
            raise ValueError(f"episode_starts must increase and stay below {n_steps} steps")
        episode_ends = np.append(starts[1:], n_steps) - 1
        if not np.array_equal(np.flatnonzero(self.terminations | self.truncations), episode_ends):
            raise ValueError("terminations | truncations must be set on each episode's last step only")

    def __len__(self) -> int:
        """Number of episodes."""
        return len(self.episode_starts)

    @property
    def n_steps(self) -> int:
        """Number of steps over all episodes."""
        return len(self.rewards)

    @property
    def episode_lengths(self) -> np.ndarray:
        """(E,) int64 number of steps of each episode."""
        return np.diff(np.append(self.episode_starts, self.n_steps))

    @property
    def returns(self) -> np.ndarray:
        """(E,) float32 undiscounted return of each episode, summed in float64."""
        rewards = self.rewards.astype(np.float64)
        return np.add.reduceat(rewards, self.episode_starts).astype(np.float32)

    def episode(self, index: int) -> Episode:
        """The ``index``-th episode (negative indices count from the end)."""
        start = int(self.episode_starts[index])
        stop = start + int(self.episode_lengths[index])
        return Episode(
            observations=self.observations[start:stop],
            actions=self.actions[start:stop],
            rewards=self.rewards[start:stop],
            terminated=bool(self.terminations[stop - 1]),
        )

    def __iter__(self) -> Iterator[Episode]:
        return (self.episode(index) for index in range(len(self)))


def save_trajectories(path: str | os.PathLike[str], trajectories: Trajectories) -> Path:
    """Write a dataset atomically: readers see the old file or the complete new one.

    The archive is written to a temporary file in the destination folder (``os.replace`` is only
    atomic within one file system), flushed to disk, then renamed over ``path``. If anything fails
    the temporary file is removed and an existing ``path`` is left untouched.

    Args:
        path: Destination file, conventionally ``*.npz``; its folder must exist.
        trajectories: The dataset.

    Returns:
        ``path`` as a ``Path``.
    """
    path = Path(path)
    # Serialize first: metadata that is not JSON fails before any file is created.
    try:
        meta = json.dumps({**trajectories.meta, "format": FORMAT_NAME, "format_version": FORMAT_VERSION})
    except TypeError as error:
        raise TypeError(f"cannot save {path}: its meta is not JSON-serializable ({error})") from None
    arrays = {name: getattr(trajectories, name) for name in ARRAY_FIELDS}
    with atomic_open(path) as file:
        np.savez_compressed(file, meta=np.array(meta), **arrays)
    return path


_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
"""What numpy and zipfile raise for a file that is not, or no longer, a complete archive."""


def _read_archive(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` file, turning any read failure into a format error."""
    try:
        # Opened here rather than by np.load, which leaks its handle when the zip is damaged.
        with open(path, "rb") as file:
            loaded = np.load(file, allow_pickle=False)
            # Members are decompressed lazily: read them all now so that damage inside the
            # archive is reported here.
            arrays = {name: loaded[name] for name in loaded.files} if isinstance(loaded, NpzFile) else None
    except _READ_ERRORS as error:
        raise TrajectoryFormatError(
            f"{path} is not a readable .npz archive (corrupt or truncated?): {error}"
        ) from error
    if arrays is None:
        raise TrajectoryFormatError(f"{path} holds a single array, not an .npz trajectory archive")
    return arrays


def load_trajectories(path: str | os.PathLike[str]) -> Trajectories:
    """Read a dataset written by :func:`save_trajectories`.

    Args:
        path: The ``.npz`` file.

    Returns:
        The dataset; ``meta`` holds the collection metadata (without the format fields).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        TrajectoryFormatError: If the file is corrupt, truncated, not a trajectory archive, of an
            unsupported format version, or internally inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trajectory file not found: {path}")
    arrays = _read_archive(path)
    missing = [name for name in (*ARRAY_FIELDS, "meta") if name not in arrays]
    if missing:
        raise TrajectoryFormatError(f"{path} is not a trajectory dataset: missing fields {missing}")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except json.JSONDecodeError as error:
        raise TrajectoryFormatError(f"{path}: meta is not valid JSON: {error}") from error
    if not isinstance(meta, dict) or meta.pop("format", None) != FORMAT_NAME:
        raise TrajectoryFormatError(f"{path} is not a trajectory dataset: meta.format is not {FORMAT_NAME!r}")
    version = meta.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise TrajectoryFormatError(f"{path} has format version {version!r}; this code reads version {FORMAT_VERSION}")
    try:
        return Trajectories(**{name: arrays[name] for name in ARRAY_FIELDS}, meta=meta)
    except ValueError as error:
        raise TrajectoryFormatError(f"{path} is inconsistent: {error}") from error
