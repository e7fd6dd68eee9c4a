"""Scripted expert controllers and the behaviour policies built from them.

A Decision Transformer learns to imitate whatever return it is asked for, so its training data
must span a range of returns. Here the behaviour policies are:

- ``expert``: a scripted controller (``EXPERTS``, by env id);
- ``medium``: a weaker scripted controller with its own systematic mistakes (``MEDIUMS``), like
  the partly trained "medium" policies of D4RL: unlike a ``noisy`` expert, whose random actions
  an argmax over the data averages away, its actions disagree with the expert's consistently,
  so a policy that ignores returns blends the two players;
- ``noisy``: the expert, but a uniformly random action with probability ``epsilon`` at each step;
- ``random``: uniformly random actions;
- ``mixed``: each episode is played by one of the above, in the proportions of ``MIXTURE``.

Every policy is a function ``(observation, rng) -> action`` whose randomness comes only from the
``numpy.random.Generator`` it is given, so collection is reproducible from one seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

Action = int | np.ndarray
Policy = Callable[[np.ndarray, np.random.Generator], Action]
Expert = Callable[[np.ndarray], Action]

POLICIES = ("expert", "medium", "noisy", "random", "mixed")
EPISODE_POLICIES = ("expert", "medium", "noisy", "random")
"""The policies a single episode is played by; ``mixed`` chooses among them per episode."""
DEFAULT_EPSILON = 0.5
"""Random-action probability of the ``noisy`` policy; on CartPole it averages ~190 (range 13 to 485)."""


def cartpole_expert(obs: np.ndarray) -> int:
    """Push the cart towards where the pole is falling: a PD controller on the pole angle.

    The small cart position and velocity terms keep the cart from drifting off the track within
    500 steps. Scores 500 on every seed tried.

    Args:
        obs: CartPole observation ``[x, x_dot, theta, theta_dot]``.

    Returns:
        0 (push left) or 1 (push right).
    """
    x, x_dot, theta, theta_dot = obs
    return int(0.05 * x + 0.2 * x_dot + theta + 0.5 * theta_dot > 0)


def cartpole_medium(obs: np.ndarray) -> int:
    """Push the way the pole is turning, ignoring its angle: keeps it up for 138-278 steps
    (mean 193 over seeds 0-29) before the uncorrected angle drifts past the limit."""
    return int(obs[3] > 0)


# MinAtar Breakout frame channels and minimal action set ("MinAtar/Breakout-v1").
_PADDLE, _BALL, _TRAIL, _BRICK = 0, 1, 2, 3
_NOOP, _LEFT, _RIGHT = 0, 1, 2
_BOTTOM_ROW = 9


def _position(channel: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(channel)
    return int(rows[0]), int(cols[0])


def _ball_direction(ball: tuple[int, int], trail: tuple[int, int]) -> tuple[int, int]:
    """Infer the ball's (row, column) velocity from its position and its trail.

    The ball always moves diagonally; a zero difference means it just bounced. Horizontally it
    can only have hit a side wall, so it now moves away from it. Vertically, on the bottom-but-one
    row it was returned by the paddle (now rising); elsewhere it hit the ceiling or, usually from
    below, a brick (now falling). This is also right for the first frame, where the trail is on
    the ball and the ball starts falling away from its wall.
    """
    (row, col), (trail_row, trail_col) = ball, trail
    d_col = int(np.sign(col - trail_col)) or (1 if col == 0 else -1)
    d_row = int(np.sign(row - trail_row)) or (-1 if row == _BOTTOM_ROW - 1 else 1)
    return d_row, d_col


def _landing_columns(ball: tuple[int, int], direction: tuple[int, int], bricks: np.ndarray) -> tuple[int, int]:
    """Follow MinAtar Breakout's ball rules until the ball is about to reach the bottom row.

    Returns:
        The ball's column on the bottom-but-one row and the column it is heading for; the paddle
        returns the ball if it stands on either when the ball moves down.
    """
    (row, col), (d_row, d_col) = ball, direction
    bricks = bricks.copy()
    # A ball bouncing between bricks and walls reaches the bottom within a few dozen steps;
    # the bound only guards against a loop that the real game would break with its strike rule.
    for _ in range(200):
        new_row, new_col = row + d_row, col + d_col
        if not 0 <= new_col <= 9:
            new_col, d_col = min(max(new_col, 0), 9), -d_col
        if new_row < 0:
            new_row, d_row = 0, -d_row
        elif bricks[new_row, new_col]:
            bricks[new_row, new_col] = False
            new_row, d_row = row, -d_row
        elif new_row == _BOTTOM_ROW:
            return col, new_col
        row, col = new_row, new_col
    return col, col


def breakout_expert(frame: np.ndarray) -> int:
    """Move the paddle to where the ball will come down (MinAtar Breakout, minimal actions).

    Ball, trail, paddle and bricks are read from the frame's channels; the ball's flight is then
    replayed with the game's own bounce rules (walls, ceiling, bricks) to predict where it lands.

    Args:
        frame: (4, 10, 10) channels-first frame from ``make_env("MinAtar/Breakout-v1")``.

    Returns:
        0 (stay), 1 (left) or 2 (right).
    """
    paddle_col = _position(frame[_PADDLE])[1]
    ball, trail = _position(frame[_BALL]), _position(frame[_TRAIL])
    landing = _landing_columns(ball, _ball_direction(ball, trail), frame[_BRICK] > 0)
    target = min(landing, key=lambda col: abs(col - paddle_col))
    if target == paddle_col:
        return _NOOP
    return _LEFT if target < paddle_col else _RIGHT


def breakout_medium(frame: np.ndarray) -> int:
    """Keep the paddle under the ball's current column (MinAtar Breakout, minimal actions).

    The naive player: it does not predict bounces, so it is late for balls that come down off a
    wall or a brick. Over seeds 0-29 it scores 8.0 on average (0 to 30, ~93 steps an episode)
    against the expert's ~38 in 1,000 steps, and it takes the expert's action on only ~8% of the
    expert's states (the expert waits at the landing column while this one follows the ball).
    """
    paddle_col = _position(frame[_PADDLE])[1]
    ball_col = _position(frame[_BALL])[1]
    if ball_col == paddle_col:
        return _NOOP
    return _LEFT if ball_col < paddle_col else _RIGHT


EXPERTS: dict[str, Expert] = {
    "CartPole-v0": cartpole_expert,
    "CartPole-v1": cartpole_expert,
    "MinAtar/Breakout-v1": breakout_expert,
}


MEDIUMS: dict[str, Expert] = {
    "CartPole-v0": cartpole_medium,
    "CartPole-v1": cartpole_medium,
    "MinAtar/Breakout-v1": breakout_medium,
}


def get_expert(env_id: str) -> Expert:
    """Look up the scripted expert of an environment.

    Raises:
        ValueError: If no expert is registered for ``env_id``.
    """
    if env_id not in EXPERTS:
        raise ValueError(f"no expert policy for {env_id!r}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[env_id]


@dataclass(frozen=True)
class PolicySpec:
    """The behaviour policy of one episode."""

    kind: str
    """``expert``, ``medium``, ``noisy`` or ``random``."""
    epsilon: float = 0.0
    """Random-action probability of a ``noisy`` policy."""

    def __post_init__(self) -> None:
        if self.kind not in EPISODE_POLICIES:
            raise ValueError(f"PolicySpec.kind={self.kind!r} is not one of {list(EPISODE_POLICIES)}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"PolicySpec.epsilon must be in [0, 1], got {self.epsilon}")

    @property
    def label(self) -> str:
        """Short name recorded in the dataset metadata, e.g. ``noisy@0.40``."""
        return f"noisy@{self.epsilon:.2f}" if self.kind == "noisy" else self.kind


MIXTURE: tuple[tuple[PolicySpec, float], ...] = (
    (PolicySpec("expert"), 0.3),
    (PolicySpec("noisy", 0.45), 0.1),
    (PolicySpec("noisy", 0.55), 0.1),
    (PolicySpec("noisy", 0.65), 0.1),
    (PolicySpec("noisy", 0.75), 0.1),
    (PolicySpec("random"), 0.3),
)
"""Episode shares of the ``mixed`` policy. Tuned on CartPole: 50 episodes average ~205 (184 to 233
over 40 seeds), below the 250 a Decision Transformer must beat by far, yet ~32% of them are
perfect 500-return episodes and the noisy ones fill the range in between."""


def _shares_to_counts(shares: list[float], total: int) -> list[int]:
    """Split ``total`` into integer counts proportional to ``shares`` (largest remainder)."""
    exact = np.asarray(shares) / sum(shares) * total
    counts = np.floor(exact).astype(int)
    for index in np.argsort(counts - exact, kind="stable")[: total - counts.sum()]:
        counts[index] += 1
    return counts.tolist()


def plan_episodes(
    policy: str, episodes: int, rng: np.random.Generator, epsilon: float = DEFAULT_EPSILON
) -> list[PolicySpec]:
    """Decide which behaviour policy plays each episode.

    ``mixed`` uses exact ``MIXTURE`` proportions (rounded) in a shuffled order, so that even a
    small dataset gets its share of expert episodes.

    Args:
        policy: One of ``POLICIES``.
        episodes: Number of episodes.
        rng: Source of the shuffle of a ``mixed`` plan.
        epsilon: Random-action probability of the ``noisy`` policy.

    Returns:
        One spec per episode.

    Raises:
        ValueError: For an unknown policy, or a ``noisy`` one with epsilon outside [0, 1].
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; choose one of {list(POLICIES)}")
    if policy != "mixed":
        return [PolicySpec(policy, epsilon if policy == "noisy" else 0.0)] * episodes
    specs, shares = zip(*MIXTURE, strict=True)
    plan = [
        spec for spec, count in zip(specs, _shares_to_counts(list(shares), episodes), strict=True) for _ in range(count)
    ]
    return [plan[index] for index in rng.permutation(episodes)]


