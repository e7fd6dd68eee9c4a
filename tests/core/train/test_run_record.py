"""RunRecord: runs/<name>/run.json says what ran, where, and how it ended."""

import datetime
import os
import signal
import subprocess
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.callbacks import RunRecord, WallClock
from anyformer.core.train.run_record import config_paths, evaluation_dir, read_record, record_evaluation, write_record

REPO = Path(__file__).resolve().parents[3]
ARGV = ["anyformer", "toy", "fit", "--config", "experiments/toy.yaml", "--run-name", "toy"]


def _data(seed: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=generator)
    return TensorDataset(x, x @ torch.tensor([[1.0], [-2.0], [0.5]]))


class Regression(pl.LightningModule):
    """y = x w on fixed data; logs val_loss and test_loss, the metrics a task logs."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(3, 1)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        return self.loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch))

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(_data(0), batch_size=8)  # 4 steps per epoch

    def val_dataloader(self):
        return DataLoader(_data(1), batch_size=32)

    def test_dataloader(self):
        return DataLoader(_data(2), batch_size=32)


class Raise(pl.Callback):
    """Raises ``error`` when training reaches ``step``."""

    def __init__(self, step: int, error: BaseException) -> None:
        self.step, self.error = step, error

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise self.error


class StopAt(pl.Callback):
    """Asks the trainer to stop early at ``step``, as early stopping would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _trainer(run_dir: Path, *extra: pl.Callback, **settings) -> pl.Trainer:
    defaults = dict(max_steps=8, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    callbacks = [WallClock(), RunRecord(run_dir, "toy", ARGV), *extra]
    return pl.Trainer(default_root_dir=run_dir.parent, callbacks=callbacks, **(defaults | settings))


def test_finished_fit_records_command_code_machine_and_final_metrics(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    model = Regression()
    trainer = _trainer(run_dir)
    trainer.fit(model)
    record = read_record(run_dir)

    assert record["status"] == "finished" and record["step"] == 8
    assert record["run_name"] == "toy" and record["task"] == "toy"
    assert record["argv"] == ARGV and record["config"] == ["experiments/toy.yaml"]
    assert record["params"] == 3 * 1 + 1  # Linear(3, 1): weights + bias
    # The last validation ran after the last step: its loss is the final model's loss on the val set.
    x, y = _data(1).tensors
    with torch.no_grad():
        expected = nn.functional.mse_loss(model.net(x), y).item()
    assert record["metrics"] == {"val_loss": pytest.approx(expected, rel=1e-5)}
    clock = next(c for c in trainer.callbacks if isinstance(c, WallClock))
    assert 0 < record["wall_s"] == pytest.approx(clock.elapsed(), abs=1e-6)
    started, ended = (datetime.datetime.fromisoformat(record[k].replace("Z", "+00:00")) for k in ("started", "ended"))
    assert started <= ended <= datetime.datetime.now(datetime.timezone.utc)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert record["git"]["commit"] == (head or None)
    machine = record["machine"]
    assert machine["cores"] == os.cpu_count() and machine["torch_threads"] == torch.get_num_threads()
    assert machine["gpu"] is None and machine["cpu"]
    assert set(machine["cpu_signature"]) == {"family", "model", "isa"}  # tells a Zen 4 from a Zen 5 "AMD EPYC"


def test_early_stop_is_stopped_not_finished(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    _trainer(run_dir, StopAt(2)).fit(Regression())
    record = read_record(run_dir)
    assert record["status"] == "stopped" and record["step"] < 8


@pytest.mark.parametrize(
    ("error", "raised", "status"),
    [(RuntimeError("boom"), RuntimeError, "failed"), (KeyboardInterrupt(), SystemExit, "interrupted")],
)
def test_exception_or_ctrl_c_is_recorded_as_not_finished(tmp_path, error, raised, status):
    run_dir = tmp_path / "runs" / "toy"
    sigint = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(raised):  # Lightning turns Ctrl-C into a graceful exit(1)
            _trainer(run_dir, Raise(3, error)).fit(Regression())
    finally:
        signal.signal(signal.SIGINT, sigint)  # Lightning ignores SIGINT after a Ctrl-C; give pytest its own back
    record = read_record(run_dir)
    assert record["status"] == status and record["step"] == 3 and record["ended"] is not None


class FailInSetup(pl.Callback):
    """Raises while the fit sets up, before it starts: as a data or checkpoint error does."""

    def setup(self, trainer, pl_module, stage):
        raise RuntimeError("setup failed")


def test_a_fit_that_fails_before_it_starts_leaves_no_record_and_an_old_one_as_it_was(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    with pytest.raises(RuntimeError, match="setup failed"):
        _trainer(run_dir, FailInSetup()).fit(Regression())
    assert read_record(run_dir) is None and not run_dir.exists()
    _trainer(run_dir).fit(Regression())
    finished = read_record(run_dir)
    with pytest.raises(RuntimeError, match="setup failed"):
        _trainer(run_dir, FailInSetup()).fit(Regression())
    assert read_record(run_dir) == finished


def test_test_adds_its_command_and_metrics_to_the_fit_record(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    model = Regression()
    _trainer(run_dir).fit(model)
    fit_record = read_record(run_dir)
    test_argv = ["anyformer", "toy", "test", "--config", "experiments/toy.yaml", "--ckpt_path", "last.ckpt"]
    pl.Trainer(logger=False, enable_progress_bar=False, callbacks=[RunRecord(run_dir, "toy", test_argv)]).test(model)
    record = read_record(run_dir)

    x, y = _data(2).tensors
    with torch.no_grad():
        expected = nn.functional.mse_loss(model.net(x), y).item()
    assert record["metrics"] == fit_record["metrics"] | {"test_loss": pytest.approx(expected, rel=1e-5)}
    assert record["test"]["argv"] == test_argv and record["test"]["started"] <= record["test"]["ended"]
    assert {k: v for k, v in record.items() if k not in ("test", "metrics")} == {
        k: v for k, v in fit_record.items() if k != "metrics"
    }


def test_resumed_fit_keeps_its_first_start(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    checkpoints = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True)
    with pytest.raises(RuntimeError):
        _trainer(run_dir, checkpoints, Raise(6, RuntimeError("killed")), enable_checkpointing=True).fit(Regression())
    first = read_record(run_dir)
    assert first["status"] == "failed"
    resumed = ModelCheckpoint(dirpath=run_dir / "checkpoints", save_last=True)
    _trainer(run_dir, resumed, enable_checkpointing=True).fit(Regression(), ckpt_path=run_dir / "checkpoints/last.ckpt")
    record = read_record(run_dir)
    assert record["status"] == "finished" and record["step"] == 8
    assert record["started"] == first["started"] and record["ended"] >= first["ended"]


def test_fast_dev_run_writes_no_record(tmp_path):
    run_dir = tmp_path / "runs" / "toy"
    _trainer(run_dir, fast_dev_run=True).fit(Regression())
    assert read_record(run_dir) is None


def test_config_paths_reads_both_spellings():
    assert config_paths(["fit", "--config", "a.yaml", "--config=b.yaml", "--x", "1"]) == ["a.yaml", "b.yaml"]


def test_an_evaluation_records_its_metrics_and_never_overwrites_another_commands_run(tmp_path):
    runs = tmp_path / "runs"
    argv = ["anyformer", "decode-eval", "--ckpt", "m.ckpt", "--run-name", "ev"]
    run_dir = evaluation_dir("ev", argv, runs)
    assert run_dir == runs / "ev" and not run_dir.exists()  # checked, not created, before the evaluation
    record_evaluation(run_dir, argv, {"gen_ppl": torch.tensor(2.5).item(), "distinct_1": 1}, "2026-01-01T00:00:00Z",
                      "2026-01-01T00:00:09Z")  # fmt: skip
    record = read_record(run_dir)
    assert record["status"] == "finished" and record["task"] == "decode-eval" and record["argv"] == argv
    assert record["metrics"] == {"gen_ppl": 2.5, "distinct_1": 1.0}
    assert (record["started"], record["ended"]) == ("2026-01-01T00:00:00Z", "2026-01-01T00:00:09Z")
    assert record["machine"]["cores"] == os.cpu_count() and set(record["git"]) == {"commit", "dirty"}
    assert not {"params", "wall_s", "step"} & set(record)  # facts of a fit, which an evaluation has not

    record_evaluation(run_dir, argv, {"gen_ppl": 3.0}, "2026-01-02T00:00:00Z", "2026-01-02T00:00:01Z")  # rerun
    assert read_record(run_dir)["metrics"] == {"gen_ppl": 3.0}
    before = (run_dir / "run.json").read_text()
    with pytest.raises(UsageError, match=r"runs/ev holds a run made by `anyformer decode-eval --ckpt m\.ckpt"):
        record_evaluation(run_dir, [*argv, "--seed", "1"], {"gen_ppl": 1.0}, "x", "y")
    assert (run_dir / "run.json").read_text() == before
    write_record(runs / "fit", {"format": 1, "argv": ARGV, "status": "finished"})
    with pytest.raises(UsageError, match="runs/fit holds a run made by `anyformer toy fit"):
        evaluation_dir("fit", argv, runs)
    for bad in ("a/b", ".hidden", ""):
        with pytest.raises(UsageError, match="must be a plain folder name"):
            evaluation_dir(bad, argv, runs)
