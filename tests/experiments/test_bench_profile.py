"""``python -m anyformer.experiments.bench --profile``: operator events -> grouped shares, the step
boundaries of the profiler's schedule, and one run of the CLI at its smallest setting.

No time is asserted, only sums of given numbers and operator counts, which are exact.
"""

import pytest
import torch

from anyformer.experiments.bench.__main__ import main, parse_args
from anyformer.experiments.bench.profile_cases import decode_case
from anyformer.experiments.bench.profiling import (
    AUTOGRAD,
    GROUPS,
    LAYOUT,
    MATH,
    MATMUL,
    OPTIMIZER,
    OTHER_OPS,
    OUTSIDE,
    OpTotal,
    StepProfile,
    group_shares,
    profile_steps,
    what_dominates,
)
from anyformer.experiments.bench.shapes import GenerationShape, GPTShape
from anyformer.experiments.bench.timing import Runtime

# Self CPU microseconds and calls of one training-like step: 50 in matmuls, 10 elementwise, 5 layout,
# 5 autograd engine, 10 optimizer, 0 in a record_function label; 80 in all, 31 calls.
OPS = (
    OpTotal("aten::mm", 30.0, 3),
    OpTotal("aten::addmm", 10.0, 1),
    OpTotal("aten::_scaled_dot_product_flash_attention_for_cpu_backward", 10.0, 1),
    OpTotal("aten::native_layer_norm", 8.0, 2),
    OpTotal("aten::gelu_backward", 2.0, 1),
    OpTotal("aten::view", 3.0, 10),
    OpTotal("aten::copy_", 2.0, 4),
    OpTotal("autograd::engine::evaluate_function: MmBackward0", 4.0, 3),
    OpTotal("MmBackward0", 1.0, 3),
    OpTotal("Optimizer.step#AdamW.step", 6.0, 1),
    OpTotal("aten::_fused_adamw_", 4.0, 1),
    OpTotal("my_label", 0.0, 1),
)


def test_group_shares_split_the_wall_time_into_operator_groups_and_the_time_outside_them():
    shares = group_shares(OPS, wall_us=100.0)
    expected = {MATMUL: 0.5, MATH: 0.1, LAYOUT: 0.05, AUTOGRAD: 0.05, OPTIMIZER: 0.1, OTHER_OPS: 0.0, OUTSIDE: 0.2}
    assert list(shares) == list(GROUPS)
    assert shares == pytest.approx(expected)


def test_operators_adding_up_to_more_than_the_wall_time_leave_nothing_outside():
    """Operators on other threads can sum past the wall time: the shares are then of the operators' time."""
    shares = group_shares(OPS, wall_us=40.0)
    assert shares[OUTSIDE] == 0.0
    assert shares[MATMUL] == pytest.approx(50 / 80) and sum(shares.values()) == pytest.approx(1.0)


def test_step_profile_reports_per_step():
    profile = StepProfile("anyformer", steps=2, wall_us=200.0, ops=OPS)
    assert profile.wall_ms == pytest.approx(0.1) and profile.ops_ms == pytest.approx(0.04)
    assert profile.calls == 15.5  # 31 calls over 2 steps
    assert profile.group_ms()[OUTSIDE] == pytest.approx(0.06)
    assert [op.name for op in profile.top(1)] == ["aten::mm"]


def test_what_dominates_is_computed_from_the_groups():
    ours = StepProfile("anyformer", steps=1, wall_us=100.0, ops=OPS)
    theirs = StepProfile("transformers", steps=1, wall_us=200.0, ops=OPS)  # the same operators, 120 us outside
    sentence = what_dominates([ours, theirs])
    assert "anyformer: matmul & attention 50%; transformers: outside operators (Python) 60%" in sentence
    assert "anyformer vs transformers: 0.1 vs 0.2 ms/step, 31 vs 31 operator calls" in sentence
    assert "most different: outside operators (Python) (-0.1 ms/step)" in sentence
    assert "spends 0.05 ms/step in matmul & attention: with nothing else it would be at most 4.00x transformers" in (
        sentence
    )


def test_profile_steps_counts_the_operators_of_the_profiled_steps_only():
    """Steps before ``skip + 1`` subtract; the profiled ones each run one mm and two adds."""
    a = torch.ones(4, 4)
    skip, active = 2, 3

    def drive(tick, n_ticks):
        for step in range(n_ticks):
            if step <= skip:
                torch.sub(a, a)
            else:
                torch.mm(a, a), torch.add(a, a), torch.add(a, a)
            tick()

    profile = profile_steps("toy", drive, skip=skip, active=active)
    calls = {op.name: op.calls for op in profile.ops}
    assert calls["aten::mm"] == active and calls["aten::add"] == 2 * active and "aten::sub" not in calls
    assert profile.steps == active and profile.wall_us > 0
    with pytest.raises(RuntimeError, match="ticked 1 times, 6 needed"):
        profile_steps("short", lambda tick, n_ticks: tick(), skip=skip, active=active)


def test_a_profiled_decoding_step_is_one_token_through_every_layer():
    """Four projections per layer (qkv, out, fc1, fc2) and the tied LM head are one GEMM each at
    batch 1 and one token (an addmm or mm, or anyformer's oneDNN linear for a big enough product).
    A prefill or a missed step boundary would change the count."""
    runtime = Runtime(threads=1)
    shape = GenerationShape(GPTShape(batch=1, context=80, n_layers=2, n_heads=2, dim=16, vocab=11), new_tokens=(2, 4))
    case = decode_case("gen", shape, runtime, steps=2)
    assert [profile.implementation for profile in case.profiles] == ["anyformer", "transformers"]
    gemms = ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise")
    for profile in case.profiles:
        calls = {op.name: op.calls / profile.steps for op in profile.ops}
        assert sum(calls.get(name, 0) for name in gemms) == 4 * shape.model.n_layers + 1, profile.implementation


def test_profile_cli_writes_one_section_per_case_with_shares_summing_to_100(tmp_path):
    """The smallest run: one training shape, one profiled step per implementation."""
    out = tmp_path / "profile.md"
    main(["--profile", "--only", "gpt-cpu", "--threads", "1", "--profile-steps", "1", "--out-profile", str(out)])
    text = out.read_text()
    assert text.count("\n## ") == 1 and "\n## gpt-cpu: training step" in text
    dominates = next(line for line in text.splitlines() if line.startswith("**What dominates.**"))
    assert all(f"{name}:" in dominates for name in ("anyformer", "transformers", "minimal"))
    table = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| anyformer |")]
    table += [
        line.strip("|").split("|") for line in text.splitlines() if line.startswith(("| transformers |", "| minimal |"))
    ]
    assert len(table) == 3
    for cells in table:
        shares = [float(cell.strip().rstrip("%")) for cell in cells[4:]]
        assert len(shares) == len(GROUPS) and abs(sum(shares) - 100) <= len(GROUPS) / 2  # rounded to 1%
        assert float(cells[3].replace(",", "")) > 0  # operator calls per step
    operator_rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert 3 <= len(operator_rows) <= 3 * 12
    assert {line.split("|")[2].strip() for line in operator_rows} <= set(GROUPS)


@pytest.mark.parametrize(
    "argv",
    [
        ["--out-profile", "x.md", "--device", "cuda"],
        ["--profile-steps", "2"],
        ["--profile", "--out", "x.md"],
        ["--profile", "--profile-steps", "0"],
    ],
)
def test_profile_options_are_rejected_where_they_mean_nothing(argv):
    with pytest.raises(SystemExit):
        parse_args(argv)
