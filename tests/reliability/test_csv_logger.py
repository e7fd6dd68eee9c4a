"""metrics.csv survives a resumed fit: old rows before the resume step stay, later ones are replaced."""

from __future__ import annotations

import csv
from pathlib import Path

from anyformer.core.train.csv_logger import ResumableCSVLogger


def rows(folder: Path) -> list[tuple[int, float, float | None]]:
    """(step, loss, val_loss or None) of every row of ``folder/run/metrics.csv``."""
    with (folder / "run" / "metrics.csv").open(newline="") as file:
        return [
            (int(row["step"]), float(row["loss"]), float(row["val_loss"]) if row.get("val_loss") else None)
            for row in csv.DictReader(file)
        ]


def log_steps(logger: ResumableCSVLogger, steps: range, offset: float = 0.0) -> None:
    for step in steps:
        logger.log_metrics({"loss": step + offset}, step=step)
    logger.save()


def test_a_resumed_run_keeps_the_rows_before_its_start_step(tmp_path) -> None:
    killed = ResumableCSVLogger(tmp_path, name="run", version="")
    log_steps(killed, range(10))
    killed.log_metrics({"loss": 9.0, "val_loss": 5.0}, step=9)  # the validation before the checkpoint
    log_steps(killed, range(10, 14))  # logged after the checkpoint at step 10, then killed: no finalize

    resumed = ResumableCSVLogger(tmp_path, name="run", version="")
    resumed.resume_at(10)
    log_steps(resumed, range(10, 20), offset=0.5)  # the resumed run logs steps 10.. again
    resumed.finalize("success")

    expected = [(s, float(s), None) for s in range(10)] + [(9, 9.0, 5.0)]
    expected += [(s, s + 0.5, None) for s in range(10, 20)]
    assert rows(tmp_path) == expected


def test_a_fresh_run_replaces_the_old_rows(tmp_path) -> None:
    old = ResumableCSVLogger(tmp_path, name="run", version="")
    log_steps(old, range(5))
    fresh = ResumableCSVLogger(tmp_path, name="run", version="")
    fresh.resume_at(0)
    log_steps(fresh, range(3), offset=0.5)
    assert rows(tmp_path) == [(s, s + 0.5, None) for s in range(3)]


def test_the_old_file_stays_untouched_until_the_new_run_writes(tmp_path) -> None:
    old = ResumableCSVLogger(tmp_path, name="run", version="")
    log_steps(old, range(5))
    before = (tmp_path / "run" / "metrics.csv").read_bytes()
    resumed = ResumableCSVLogger(tmp_path, name="run", version="")
    resumed.resume_at(3)
    resumed.log_metrics({"loss": 1.0}, step=3)  # buffered only: a kill now loses nothing on disk
    assert (tmp_path / "run" / "metrics.csv").read_bytes() == before
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["metrics.csv"]  # no temporary file left
