"""Whole fits: ``anyformer gpt fit`` timed from the inside, beside the raw training step of its own model.

The CLI runs in a fresh process, in a temporary folder (its run folder goes nowhere), for a fixed
number of steps with validation once at the end, with Lightning's SimpleProfiler on and
:class:`FitClock` among the callbacks. FitClock times the bench's raw step
(``bench.train.train_step``: forward, cross-entropy, backward, fused AdamW on one fixed batch) on a
copy of the fit's own model just before the fit starts and just after it ends, and writes a JSON
record: the fit's wall time, from ``on_fit_start`` to ``on_fit_end`` (the sanity check is off;
process start, imports, argument parsing and data preparation come before it, tear-down after it),
the time inside validation, and the profiler's summed durations. :func:`account` splits the wall time
outside validation into the training step (forward, backward, gradient clipping, optimizer), data
loading, checkpointing, and what is left: Lightning's loop, logging and callbacks.

    python -m anyformer.experiments.bench --only fit    # the main job (gpt-cpu) and gpt-small
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from anyformer.core.data import status
from anyformer.experiments.bench.peers import Contender
from anyformer.experiments.bench.report import Row, Target, number
from anyformer.experiments.bench.timing import Runtime
from anyformer.experiments.bench.train import train_step

FIT_VS_RAW = Target(0.9)
MAIN_JOB = "text/gpt_shakespeare_char.yaml"  # under experiments/: its model is gpt-cpu's size
_GPT_SMALL_MODEL = {"dim": 384, "n_layers": 6, "n_heads": 6, "position": "learned", "ffn": "gelu", "mlp_ratio": 4}
FIT_OVERRIDES: dict[str, list[str]] = {
    # The main job as configured (RoPE, SwiGLU, 4 x 128, batch 12 x 64): only its length changes.
    "gpt-cpu": [],
    # The same job with the bench's gpt-small model (learned positions, GELU MLP) and batch.
    "gpt-small": [
        *(arg for key, value in _GPT_SMALL_MODEL.items() for arg in (f"--model.config.transformer.{key}", str(value))),
        *("--data.context_len", "256", "--data.batch_size", "8"),
    ],
}
FIT_STEPS = {"gpt-cpu": 250, "gpt-small": 100}  # 250: the main job's validation interval
QUICK_FIT_STEPS = {"gpt-cpu": 30, "gpt-small": 8}
PARTS = (
    "forward", "backward", "gradient clipping", "optimizer", "data loading", "checkpointing", "Lightning & logging",
)  # fmt: skip
STEP_PARTS = PARTS[:4]
"""The parts that make up Lightning's ``optimizer_step``: what the raw step also does, plus clipping."""
_CONTAINERS = ("run_training_epoch", "run_training_batch")