def random_policy(action_space: spaces.Space) -> Policy:
    """Uniformly random actions drawn from the given generator.

    Raises:
        ValueError: For action spaces other than ``Discrete`` or a bounded ``Box``.
    """
    if isinstance(action_space, spaces.Discrete):
        n, start = int(action_space.n), int(action_space.start)
        return lambda obs, rng: start + int(rng.integers(n))
    if isinstance(action_space, spaces.Box) and action_space.is_bounded():
        low, high, dtype = action_space.low, action_space.high, action_space.dtype
        return lambda obs, rng: rng.uniform(low, high).astype(dtype)
    raise ValueError(f"cannot sample random actions from {action_space}")


def build_policy(spec: PolicySpec, env_id: str, action_space: spaces.Space) -> Policy:
    """Turn a spec into a policy function for one environment.

    Raises:
        ValueError: If the spec needs an expert or a medium policy and ``env_id`` has none.
    """
    if spec.kind == "random":
        return random_policy(action_space)
    if spec.kind == "medium":
        if env_id not in MEDIUMS:
            raise ValueError(f"no medium policy for {env_id!r}; medium policies exist for {sorted(MEDIUMS)}")
        medium = MEDIUMS[env_id]
        return lambda obs, rng: medium(obs)
    expert = get_expert(env_id)
    if spec.kind == "expert":
        return lambda obs, rng: expert(obs)
    explore = random_policy(action_space)
    return lambda obs, rng: explore(obs, rng) if rng.random() < spec.epsilon else expert(obs)
