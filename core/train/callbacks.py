"""Callbacks the CLI adds to every run."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.trainer.states import TrainerFn

from anyformer.core.train import run_record
from anyformer.core.train.csv_logger import ResumableCSVLogger


class WallClock(pl.Callback):
    """Logs ``wall_s``, the seconds spent in ``fit`` so far, with every validation.

    Learning curves can then be compared at equal wall-clock time, not only at equal steps.
    The elapsed time is kept in the checkpoint, so a resumed run continues the count instead
    of restarting it (time lost between the kill and the resume is not counted).
    """

    def __init__(self) -> None:
        self.elapsed_before_start = 0.0
        self._started: float | None = None

    def elapsed(self) -> float:
        running = time.monotonic() - self._started if self._started is not None else 0.0
        return self.elapsed_before_start + running

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.monotonic()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.elapsed_before_start, self._started = self.elapsed(), None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._started is None:
            return
        pl_module.log("wall_s", self.elapsed(), on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"elapsed": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.elapsed_before_start = float(state_dict["elapsed"])


class CompileModel(pl.Callback):
    """Runs the task's network through ``torch.compile`` (``anyformer <task> fit --compile``).

    ``nn.Module.compile`` compiles in place: parameter names, checkpoints and the tools that load
    them are the same as without it. The first steps and the first validation are slow while the
    graphs compile. On the 2-core CPU of experiments/results/bench.md a compiled training step was
    only ~1% faster than eager (matmuls dominate there); fused elementwise kernels matter more on GPUs.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        model = getattr(pl_module, "model", None)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"--compile needs the task's network in .model; {type(pl_module).__name__} has none")
        model.compile()


class RunRecord(pl.Callback):
    """Keeps ``<run_dir>/run.json`` (see ``anyformer.core.train.run_record``) up to date for ``fit`` and ``test``.

    ``fit`` writes the record when it starts (status ``running``), and when it ends: ``finished``
    only if it reached ``max_steps``/``max_epochs``, ``stopped`` if something else ended it early,
    ``failed``/``interrupted`` on an exception/Ctrl-C. A fit that fails before it starts (in setup,
    a bad checkpoint, a data error) writes nothing: it trained nothing, and a resumed run keeps the
    record of its last attempt. ``test`` adds its command and ``test_*`` metrics to the same record.
    ``fast_dev_run`` smoke tests write nothing: they are not results.

    Args:
        run_dir: The run's folder, ``runs/<name>``.
        task: The task name (``gpt``, ``vit``, ...).
        argv: The command line as typed, starting ``["anyformer", task, ...]``.
    """

    def __init__(self, run_dir: str | Path, task: str, argv: list[str]) -> None:
        self.run_dir = Path(run_dir)
        self.task = task
        self.argv = list(argv)
        self._test_started: str | None = None
        self._fit_started = False

    def _skip(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.fast_dev_run) or not trainer.is_global_zero

    def _new_record(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        return {
            "format": run_record.FORMAT_VERSION,
            "run_name": self.run_dir.name,
            "task": self.task,
            "argv": self.argv,
            "config": run_record.config_paths(self.argv),
            "git": run_record.git_state(),
            "machine": run_record.machine(trainer.strategy.root_device),
            "params": sum(p.numel() for p in pl_module.parameters()),
            "started": run_record.utc_now(),
            "ended": None,
            "status": "running",
            "step": trainer.global_step,
            "wall_s": None,
            "metrics": {},
        }

    def _logged(self, trainer: pl.Trainer, prefix: str) -> dict[str, float]:
        """The latest value of every logged scalar metric whose name starts with ``prefix``."""
        return {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(prefix) and value.numel() == 1
        }

    def _end_fit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, status: str) -> None:
        record = run_record.read_record(self.run_dir) or self._new_record(trainer, pl_module)
        clock = next((c for c in trainer.callbacks if isinstance(c, WallClock)), None)
        record["metrics"].update(self._logged(trainer, "val_"))
        record.update(status=status, ended=run_record.utc_now(), step=trainer.global_step)
        record["wall_s"] = clock.elapsed() if clock is not None else None
        run_record.write_record(self.run_dir, record)
        self._fit_started = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer):
            return
        record = self._new_record(trainer, pl_module)
        previous = run_record.read_record(self.run_dir) if trainer.ckpt_path else None
        if previous is not None:  # a resumed run keeps its first start and its metrics so far
            record.update(started=previous["started"], metrics=previous["metrics"])
        run_record.write_record(self.run_dir, record)
        self._fit_started = True

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer):
            return
        max_steps, max_epochs = trainer.max_steps, trainer.max_epochs
        reached = (max_steps != -1 and trainer.global_step >= max_steps) or (
            max_epochs not in (None, -1) and trainer.current_epoch >= max_epochs
        )
        self._end_fit(trainer, pl_module, "finished" if reached else "stopped")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self._skip(trainer) or trainer.state.fn != TrainerFn.FITTING or not self._fit_started:
            return
        self._end_fit(trainer, pl_module, "interrupted" if isinstance(exception, KeyboardInterrupt) else "failed")

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test_started = run_record.utc_now()

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._skip(trainer):
            return
        record = run_record.read_record(self.run_dir)
        if record is None:  # tested without a recorded fit: keep the test, the fit stays unknown
            record = self._new_record(trainer, pl_module) | {"argv": [], "config": [], "status": None}
        record["metrics"].update(self._logged(trainer, "test_"))
        record["test"] = {
            "argv": self.argv,
            "git": run_record.git_state(),
            "machine": run_record.machine(trainer.strategy.root_device),
            "started": self._test_started,
            "ended": run_record.utc_now(),
        }
        run_record.write_record(self.run_dir, record)


