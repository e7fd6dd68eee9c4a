"""Where a step's time goes: torch.profiler over a few warm steps, operators summed and grouped.

A step is whatever a driver does between two calls of ``tick`` (a training step, one decoded
token). Each operator's self CPU time (its time minus the operators it calls) is summed per
name over the profiled steps, so the operators of a step add up to the time spent inside
operators; the step's wall time minus that is spent outside any operator (Python, the
module calls, the profiler's own bookkeeping). The groups answer "is it the matmuls, the
elementwise kernels, the framework or Python?".

The profiler adds a few microseconds to every operator call, so a step made of many small
operators looks slower under it than it is; the operator counts are exact whatever the load.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity

MATMUL = "matmul & attention"
MATH = "elementwise & norm"
LAYOUT = "views, copies & allocation"
AUTOGRAD = "autograd engine"
OPTIMIZER = "optimizer"
OTHER_OPS = "other operators"
OUTSIDE = "outside operators (Python)"
GROUPS = (MATMUL, MATH, LAYOUT, AUTOGRAD, OPTIMIZER, OTHER_OPS, OUTSIDE)

_MATMUL_PREFIXES = (
    "aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv", "aten::linear",
    "aten::matmul", "aten::scaled_dot_product", "aten::_scaled_dot_product", "aten::_flash_attention",
    "aten::_efficient_attention", "aten::conv", "aten::_conv", "aten::mkldnn_convolution",
    "mkldnn::_linear_pointwise",  # anyformer.core.linear.Linear's fp32 CPU GEMMs
)  # fmt: skip
_LAYOUT_OPS = frozenset(
    f"aten::{name}"
    for name in (
        "view", "_unsafe_view", "view_as", "reshape", "_reshape_alias", "as_strided", "transpose", "t", "permute",
        "expand", "expand_as", "unsqueeze", "squeeze", "flatten", "unflatten", "select", "slice", "narrow",
        "unbind", "split", "split_with_sizes", "chunk", "alias", "detach", "detach_", "lift_fresh", "contiguous",
        "clone", "copy_", "to", "_to_copy", "empty", "empty_like", "empty_strided", "new_empty", "zeros",
        "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "fill_", "zero_", "resize_", "cat",
        "stack", "index_select", "resolve_conj", "resolve_neg", "result_type", "item", "_local_scalar_dense",
        "is_nonzero",
    )
)  # fmt: skip
_OPTIMIZER_PREFIXES = ("Optimizer.", "aten::_fused_adam", "aten::_foreach_", "aten::adam", "aten::_fused_sgd")


def group_of(name: str) -> str:
    """The group of an operator (or ``record_function`` range) by its profiler name."""
    if name.startswith(_OPTIMIZER_PREFIXES):
        return OPTIMIZER
    if name.startswith(_MATMUL_PREFIXES):
        return MATMUL
    if name in _LAYOUT_OPS:
        return LAYOUT
    if name.startswith("autograd::") or name.startswith("torch::autograd::") or "Backward" in name:
        return AUTOGRAD  # the engine's per-node wrappers; the kernels they run are aten ops of their own
    if name.startswith("aten::"):
        return MATH  # every other aten kernel: add, mul, gelu, layer_norm, softmax, embedding, losses, ...
    return OTHER_OPS


@dataclass(frozen=True)
class OpTotal:
    """One operator name's self CPU time and number of calls, summed over the profiled steps."""

    name: str
    self_us: float
    calls: int


def group_us(ops: Sequence[OpTotal], wall_us: float) -> dict[str, float]:
    """Self CPU microseconds per group (every group of ``GROUPS``, zeros included); the outside
    group is the wall time the operators leave over (never below zero)."""
    totals = dict.fromkeys(GROUPS, 0.0)
    for op in ops:
        totals[group_of(op.name)] += op.self_us
    totals[OUTSIDE] = max(wall_us - sum(op.self_us for op in ops), 0.0)
    return totals


def group_shares(ops: Sequence[OpTotal], wall_us: float) -> dict[str, float]:
    """Fraction of the step per group; the fractions add up to 1 (over the wall time, or over the
    operators' time when that is larger: operators on other threads can add up to more)."""
    totals = group_us(ops, wall_us)
    whole = sum(totals.values())
    return {group: (value / whole if whole else 0.0) for group, value in totals.items()}


