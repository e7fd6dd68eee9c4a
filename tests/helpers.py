"""Helpers of the end-to-end tests: run ``anyformer`` in a folder and read its CSV logs."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

from anyformer.core.cli.main import main as cli_main


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
