"""Helpers of the end-to-end tests: run ``anyformer`` in a folder, read its CSV logs, find the real data."""

from __future__ import annotations

import contextlib
import csv
import os
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
