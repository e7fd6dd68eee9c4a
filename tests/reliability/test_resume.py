"""Crash, resume and determinism of ``anyformer gpt fit``.

A fit resumed from a checkpoint, or SIGKILLed at a random point and resumed with
``--ckpt_path last``, must end exactly like the uninterrupted fit with the same seed: the same
weights bit for bit and the same ``metrics.csv`` (bar the wall-clock column). Exact equality is
expected, not a tolerance: the windows are a function of (seed, batch number), the global RNG
states are in the checkpoint (the runs use dropout, so this matters), and Lightning restores the
weights, optimizer, schedule and loop counters; CPU kernels are deterministic.
"""

from __future__ import annotations

import csv
import random
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.reliability.tiny_gpt import (
    STEPS,
    VAL_EVERY,
    cli_command,
    drop_columns,
    fit,
    fit_args,
    keep_every_checkpoint,
    read_rows,
    subprocess_env,
    val_rows,
    weights,
    write_corpus,
)

DROPOUT = {"model.config.transformer.dropout": 0.1}


@dataclass
class Run:
    folder: Path
    corpus: Path

    @property
    def last(self) -> Path:
        return self.folder / "runs" / "run" / "checkpoints" / "last.ckpt"

    @property
    def rows(self) -> list[dict[str, str]]:
        return read_rows(self.folder / "runs" / "run" / "metrics.csv")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every fit here runs on one thread, as the SIGKILLed child does (``subprocess_env``): CPU
    reductions split their sums by thread, so a run whose first half had one thread and whose
    second half had two ends a few ulps away from a two-thread run (28 of 29 tensors differed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The uninterrupted fit, keeping the checkpoint of every validation in ``every/``."""
    folder = tmp_path_factory.mktemp("reference")
    corpus = write_corpus(folder)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert fit(fit_args("run", corpus, DROPOUT, [keep_every_checkpoint(folder / "every")])) == 0
    run = Run(folder, corpus)
    assert len(val_rows(run.rows)) == STEPS // 10
    return run


def assert_same_weights(checkpoint: Path, reference: Path) -> None:
    mine, theirs = weights(checkpoint), weights(reference)
    assert mine.keys() == theirs.keys()
    different = [name for name in mine if not torch.equal(mine[name], theirs[name])]
    assert not different, f"{len(different)} of {len(mine)} tensors differ from the uninterrupted run: {different[:3]}"


@pytest.mark.parametrize("step", [10, 30], ids=["inside-an-epoch", "on-an-epoch-boundary"])
def test_resumed_fit_equals_the_uninterrupted_one(reference: Run, step: int, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint = reference.folder / "every" / f"step={step}.ckpt"
    args = fit_args("run", reference.corpus, DROPOUT, [keep_every_checkpoint(tmp_path / "every")])
    assert fit([*args, "--ckpt_path", str(checkpoint)]) == 0
    resumed = Run(tmp_path, reference.corpus)
    assert_same_weights(resumed.last, reference.last)
    later = [row for row in val_rows(reference.rows) if int(row[0]) >= step]
    assert val_rows(resumed.rows) == later


@pytest.mark.slow
def test_sigkilled_fit_resumes_to_the_same_weights_and_logs(reference: Run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    args = fit_args("run", reference.corpus, DROPOUT, [keep_every_checkpoint(tmp_path / "every")])
    # The killed run sleeps 30 ms a step (no effect on the numbers) so that it is still
    # training when the kill lands, at most 0.5 s after its first checkpoint.
    throttle = {"class_path": "tests.reliability.tiny_gpt.Throttle", "init_args": {"seconds": 0.03}}
    killed_args = fit_args("run", reference.corpus, DROPOUT, [keep_every_checkpoint(tmp_path / "every"), throttle])
    run = Run(tmp_path, reference.corpus)
    with (tmp_path / "killed.log").open("w") as log:
        child = subprocess.Popen(cli_command(killed_args), cwd=tmp_path, env=subprocess_env(), stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 300
            while not run.last.exists():  # renamed into place only once complete
                assert child.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 300 s"
                time.sleep(0.005)
            delay = random.uniform(0.0, 0.5)
            time.sleep(delay)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            returncode = child.wait()
    assert returncode == -signal.SIGKILL, f"the run ended before the kill, {delay:.3f} s after its first checkpoint"
    resumed_from = torch.load(run.last, map_location="cpu", weights_only=True)["global_step"]
    context = f"killed {delay:.3f} s after the first checkpoint, resumed from step {resumed_from}"
    # The rows up to the checkpoint are on disk at the kill (written with every checkpoint).
    before = [row for row in val_rows(reference.rows) if int(row[0]) < resumed_from]
    assert val_rows(run.rows)[: len(before)] == before, context

    assert fit([*args, "--ckpt_path", "last"]) == 0
    assert_same_weights(run.last, reference.last)
    assert drop_columns(run.rows, "wall_s") == drop_columns(reference.rows, "wall_s"), context


def test_same_seed_gives_identical_metrics(reference: Run, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert fit(fit_args("run", reference.corpus, DROPOUT)) == 0
    again = Run(tmp_path, reference.corpus)
    assert val_rows(again.rows) == val_rows(reference.rows)  # exact, as logged
    assert drop_columns(again.rows, "wall_s") == drop_columns(reference.rows, "wall_s")
    assert_same_weights(again.last, reference.last)


def test_a_run_folder_carried_to_another_checkout_resumes_with_continuous_logs(reference: Run, tmp_path, monkeypatch):
    """A fit longer than one sitting moves to another machine as its ``runs/<name>/`` folder (README,
    "Experiments and results"): there ``--ckpt_path last`` ends with the uninterrupted fit's weights,
    and ``metrics.csv`` keeps the rows made before the move, its ``wall_s`` counting on from the
    checkpoint's clock instead of restarting at zero."""
    carried = tmp_path / "other-checkout" / "runs" / "run"
    (carried / "checkpoints").mkdir(parents=True)
    checkpoint = torch.load(reference.folder / "every" / "step=20.ckpt", map_location="cpu", weights_only=False)
    (carried / "checkpoints" / "last.ckpt").write_bytes((reference.folder / "every" / "step=20.ckpt").read_bytes())
    before = [row for row in reference.rows if int(row["step"]) < 20]  # the log as it was at that checkpoint
    fields = list(reference.rows[0].keys())
    with (carried / "metrics.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=fields)
        writer.writeheader()
        writer.writerows(before)
    monkeypatch.chdir(tmp_path / "other-checkout")
    assert fit([*fit_args("run", reference.corpus, DROPOUT), "--ckpt_path", "last"]) == 0
    resumed = Run(tmp_path / "other-checkout", reference.corpus)
    assert_same_weights(resumed.last, reference.last)
    assert drop_columns(resumed.rows, "wall_s") == drop_columns(reference.rows, "wall_s")
    clock = [float(row["wall_s"]) for row in resumed.rows if row.get("wall_s")]
    assert clock == sorted(clock) and len(clock) == STEPS // VAL_EVERY
    (elapsed,) = [state["elapsed"] for key, state in checkpoint["callbacks"].items() if "WallClock" in key]
    assert clock[1] <= elapsed < clock[2]  # kept (logged just before the checkpoint), then counted on from it
