"""A CSV logger whose ``metrics.csv`` survives a resumed fit."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
from pytorch_lightning.utilities import rank_zero_only

from anyformer.core.train.atomic import atomic_open


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


class _MergingWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is kept until the first save
    and that every save rewrites the whole file atomically.

    The first save keeps the old rows logged before ``keep_before_step`` (none when it is
    ``None``). Lightning appends to the file instead, which a kill in the middle of a write
    leaves with a torn last row; the rows of one run are a few thousand at most, so writing them
    all each time costs nothing that matters.
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self.keep_before_step: int | None = None
        self._previous: list[dict[str, str]] | None = _read_rows(Path(self.metrics_file_path))
        self._rows: list[dict[str, Any]] = []

    def _check_log_dir_exists(self) -> None:
        """Keep an existing ``metrics.csv``; Lightning's writer deletes it here."""

    def save(self) -> None:
        if not self.metrics:
            return
        if self._previous is not None:
            keep_before = self.keep_before_step
            if keep_before is not None:
                self._rows = [row for row in self._previous if float(row["step"]) < keep_before]
            self._previous = None
        self._rows += self.metrics
        self.metrics = []
        self.metrics_keys = sorted(set().union(*self._rows))
        with atomic_open(self.metrics_file_path, "w", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(self._rows)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` that keeps the rows of an interrupted fit when the fit is resumed.

    Lightning's CSVLogger deletes an existing ``metrics.csv``, so resuming a killed run with
    ``--ckpt_path last`` lost its curve so far. This logger keeps the old rows logged before the
    step training restarts from (told by :meth:`resume_at`, which ``anyformer.core.train.callbacks.ResumeLogs``
    calls when training starts) and drops the later ones, which the resumed run logs again. A
    fresh fit (step 0), ``validate`` or ``test`` starts a new file, as with CSVLogger. Each write
    replaces the file atomically, so a kill never leaves a torn row.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _MergingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _MergingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def resume_at(self, step: int) -> None:
        """Keep the existing rows logged before ``step`` (the step training starts from)."""
        self.experiment.keep_before_step = step
