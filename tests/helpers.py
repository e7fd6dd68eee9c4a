"""Helpers of the end-to-end tests: run ``anyformer`` in a folder, read its CSV logs, find the real data."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
from pathlib import Path

import pytest

from anyformer.core.cli.main import main as cli_main
from anyformer.core.data.locations import ENV_DATA

SHARED_DATA = os.environ.get(ENV_DATA, "").strip()
"""``$ANYFORMER_DATA`` as the suite started (a test's fixtures may unset it): the real datasets."""


def data_path(relative: str = "") -> Path:
    """``$ANYFORMER_DATA/<relative>``; skips the calling test when it is unset or absent."""
    if not SHARED_DATA:
        pytest.skip(
            f"${ENV_DATA} is not set (the real datasets' folder; `make test` sets it when ../shared/data exists)"
        )
    path = Path(SHARED_DATA).expanduser().absolute() / relative  # as the data layer sees it: links kept
    if not path.exists():
        pytest.skip(f"{path} is absent (${ENV_DATA}={SHARED_DATA})")
    return path


def run_cli(workdir: Path, args: list[str], expect: int = 0) -> int:
    """Run ``anyformer <args>`` with ``workdir`` as the current folder, so ``runs/`` lands there.

    ``main`` returns the exit status (2 for a usage error) instead of raising, and argparse or
    ``--print_config`` raise ``SystemExit``: both count, and the status must equal ``expect``.

    Returns:
        The exit status (``expect``).
    """
    with contextlib.chdir(workdir):
        try:
            code = cli_main(args)
        except SystemExit as exit_info:
            code = exit_info.code if isinstance(exit_info.code, int) else 1
    assert code == expect, f"anyformer {' '.join(map(str, args))} exited with {code}, expected {expect}"
    return code


def read_metrics(path: Path) -> dict[str, list[float]]:
    """Column -> the non-empty values of a Lightning ``metrics.csv``, in logging order."""
    columns: dict[str, list[float]] = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value:
                    columns.setdefault(key, []).append(float(value))
    return columns


def untrained_cartpole_dt(path: Path) -> Path:
    """An untrained CartPole Decision Transformer checkpoint at ``path`` (its episodes are short), seeded, as
    Lightning wrote them before hyperparameters were saved: the state dict, Lightning's version and
    anyformer's section, no ``hyper_parameters``."""
    import pytorch_lightning as pl
    import torch

    from anyformer.core.config import TransformerConfig
    from anyformer.rl.dt import DTConfig
    from anyformer.rl.dt_task import DTModule

    torch.manual_seed(0)
    cfg = DTConfig(obs_shape=(4,), n_actions=2, context_len=4, max_timestep=500,
                   transformer=TransformerConfig(dim=16, n_layers=1, n_heads=2, position="none"))  # fmt: skip
    module = DTModule(cfg)
    module.env_id = "CartPole-v1"
    checkpoint = {"state_dict": module.state_dict(), "pytorch-lightning_version": pl.__version__}
    module.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def git(*args: str, cwd: Path | None = None) -> str:
    """``git ARGS`` in ``cwd`` (the current folder by default) as a fixed author, with no user config:
    the tests that commit a workspace to check what the report and runner call stale."""
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def commit_all(message: str, cwd: Path | None = None) -> str:
    """Commit every file of ``cwd`` (a repository made on first use); return the new commit."""
    if not ((cwd or Path.cwd()) / ".git").exists():
        git("init", "-q", cwd=cwd)
    git("add", "-A", cwd=cwd)
    git("commit", "-q", "-m", message, cwd=cwd)
    return git("rev-parse", "HEAD", cwd=cwd)
