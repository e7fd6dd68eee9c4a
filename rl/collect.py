"""Collect offline-RL datasets by running behaviour policies in an environment.

Command line (the ``collect`` subcommand of ``anyformer``, or ``python -m anyformer.rl.collect``)::

    anyformer collect --env CartPole-v1 --policy mixed --episodes 50 --out cartpole_mixed.npz

Collection is reproducible: one seed determines the episode plan, every environment reset and
every random action, so the same arguments give identical arrays.
"""

from __future__ import annotations

import argparse
import logging
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from anyformer.core.cli.errors import ArgumentParser, positive_int, reports_usage_errors
from anyformer.rl.envs import MINATAR_NAMESPACE, env_spec_summary, make_env
from anyformer.rl.experts import DEFAULT_EPSILON, POLICIES, build_policy, plan_episodes
from anyformer.rl.trajectories import Trajectories, save_trajectories

logger = logging.getLogger(__name__)


def _versions(env_id: str) -> dict[str, str]:
    packages = ["numpy", "gymnasium"]
    if env_id.startswith(f"{MINATAR_NAMESPACE}/"):
        packages.append("minatar")
    return {"python": platform.python_version()} | {name: metadata.version(name) for name in packages}


def collect(
    env_id: str,
    policy: str,
    episodes: int,
    seed: int,
    max_steps: int | None = None,
    *,
    epsilon: float = DEFAULT_EPSILON,
) -> Trajectories:
    """Play ``episodes`` episodes with a behaviour policy and record them.

    The seed is split with ``numpy.random.SeedSequence``: one child shuffles the ``mixed`` plan,
    and each episode gets its own child for its reset seed and its policy's random generator.
    Episode i is therefore the same whatever the number of episodes (for a fixed plan).

    Args:
        env_id: Environment id, see :func:`anyformer.rl.envs.make_env`.
        policy: ``expert``, ``medium``, ``noisy``, ``random`` or ``mixed`` (see :mod:`anyformer.rl.experts`).
        episodes: Number of episodes (> 0).
        seed: Seed of everything random in the collection.
        max_steps: If given, episodes still running after this many steps are truncated.
        epsilon: Random-action probability of the ``noisy`` policy.

    Returns:
        The dataset, with the collection settings in ``meta``.

    Raises:
        ValueError: For an unknown environment or policy, a policy needing an expert the
            environment lacks, or non-positive ``episodes`` / ``max_steps``.
    """
    if episodes <= 0:
        raise ValueError(f"episodes must be > 0, got {episodes}")
    if max_steps is not None and max_steps <= 0:
        raise ValueError(f"max_steps must be > 0, got {max_steps}")
    plan_seed, episodes_seed = np.random.SeedSequence(seed).spawn(2)
    plan = plan_episodes(policy, episodes, np.random.default_rng(plan_seed), epsilon)
    env = make_env(env_id)
    summary = env_spec_summary(env)  # fails early for spaces a tokenizer cannot handle
    policies = {spec: build_policy(spec, env_id, env.action_space) for spec in set(plan)}

    observations, actions, rewards, terminations, truncations = [], [], [], [], []
    episode_starts = []
    for index, (spec, episode_seed) in enumerate(zip(plan, episodes_seed.spawn(episodes), strict=True)):
        reset_seed, policy_seed = episode_seed.spawn(2)
        rng = np.random.default_rng(policy_seed)
        obs, _ = env.reset(seed=int(reset_seed.generate_state(1)[0]))
        episode_starts.append(len(rewards))
        terminated = truncated = False
        while not (terminated or truncated):
            action = policies[spec](obs, rng)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncated = truncated or (max_steps is not None and len(rewards) - episode_starts[-1] >= max_steps)
            truncations.append(truncated)
            obs = next_obs
        logger.debug("episode %d (%s): return %g", index, spec.label, sum(rewards[episode_starts[-1] :]))
    env.close()

    meta = {
        "env_id": env_id,
        "env": summary | {"obs_shape": list(summary["obs_shape"])},  # JSON has no tuples
        "policy": policy,
        "epsilon": epsilon if policy == "noisy" else None,
        "seed": seed,
        "episodes": episodes,
        "max_steps": max_steps,
        "episode_policies": [spec.label for spec in plan],
        "versions": _versions(env_id),
    }
    return Trajectories(
        observations=np.stack(observations),
        actions=np.asarray(actions),
        rewards=np.asarray(rewards),
        terminations=np.asarray(terminations),
        truncations=np.asarray(truncations),
        episode_starts=np.asarray(episode_starts),
        meta=meta,
    )


def summarize(trajectories: Trajectories) -> str:
    """One line: episodes, steps and return statistics."""
    returns = trajectories.returns.astype(np.float64)
    return (
        f"{len(trajectories)} episodes, {trajectories.n_steps} steps, return "
        f"mean {returns.mean():.1f} std {returns.std():.1f} min {returns.min():g} max {returns.max():g}"
    )


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def build_parser() -> ArgumentParser:
    """Arguments of ``anyformer collect``."""
    parser = ArgumentParser(
        prog="anyformer collect",
        description="Collect an offline-RL trajectory dataset (.npz) with a behaviour policy.",
    )
    parser.add_argument("--env", required=True, help="environment id, e.g. CartPole-v1 or MinAtar/Breakout-v1")
    parser.add_argument("--policy", required=True, choices=POLICIES, help="behaviour policy")
    parser.add_argument("--episodes", required=True, type=positive_int, help="number of episodes")
    parser.add_argument("--out", required=True, type=Path, help="output .npz file (missing folders are created)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the whole collection (default: 0)")
    parser.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help="truncate episodes after this many steps (default: the environment's limit)",
    )
    parser.add_argument(
        "--epsilon",
        type=_probability,
        default=DEFAULT_EPSILON,
        help=f"random-action probability of the noisy policy (default: {DEFAULT_EPSILON})",
    )
    return parser


@reports_usage_errors("anyformer collect")
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``anyformer collect``; print a one-line summary of the saved dataset.

    Returns:
        0 on success. Usage errors (including an unknown environment) exit with status 2, a
        failure to write the output with status 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        trajectories = collect(args.env, args.policy, args.episodes, args.seed, args.max_steps, epsilon=args.epsilon)
    except ValueError as error:
        parser.error(str(error))
    try:
        save_trajectories(args.out, trajectories)
    except OSError as error:
        parser.exit(1, f"{parser.prog}: error: cannot write {args.out}: {error}\n")
    print(f"{args.out}: {args.env} {args.policy}, {summarize(trajectories)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