class RandomState(pl.Callback):
    """Keeps the global random states (Python, NumPy, torch CPU and CUDA) in every checkpoint and
    puts them back when a resumed fit starts training, so random ops (dropout, masking) continue
    the sequence an uninterrupted run would have drawn. Lightning restores weights, optimizer,
    schedule and loop counters, but not these.

    The states are stored as tensors, ints and lists, so ``torch.load(weights_only=True)`` still
    reads the checkpoint.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state(legacy=False)
        return {
            "python": random.getstate(),
            "numpy": {
                "key": numpy_state["state"]["key"].tolist(),
                "pos": int(numpy_state["state"]["pos"]),
                "has_gauss": int(numpy_state["has_gauss"]),
                "gauss": float(numpy_state["gauss"]),
            },
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied in on_train_start, not here: the sanity check and the data loaders run between
        # the restore and the first training step and must not shift the restored sequence.
        self._to_restore = state_dict

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        random.setstate(state["python"])
        numpy_state = state["numpy"]
        np.random.set_state(
            {
                "bit_generator": "MT19937",
                "state": {"key": np.asarray(numpy_state["key"], dtype=np.uint32), "pos": numpy_state["pos"]},
                "has_gauss": numpy_state["has_gauss"],
                "gauss": numpy_state["gauss"],
            }
        )
        torch.set_rng_state(state["torch"].cpu())
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([cuda_state.cpu() for cuda_state in state["cuda"]])


class ResumeLogs(pl.Callback):
    """Lets each :class:`~anyformer.core.train.csv_logger.ResumableCSVLogger` keep its rows across a resumed fit.

    Before every checkpoint is written, the logger writes the rows it holds (CSVLogger otherwise
    waits for ``flush_logs_every_n_steps``), so every row up to the checkpoint a run resumes from
    is on disk whenever the checkpoint is. When training starts, the logger is told the step it
    starts from, and keeps the rows logged before it (a fresh fit starts at step 0 and keeps none).
    """

    @staticmethod
    def _csv_loggers(trainer: pl.Trainer) -> list[ResumableCSVLogger]:
        return [logger for logger in trainer.loggers if isinstance(logger, ResumableCSVLogger)]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for logger in self._csv_loggers(trainer):
            logger.resume_at(trainer.global_step)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in self._csv_loggers(trainer):
            logger.save()


class LatestCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at every validation: the latest state, what ``--ckpt_path last`` resumes.

    Lightning's ``save_last`` refreshes ``last.ckpt`` only when a top-k file is saved, so beside a
    ``val_loss`` monitor it holds the last *improvement*; this callback (no monitor, one file named
    ``last``) rewrites it every time. Its own ``state_key`` lets other checkpoint callbacks with the
    same settings run beside it.
    """

    def __init__(self) -> None:
        super().__init__(monitor=None, save_top_k=1, filename="last", enable_version_counter=False)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(latest=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A fit that stops between validations (max_steps before the next one) still leaves its
        # final state as last.ckpt, as Lightning's save_last does at the end of training; skipped
        # where Lightning skips every save (fast_dev_run, already saved at this step).
        if trainer.global_step and not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
