"""DDP on the CPU: ``anyformer gpt fit --trainer.strategy ddp --trainer.devices 2`` (gloo) follows
one process with the doubled batch.

Rank r trains on the r-th half of the windows that one process with batch 2B draws for the same
step (``anyformer.text.gpt.data.WindowSampler``), DDP averages the two half-batch gradients into the full-batch
mean, and logged values are averaged over ranks (``TaskModule.log`` syncs them). So both runs do
the same arithmetic; only the order of float32 sums differs (an all-reduce of two partial
gradients against one sum), about 1e-7 relative per step, which Adam carries but does not blow up
over 20 steps: we measured differences below 3e-6 nats. The tolerance, 1e-4 nats, leaves room
for that and is still far below what a real difference does (measured on this run): ranks that
draw the same windows train like batch B, whose train losses differ by 2e-3 to 1e-1; validation
on half of the windows (one rank's share, unsynced) differs by 1e-2.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.reliability.tiny_gpt import cli_command, fit, fit_args, read_rows, subprocess_env, write_corpus

TOLERANCE = 1e-4  # nats; see the module docstring


def losses(rows: list[dict[str, str]], column: str) -> list[tuple[int, float]]:
    return [(int(row["step"]), float(row[column])) for row in rows if row.get(column)]


@pytest.mark.slow
def test_two_ddp_cpu_ranks_match_one_process_with_the_doubled_batch(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    corpus = write_corpus(tmp_path)
    # Every val window (4,468: an even count, so both runs see the same set), a row every step.
    settings = {
        "trainer.max_steps": 20,
        "trainer.log_every_n_steps": 1,
        "data.val_batches": 10**6,
        "trainer.limit_val_batches": 1.0,
    }
    two_ranks = {"data.batch_size": 4, "trainer.strategy": "ddp", "trainer.devices": 2}
    ddp_args = fit_args("ddp", corpus, settings | two_ranks)
    ddp = subprocess.run(
        cli_command(ddp_args), cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in ddp.stderr + ddp.stdout  # a second process really trained
    assert fit(fit_args("single", corpus, settings | {"data.batch_size": 8})) == 0

    ddp_rows, single_rows = (read_rows(tmp_path / "runs" / name / "metrics.csv") for name in ("ddp", "single"))
    for column, count in [("train_loss", 20), ("val_loss", 2)]:
        ddp_curve, single_curve = losses(ddp_rows, column), losses(single_rows, column)
        assert len(ddp_curve) == len(single_curve) == count
        for (ddp_step, ddp_loss), (step, loss) in zip(ddp_curve, single_curve, strict=True):
            assert ddp_step == step
            assert ddp_loss == pytest.approx(loss, abs=TOLERANCE), f"{column} at step {step}"


def _launch(command: list[str], cwd) -> None:
    done = subprocess.run(command, cwd=cwd, env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stderr + done.stdout)[-3000:]


@pytest.mark.slow
def test_the_torchrun_launch_trains_like_the_lightning_launched_ddp_run(tmp_path) -> None:
    """README's `torchrun ... -m anyformer.core.cli.main gpt fit` on 2 CPU processes (Lightning reads
    torchrun's environment) does what `--trainer.devices 2` launches: the same ranks, seeds, windows
    and gloo reductions, so the same losses bit for bit."""
    corpus = write_corpus(tmp_path)
    settings = {"trainer.max_steps": 10, "trainer.log_every_n_steps": 1, "trainer.val_check_interval": 5}
    ddp = settings | {"data.batch_size": 4, "trainer.strategy": "ddp", "trainer.devices": 2}
    _launch(cli_command(fit_args("lightning", corpus, ddp)), tmp_path)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    _launch([*torchrun, "-m", "anyformer.core.cli.main", *fit_args("torchrun", corpus, ddp)], tmp_path)

    rows = {name: read_rows(tmp_path / "runs" / name / "metrics.csv") for name in ("lightning", "torchrun")}
    for column, count in [("train_loss", 10), ("val_loss", 2)]:
        reference = losses(rows["lightning"], column)
        assert len(reference) == count
        assert losses(rows["torchrun"], column) == reference, column


def test_fsdp_on_cpu_is_refused_with_one_line(tmp_path, monkeypatch, capsys) -> None:
    """Lightning's FSDP needs GPUs (README, Scaling out): asked on a CPU, the fit stops before
    training with one line, exit 2."""
    monkeypatch.chdir(tmp_path)
    settings = {"trainer.strategy": "fsdp", "trainer.devices": 2, "trainer.accelerator": "cpu"}
    assert fit(fit_args("fsdp", write_corpus(tmp_path), settings)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("anyformer gpt: error: The strategy `fsdp` requires a GPU accelerator"), lines[-1]
    assert not (tmp_path / "runs" / "fsdp" / "run.json").exists()
