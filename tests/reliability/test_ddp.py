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
