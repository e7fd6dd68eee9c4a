"""Helpers of the end-to-end tests: run ``anyformer`` in a folder and read its CSV logs."""

from __future__ import annotations

import contextlib
import csv
from pathlib import Path

from anyformer.core.cli.main import main as cli_main


def run_cli(workdir: Path, args: list[str]) -> None:
    """Run ``anyformer <args>`` with ``workdir`` as the current folder, so ``runs/`` lands there."""
    with contextlib.chdir(workdir):
        cli_main(args)


def read_metrics(path: Path) -> dict[str, list[float]]:
    """Column -> the non-empty values of a Lightning ``metrics.csv``, in logging order."""
    columns: dict[str, list[float]] = {}
    with open(path) as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if value:
                    columns.setdefault(key, []).append(float(value))
    return columns