class FitClock(pl.Callback):
    """Times a fit (wall, validation) and the raw step of a copy of its model; writes JSON to ``out``.

    Args:
        out: the JSON file to write at the end of the fit.
        raw_steps: raw steps timed before the fit and again after it (after ``warmup_steps`` each).
        warmup_steps: untimed raw steps first (the copy's AdamW state, oneDNN's kernels).
    """

    def __init__(self, out: str, raw_steps: int = 10, warmup_steps: int = 2) -> None:
        self.out = Path(out)
        self.raw_steps, self.warmup_steps = raw_steps, warmup_steps
        self.raw_step_s: list[float] = []
        self.validation_s = 0.0
        self._start = self._validation_start = 0.0

    def _time_raw_steps(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = copy.deepcopy(pl_module.model)
        data = trainer.datamodule
        generator = torch.Generator().manual_seed(0)  # leaves the fit's random state alone
        shape = (data.batch_size, data.context_len + 1)
        ids = torch.randint(0, pl_module.config.vocab_size, shape, generator=generator)
        runtime = Runtime(threads=torch.get_num_threads())
        bf16 = "bf16" in str(trainer.precision)
        step = train_step(Contender("fit", model, model), ids[:, :-1], ids[:, 1:], runtime, cpu_bf16=bf16)
        for _ in range(self.warmup_steps):
            step()
        for _ in range(self.raw_steps):
            start = time.perf_counter()
            step()
            self.raw_step_s.append(time.perf_counter() - start)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._time_raw_steps(trainer, pl_module)
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning calls the checkpoint callbacks after every other one: their saves fall outside this.
        self.validation_s += time.perf_counter() - self._validation_start

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        wall_s = time.perf_counter() - self._start
        self._time_raw_steps(trainer, pl_module)
        durations = getattr(trainer.profiler, "recorded_durations", {})
        record = {
            "wall_s": wall_s,
            "validation_s": self.validation_s,
            "steps": trainer.global_step,
            "batch": trainer.datamodule.batch_size,
            "context": trainer.datamodule.context_len,
            "precision": str(trainer.precision),
            "raw_step_s": self.raw_step_s,
            "durations": {name: sum(values) for name, values in durations.items()},
        }
        self.out.write_text(json.dumps(record, indent=1))


def _summed(durations: dict[str, float], prefix: str, suffix: str) -> float:
    return sum(value for name, value in durations.items() if name.startswith(prefix) and name.endswith(suffix))


def account(durations: dict[str, float], wall_s: float, validation_s: float) -> dict[str, float]:
    """Seconds of the fit outside validation per part of ``PARTS``, from SimpleProfiler's summed
    durations: the parts add up to ``wall_s - validation_s``, the last one being what the others
    leave (Lightning's loop, logging, progress bar and callbacks; negative only if parts overlap)."""
    forward = _summed(durations, "[Strategy]", ".training_step")
    backward = _summed(durations, "[Strategy]", ".backward")
    clipping = _summed(durations, "[LightningModule]", ".configure_gradient_clipping")
    step = _summed(durations, "[LightningModule]", ".optimizer_step")  # runs the closure: all four parts
    parts = {
        "forward": forward,
        "backward": backward,
        "gradient clipping": clipping,
        "optimizer": step - forward - backward - clipping,  # zero_grad, the closure's hooks and AdamW
        "data loading": durations.get("[_TrainingEpochLoop].train_dataloader_next", 0.0),
        "checkpointing": durations.get("save_checkpoint", 0.0),
    }
    parts["Lightning & logging"] = wall_s - validation_s - sum(parts.values())
    return parts


def largest_other_actions(durations: dict[str, float], n: int = 3) -> list[tuple[str, float]]:
    """The ``n`` longest profiled actions inside "Lightning & logging": none that :func:`account` counts
    elsewhere, no container of them, and nothing of validation or checkpointing."""
    counted = (".training_step", ".backward", ".configure_gradient_clipping", ".optimizer_step", "optimizer_zero_grad")
    others = {
        name: value
        for name, value in durations.items()
        if name not in (*_CONTAINERS, "save_checkpoint", "[_TrainingEpochLoop].train_dataloader_next")
        and not name.endswith(counted)
        and "Checkpoint{" not in name
        and "FitClock" not in name  # the bench's own timing, mostly outside the wall
        and not name.endswith((".on_save_checkpoint", ".state_dict"))  # inside save_checkpoint
        and "valid" not in name
        and "val_" not in name
        and not name.endswith((".setup", ".prepare_data", ".teardown"))
    }
    return sorted(others.items(), key=lambda item: -item[1])[:n]


@dataclass(frozen=True)
class FitTiming:
    """One whole fit and the raw step of its model, as :class:`FitClock` recorded them."""

    shape: str
    steps: int
    batch: int
    context: int
    wall_s: float
    validation_s: float
    raw_step_s: float
    """Median seconds of the raw steps timed before and after the fit."""
    parts: dict[str, float]
    """Seconds per part of ``PARTS`` (:func:`account`)."""
    others: list[tuple[str, float]]
    """The longest profiled actions inside "Lightning & logging"."""

    @classmethod
    def from_record(cls, shape: str, record: dict[str, Any]) -> FitTiming:
        durations = record["durations"]
        return cls(
            shape, record["steps"], record["batch"], record["context"], record["wall_s"], record["validation_s"],
            statistics.median(record["raw_step_s"]), account(durations, record["wall_s"], record["validation_s"]),
            largest_other_actions(durations),
        )  # fmt: skip

    @property
    def tokens_per_step(self) -> int:
        return self.batch * self.context

    @property
    def fit_s(self) -> float:
        """Wall time of the fit without validation (checkpointing included)."""
        return self.wall_s - self.validation_s

    @property
    def tokens_per_s(self) -> float:
        return self.steps * self.tokens_per_step / self.fit_s

    @property
    def raw_tokens_per_s(self) -> float:
        return self.tokens_per_step / self.raw_step_s

    @property
    def ratio(self) -> float:
        return self.tokens_per_s / self.raw_tokens_per_s

    def ms_per_step(self) -> dict[str, float]:
        return {part: seconds / self.steps * 1e3 for part, seconds in self.parts.items()}


def fit_command(out: Path, steps: int, val_batches: int, raw_steps: int, overrides: list[str]) -> list[str]:
    """``anyformer gpt fit`` of the main job for ``steps`` steps, validated once at the end, profiled."""
    import anyformer.experiments

    config = Path(anyformer.experiments.__file__).resolve().parent / MAIN_JOB
    return [
        sys.executable, "-m", "anyformer.core.cli.main", "gpt", "fit", "--config", str(config), *overrides,
        "--run-name", "bench_fit", "--trainer.accelerator", "cpu", "--trainer.max_steps", str(steps),
        "--trainer.val_check_interval", str(steps), "--trainer.limit_val_batches", str(val_batches),
        "--trainer.num_sanity_val_steps", "0", "--trainer.profiler", "simple",
        f"--trainer.callbacks+={FitClock.__module__}.FitClock", f"--trainer.callbacks.out={out}",
        f"--trainer.callbacks.raw_steps={raw_steps}",
    ]  # fmt: skip


def run_fit(
    shape: str, runtime: Runtime, steps: int, val_batches: int, raw_steps: int, overrides: list[str] | None = None
) -> FitTiming:
    """Run the fit of ``shape`` (``FIT_OVERRIDES``, or ``overrides``) in a fresh process and read its record."""
    overrides = FIT_OVERRIDES[shape] if overrides is None else overrides
    env = {**os.environ, "OMP_NUM_THREADS": str(runtime.threads)}
    with tempfile.TemporaryDirectory(prefix="anyformer-bench-fit-") as folder:
        out = Path(folder) / "fit.json"
        command = fit_command(out, steps, val_batches, raw_steps, overrides)
        result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not out.exists():
            raise RuntimeError(f"the {shape} fit failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return FitTiming.from_record(shape, json.loads(out.read_text()))


def fit_timings(shapes: list[str], runtime: Runtime, quick: bool) -> list[FitTiming]:
    """The whole fits of ``shapes`` (those of ``FIT_OVERRIDES``); none, with a message, without the data."""
    if runtime.device != "cpu":
        print("whole fits: skipped, they are measured on the CPU only", file=sys.stderr)
        return []
    data = status("tinyshakespeare")  # the data layer's lookup: $ANYFORMER_DATA, then the user cache
    if not data.present:
        print(f"whole fits: skipped, Tiny Shakespeare is not in {data.folder} (the fits never download it)",
              file=sys.stderr)  # fmt: skip
        return []
    steps = QUICK_FIT_STEPS if quick else FIT_STEPS
    return [run_fit(s, runtime, steps[s], 2 if quick else 20, 5 if quick else 20) for s in shapes]


def fit_rows(timings: list[FitTiming]) -> list[Row]:
    """One row per fit: its tokens/s outside validation over the raw step's, target >= 0.9."""
    return [
        Row(t.shape, f"whole fit, {t.steps} steps, excl. validation", "tokens/s", t.tokens_per_s,
            "raw step, same model", t.raw_tokens_per_s, target=FIT_VS_RAW)
        for t in timings
    ]  # fmt: skip


def render_fits(timings: list[FitTiming]) -> str:
    """The section of bench.md that says where each fit's time goes."""
    lines = [
        "## Whole fits: where `anyformer gpt fit`'s time goes",
        "",
        f"`anyformer gpt fit --config experiments/{MAIN_JOB}` (gpt-cpu: the main job as configured; gpt-small: "
        "its model and batch set to the bench's gpt-small), validation and checkpoints once at the end, "
        "Lightning's SimpleProfiler on. Wall: `on_fit_start` to `on_fit_end` (process start, imports, parsing "
        "and data preparation excluded); tokens/s over the wall minus validation. Raw: the bench's training "
        "step on a copy of the same model, median of the steps timed just before and just after the fit. "
        "The parts add up to the wall outside validation; Lightning & logging is what the others leave.",
        "",
        "| shape | steps | tokens/step | fit s | validation s | fit tokens/s | raw tokens/s | ratio | raw ms/step | "
        + " | ".join(f"{part} ms/step" for part in PARTS)
        + " |",
        "|" + "---|" * (9 + len(PARTS)),
    ]
    for t in timings:
        cells = [
            t.shape, str(t.steps), f"{t.tokens_per_step:,}", f"{t.fit_s:.3g}", f"{t.validation_s:.3g}",
            f"{t.tokens_per_s:,.0f}", f"{t.raw_tokens_per_s:,.0f}", f"{t.ratio:.2f}", number(t.raw_step_s * 1e3),
            *(number(value) for value in t.ms_per_step().values()),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for t in timings:
        others = ", ".join(f"`{name}` {number(seconds / t.steps * 1e3)}" for name, seconds in t.others)
        lines.append(f"- {t.shape}: {explain_fit(t)} Largest profiled actions in Lightning & logging (ms/step): "
                     f"{others or 'none'}.")  # fmt: skip
    return "\n".join(lines)


def explain_fit(timing: FitTiming) -> str:
    """A sentence from the numbers: the fit's step against the raw step, and the largest cost beside it."""
    parts = timing.ms_per_step()
    step_ms = sum(parts[part] for part in STEP_PARTS)
    raw_ms = timing.raw_step_s * 1e3
    outside = {part: parts[part] for part in PARTS if part not in STEP_PARTS}
    largest = max(outside, key=outside.get)
    return (
        f"the fit's training step takes {number(step_ms)} ms against the raw step's {number(raw_ms)} ms "
        f"({'+' if step_ms >= raw_ms else '-'}{number(abs(step_ms - raw_ms))} ms, of which gradient clipping "
        f"{number(parts['gradient clipping'])}); beside the step, {largest} costs the most "
        f"({number(outside[largest])} ms/step, {outside[largest] * timing.steps / 1e3 / timing.fit_s:.1%} of the fit)."
    )
