"""Exact resume of every task: a fit SIGKILLed right after its first checkpoint and resumed with
``--ckpt_path last``, and a fit resumed from its epoch-boundary checkpoint, end with the weights of
the uninterrupted fit bit for bit and with its ``metrics.csv`` rows (bar the wall clock).

Exact, not a tolerance, on one thread: the global RNG states, weights, optimizer, schedule and loop
counters are in the checkpoint, and every draw of the training data is a function of the seed and
its place (GPT's and the LSTM's window sampler: the batch number; the other tasks' samplers and
augmentations: the epoch and the place in it, ``anyformer.core.train.data_order``), which the
trainer's restored step gives back.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.reliability.resume_cases import CASES, STEPS, VAL_EVERY, fit_args
from tests.reliability.tiny_gpt import (
    cli_command,
    drop_columns,
    fit,
    keep_every_checkpoint,
    read_rows,
    subprocess_env,
    weights,
)

THROTTLE = {"class_path": "tests.reliability.tiny_gpt.Throttle", "init_args": {"seconds": 0.05}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_dir(folder: Path) -> Path:
    return folder / "runs" / "run"


def rows(folder: Path) -> list[dict[str, str]]:
    return drop_columns(read_rows(run_dir(folder) / "metrics.csv"), "wall_s")


def assert_same_weights(mine: Path, theirs: Path, context: str) -> None:
    a, b = weights(mine), weights(theirs)
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"{context}: {len(different)} of {len(a)} tensors differ: {different[:3]}"


@pytest.mark.parametrize("task", [*CASES, "vit+workers"])
def test_killed_and_resumed_fits_equal_the_uninterrupted_one(task: str, tmp_path: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    reference, boundary, killed = (tmp_path / name for name in ("reference", "boundary", "killed"))
    for folder in (reference, boundary, killed):
        folder.mkdir()

    monkeypatch.chdir(reference)
    every = json.dumps([keep_every_checkpoint(reference / "every")])
    assert fit(fit_args(task, data, every)) == 0
    last = run_dir(reference) / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == STEPS

    # Resumed from the checkpoint at the end of the first epoch (step 6).
    monkeypatch.chdir(boundary)
    assert fit([*fit_args(task, data), "--ckpt_path", str(reference / "every" / f"step={2 * VAL_EVERY}.ckpt")]) == 0
    assert_same_weights(run_dir(boundary) / "checkpoints" / "last.ckpt", last, "resumed at the epoch boundary")
    later = [row for row in rows(reference) if int(row["step"]) >= 2 * VAL_EVERY]
    assert [row for row in rows(boundary) if int(row["step"]) >= 2 * VAL_EVERY] == later

    # SIGKILLed just after its first checkpoint (step 3, inside the first epoch), resumed with `last`.
    monkeypatch.chdir(killed)
    checkpoint = run_dir(killed) / "checkpoints" / "last.ckpt"
    log = killed / "killed.log"
    with log.open("w") as out:
        args = fit_args(task, data, json.dumps([THROTTLE]))
        child = subprocess.Popen(cli_command(args), cwd=killed, env=subprocess_env(), stdout=out, stderr=out)
        try:
            deadline = time.monotonic() + 120
            while not checkpoint.exists():
                assert child.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.005)
            time.sleep(0.03)
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            returncode = child.wait()
    assert returncode == -signal.SIGKILL, "the run ended before the kill"
    resumed_from = torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"]
    assert fit([*fit_args(task, data), "--ckpt_path", "last"]) == 0
    context = f"killed after step {resumed_from}, resumed with --ckpt_path last"
    assert_same_weights(checkpoint, last, context)
    assert rows(killed) == rows(reference), context
