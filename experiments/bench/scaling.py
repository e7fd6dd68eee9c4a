"""Scaling: how a training step's time and peak memory grow with sequence length and with width.

Two sweeps of a GPT with 64-wide heads and a fixed number of tokens per step (the batch is tokens / T),
so that along the sequence sweep the weights' cost per step stays the same and what grows is
attention's T^2: sequence length 64 -> 2048 at width 384, and width 128 -> 768 at sequence 256 (the full
grid's 6 layers at width 384 and T=256 are gpt-small). At each point anyformer and the minimal GPT
(nanoGPT's model.py written plainly: the fastest peer of bench.md at both CPU shapes) take turns
(``bench.timing.interleaved``; forward + backward + fused AdamW), each one's peak memory is measured in a
fresh process (``bench.memory``), and attention's share of the step is read from torch.profiler: the
self CPU time of the ``scaled_dot_product`` operators (forward and backward: scores, softmax and their
use, not the q/k/v projections) over the step's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from anyformer.experiments.bench.memory import MIB, gpt_spec, measure_in_subprocess
from anyformer.experiments.bench.peers import GPT_PEERS
from anyformer.experiments.bench.profiling import StepProfile, profile_steps
from anyformer.experiments.bench.report import number
from anyformer.experiments.bench.shapes import GPTShape
from anyformer.experiments.bench.timing import Runtime, interleaved
from anyformer.experiments.bench.train import gpt_batch, gpt_flops_per_token, train_step

IMPLEMENTATIONS = ("anyformer", "minimal")
PROFILED_STEPS = 2  # for attention's share of the step


@dataclass(frozen=True)
class ScalingGrid:
    """The points of the two sweeps."""

    seq_lens: tuple[int, ...]
    """Sequence lengths of the sequence sweep (at ``width``)."""
    widths: tuple[int, ...]
    """Widths of the width sweep (at ``seq_len``); multiples of ``head_dim``."""
    width: int
    seq_len: int
    n_layers: int
    tokens_per_step: int
    """Batch x sequence length at every point: a multiple of every sequence length."""
    head_dim: int = 64
    vocab: int = 65

    def shape(self, context: int, dim: int) -> GPTShape:
        if self.tokens_per_step % context or dim % self.head_dim:
            raise ValueError(
                f"ScalingGrid: T={context} must divide tokens_per_step={self.tokens_per_step} and "
                f"D={dim} be a multiple of head_dim={self.head_dim}"
            )
        batch = self.tokens_per_step // context
        return GPTShape(batch, context, self.n_layers, dim // self.head_dim, dim, self.vocab)

    def points(self) -> list[tuple[str, GPTShape]]:
        """(sweep, shape) of every point: the sequence sweep, then the width sweep."""
        return [("sequence", self.shape(t, self.width)) for t in self.seq_lens] + [
            ("width", self.shape(self.seq_len, d)) for d in self.widths
        ]


FULL_GRID = ScalingGrid((64, 128, 256, 512, 1024, 2048), (128, 256, 384, 512, 768), 384, 256, 6, 2048)
QUICK_GRID = ScalingGrid((64, 256, 1024), (128, 256, 384), 128, 256, 2, 1024)


@dataclass(frozen=True)
class ScalingPoint:
    """One point of a sweep: the shape, its FLOPs, and per implementation time, attention share, memory."""

    sweep: str
    shape: GPTShape
    flops_per_step: float
    """Training FLOPs of the step (``bench.train.gpt_flops_per_token`` x tokens)."""
    attention_flop_share: float
    """Share of those FLOPs in attention's scores and their use (12 L D T per token)."""
    step_s: dict[str, float]
    attention_share: dict[str, float]
    """Measured share of the step's time in the SDPA operators (NaN where not profiled)."""
    peak_mib: dict[str, float]
    """Peak memory of two training steps (NaN where not measured)."""


def is_attention(name: str) -> bool:
    """Whether a profiler event is the attention kernel (SDPA, forward or backward, any backend)."""
    name = name.lower()
    return "scaled_dot_product" in name or "scaleddotproduct" in name or "flash_attention" in name


def attention_share(profile: StepProfile) -> float:
    """Self CPU time of the attention operators over the step's (the wall, or the operators' sum if larger)."""
    whole = max(profile.wall_us, sum(op.self_us for op in profile.ops))
    return sum(op.self_us for op in profile.ops if is_attention(op.name)) / whole if whole else math.nan


def _driver(step):
    def drive(tick, n_ticks: int) -> None:
        for _ in range(n_ticks):
            step()
            tick()

    return drive


