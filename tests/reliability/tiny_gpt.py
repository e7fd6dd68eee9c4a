"""A tiny GPT fit through the real ``anyformer gpt fit`` command, shared by the reliability tests.

Two layers, d=32, a character tokenizer on the first 45,000 characters of Python's own
documentation (offline), batches of 8 windows of 32 tokens; 40 steps with a validation and a
checkpoint every 10, and epochs of 15 batches, so checkpoints fall both inside an epoch
(steps 10, 20) and on an epoch boundary (step 30).
"""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch

from anyformer.core.cli.main import main as cli_main
from anyformer.text.corpus import load_corpus

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "experiments" / "text" / "gpt_demo.yaml"
STEPS, VAL_EVERY, BATCHES_PER_EPOCH = 40, 10, 15


def write_corpus(folder: Path) -> Path:
    """The corpus file; cut where every val character also occurs in train (char tokenizer)."""
    path = folder / "corpus.txt"
    path.write_text(load_corpus("pydoc")[:45_000], encoding="utf-8")
    return path


def keep_every_checkpoint(folder: Path) -> dict[str, Any]:
    """A second ModelCheckpoint that keeps the checkpoint of every validation as ``step=N.ckpt``."""
    return {
        "class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(folder), "filename": "{step}", "save_top_k": -1},
    }


def fit_args(
    run_name: str,
    corpus: Path,
    overrides: dict[str, Any] | None = None,
    callbacks: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Arguments of ``anyformer gpt fit`` for the tiny run; ``overrides`` maps ``section.key`` to a value."""
    settings = {
        "data.source": str(corpus),
        "data.tokenizer": "char",
        "data.context_len": 32,
        "data.batch_size": 8,
        "data.train_batches_per_epoch": BATCHES_PER_EPOCH,
        "data.val_batches": 2,
        "model.config.transformer.dim": 32,
        "model.config.transformer.n_layers": 2,
        "model.optim.warmup_steps": 5,
        "trainer.max_steps": STEPS,
        "trainer.val_check_interval": VAL_EVERY,
        "trainer.check_val_every_n_epoch": "null",
        "trainer.limit_val_batches": 2,
        "trainer.log_every_n_steps": 5,
        "trainer.enable_progress_bar": "false",
    } | (overrides or {})
    args = ["gpt", "fit", "--config", str(CONFIG), "--run-name", run_name]
    for key, value in settings.items():
        args += [f"--{key}", str(value)]
    if callbacks:
        args += ["--trainer.callbacks", json.dumps(callbacks)]
    return args


def fit(args: list[str]) -> int:
    """Run ``anyformer <args>`` in this process (``runs/`` lands in the current folder)."""
    return cli_main(args)


def subprocess_env() -> dict[str, str]:
    """Environment of a child ``python -m anyformer.core.cli.main``: one BLAS thread, ``tests`` importable."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def cli_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "anyformer.core.cli.main", *args]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def drop_columns(rows: list[dict[str, str]], *columns: str) -> list[dict[str, str]]:
    return [{key: value for key, value in row.items() if key not in columns} for row in rows]


def val_rows(rows: list[dict[str, str]]) -> list[tuple[str, str, str]]:
    """(step, val_loss, val_bpc) of every validation, as logged (strings, compared exactly)."""
    return [(row["step"], row["val_loss"], row["val_bpc"]) for row in rows if row.get("val_loss")]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]


class Throttle(pl.Callback):
    """Sleeps after every training batch, so a run lives long enough to be killed part-way."""

    def __init__(self, seconds: float = 0.03) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(self.seconds)


class GradientProbe(pl.Callback):
    """Records the global gradient norm before Lightning clips it, and after the optimizer step
    (the gradients it stepped with stay until the next batch zeroes them)."""

    before_clip: ClassVar[list[float]] = []
    stepped: ClassVar[list[float]] = []

    @staticmethod
    def _norm(module: torch.nn.Module) -> float:
        return torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None]).item()

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        GradientProbe.before_clip.append(self._norm(pl_module))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        GradientProbe.stepped.append(self._norm(pl_module))


class DtypeProbe(pl.Callback):
    """Records the dtype of the LM head's output (the logits) in training steps."""

    logits: ClassVar[list[torch.dtype]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def record(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
            if module.training:
                DtypeProbe.logits.append(output.dtype)

        pl_module.model.lm_head.register_forward_hook(record)