@dataclass(frozen=True)
class StepProfile:
    """One implementation's profiled steps, reported per step."""

    implementation: str
    steps: int
    wall_us: float
    """Wall time of all the profiled steps together."""
    ops: tuple[OpTotal, ...]

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"StepProfile.steps must be >= 1, got {self.steps}")

    @property
    def wall_ms(self) -> float:
        return self.wall_us / self.steps / 1e3

    @property
    def ops_ms(self) -> float:
        return sum(op.self_us for op in self.ops) / self.steps / 1e3

    @property
    def calls(self) -> float:
        return sum(op.calls for op in self.ops) / self.steps

    def group_ms(self) -> dict[str, float]:
        return {group: us / self.steps / 1e3 for group, us in group_us(self.ops, self.wall_us).items()}

    def shares(self) -> dict[str, float]:
        return group_shares(self.ops, self.wall_us)

    def top(self, n: int) -> list[OpTotal]:
        """The ``n`` operators with the most self CPU time."""
        return sorted(self.ops, key=lambda op: -op.self_us)[:n]


Driver = Callable[[Callable[[], None], int], None]
"""``drive(tick, n_ticks)`` runs a workload, calling ``tick()`` after every step, ``n_ticks`` times."""


def profile_steps(implementation: str, drive: Driver, *, skip: int, active: int) -> StepProfile:
    """Profile ``active`` steps of ``drive`` after ``skip`` unprofiled ones and one profiler warm-up step.

    Step 0 is what the driver does before its first tick; the profiled steps are ``skip + 1``
    to ``skip + active``. Their wall time runs from the tick that starts the first to the tick
    that ends the last.
    """
    if skip < 0 or active < 1:
        raise ValueError(f"profile_steps needs skip >= 0 and active >= 1, got skip={skip}, active={active}")
    schedule = torch.profiler.schedule(wait=skip, warmup=1, active=active, repeat=1)
    ticks: list[float] = []
    with torch.profiler.profile(activities=[ProfilerActivity.CPU], schedule=schedule) as prof:

        def tick() -> None:
            prof.step()
            ticks.append(time.perf_counter())

        drive(tick, skip + active + 1)
    if len(ticks) < skip + active + 1:
        raise RuntimeError(f"{implementation}: the driver ticked {len(ticks)} times, {skip + active + 1} needed")
    ops = tuple(
        OpTotal(event.key, event.self_cpu_time_total, event.count)
        for event in prof.key_averages()
        if not event.key.startswith("ProfilerStep")  # the step's own range: its self time is the outside time
    )
    return StepProfile(implementation, active, (ticks[skip + active] - ticks[skip]) * 1e6, ops)


def what_dominates(profiles: Sequence[StepProfile]) -> str:
    """Sentences from the numbers: the largest group of each implementation; how the first
    (anyformer) differs from each of the others in wall time, operator calls and the group whose
    time differs most; and the most its speed-up over each could be if everything but its
    matmuls cost nothing (the peer's wall time over anyformer's matmul time)."""
    parts = []
    for profile in profiles:
        shares = profile.shares()
        group = max(shares, key=shares.get)
        parts.append(f"{profile.implementation}: {group} {shares[group]:.0%}")
    sentences = ["Largest share of the step: " + "; ".join(parts) + "."]
    ours = profiles[0]
    ours_ms = ours.group_ms()
    for peer in profiles[1:]:
        peer_ms = peer.group_ms()
        group = max(GROUPS, key=lambda g: abs(ours_ms[g] - peer_ms[g]))
        sentences.append(
            f"{ours.implementation} vs {peer.implementation}: {ours.wall_ms:.3g} vs {peer.wall_ms:.3g} ms/step, "
            f"{ours.calls:,.0f} vs {peer.calls:,.0f} operator calls; most different: {group} "
            f"({ours_ms[group] - peer_ms[group]:+.3g} ms/step)."
        )
    if len(profiles) > 1 and ours_ms[MATMUL] > 0:
        ceilings = ", ".join(f"{peer.wall_ms / ours_ms[MATMUL]:.2f}x {peer.implementation}" for peer in profiles[1:])
        sentences.append(
            f"{ours.implementation} spends {ours_ms[MATMUL]:.3g} ms/step in {MATMUL}: with nothing else it would "
            f"be at most {ceilings}."
        )
    return " ".join(sentences)