def measure_point(sweep: str, shape: GPTShape, runtime: Runtime, memory: bool) -> ScalingPoint:
    """Time, attention share and (with ``memory``) peak memory of each implementation at ``shape``."""
    torch.manual_seed(0)
    inputs, targets = gpt_batch(shape)
    contenders = {name: GPT_PEERS[name](shape) for name in IMPLEMENTATIONS}
    steps = {name: train_step(c, inputs, targets, runtime) for name, c in contenders.items()}
    seconds = interleaved(steps, runtime)
    shares = {
        name: attention_share(profile_steps(name, _driver(step), skip=0, active=PROFILED_STEPS))
        if runtime.device == "cpu"
        else math.nan  # CPU self time says nothing of a GPU's kernels
        for name, step in steps.items()
    }
    mib = {
        name: measure_in_subprocess(gpt_spec(shape), name, runtime) / MIB if memory else math.nan
        for name in IMPLEMENTATIONS
    }
    per_token = gpt_flops_per_token(contenders["anyformer"].model, shape)
    attention = 12 * shape.n_layers * shape.dim * shape.context
    flops = per_token * shape.batch * shape.context
    return ScalingPoint(sweep, shape, flops, attention / per_token, seconds, shares, mib)


def scaling_points(grid: ScalingGrid, runtime: Runtime, memory: bool = True) -> list[ScalingPoint]:
    """Every point of ``grid``, in the order of :meth:`ScalingGrid.points`."""
    return [measure_point(sweep, shape, runtime, memory) for sweep, shape in grid.points()]


def _cell(value: float, fmt: str) -> str:
    return "n/a" if math.isnan(value) else format(value, fmt)


def render_scaling(points: list[ScalingPoint], grid: ScalingGrid, plot: str | None) -> str:
    """The section of bench.md: how it was measured, one table row per point, the plot's link."""
    ours, peer = IMPLEMENTATIONS
    lines = [
        "## Scaling: step time and peak memory against sequence length and width",
        "",
        f"Training step (forward + backward + fused AdamW) of a {grid.n_layers}-layer GPT, heads of width "
        f"{grid.head_dim}, {grid.tokens_per_step:,} tokens per step at every point (batch = tokens / T), so along "
        f"the sequence sweep (D={grid.width}) the weights' work is constant and attention's T^2 is what grows; "
        f"width sweep at T={grid.seq_len}. {ours} and {peer} (the fastest peer) take turns. Attention FLOPs: "
        "share of the step's FLOPs in the scores and their use; attention time: share of the step's CPU time in "
        f"the SDPA operators (torch.profiler, {PROFILED_STEPS} steps). Peak memory: two steps in a fresh process.",
        "",
        f"| sweep | T | D | batch | GFLOP/step | attention FLOPs | {ours} ms/step | {peer} ms/step | ratio | "
        f"{ours} attention time | {peer} attention time | {ours} peak MiB | {peer} peak MiB |",
        "|" + "---|" * 13,
    ]
    for p in points:
        cells = [
            p.sweep, str(p.shape.context), str(p.shape.dim), str(p.shape.batch), f"{p.flops_per_step / 1e9:.3g}",
            f"{p.attention_flop_share:.0%}", number(p.step_s[ours] * 1e3), number(p.step_s[peer] * 1e3),
            f"{p.step_s[peer] / p.step_s[ours]:.2f}", _cell(p.attention_share[ours], ".0%"),
            _cell(p.attention_share[peer], ".0%"), number(p.peak_mib[ours]), number(p.peak_mib[peer]),
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    if plot:
        lines += ["", f"![step time and peak memory against sequence length and width]({plot})"]
    return "\n".join(lines)


def plot_scaling(points: list[ScalingPoint], path: Path) -> None:
    """Step time (with its attention part) and peak memory against T and D, one line per implementation."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    figure = Figure(figsize=(11, 7), layout="constrained")
    axes = figure.subplots(2, 2)
    for column, (sweep, label) in enumerate([("sequence", "sequence length T"), ("width", "width D")]):
        group = [p for p in points if p.sweep == sweep]
        xs = [p.shape.context if sweep == "sequence" else p.shape.dim for p in group]
        for i, name in enumerate(IMPLEMENTATIONS):
            style = {"color": f"C{i}", "marker": "o"}
            step_ms = [p.step_s[name] * 1e3 for p in group]
            axes[0, column].plot(xs, step_ms, label=f"{name} step", **style)
            attention = [m * p.attention_share[name] for m, p in zip(step_ms, group)]
            axes[0, column].plot(xs, attention, linestyle="--", label=f"{name} attention part", **style)
            axes[1, column].plot(xs, [p.peak_mib[name] for p in group], label=name, **style)
        for row, unit in enumerate(["ms per step", "peak MiB"]):
            axes[row, column].set(xscale="log", yscale="log", xlabel=label, ylabel=unit)
            axes[row, column].xaxis.set_minor_locator(NullLocator())  # the ticks are the grid's points
            axes[row, column].set_xticks(xs, [str(x) for x in xs])
            axes[row, column].grid(alpha=0.3)
            axes[row, column].legend(fontsize=8)
    figure.suptitle(f"training step, {points[0].shape.n_layers} layers, constant tokens per step")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
