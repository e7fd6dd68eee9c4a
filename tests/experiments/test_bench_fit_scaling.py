"""The bench's whole fits, scaling sweep and NO-row profile: the accounting adds up, the sweep has one
row per grid point, and the profile lists the rows below target and only those.

No time is asserted: sums, ratios, counts and which rows appear.
"""

import math

import pytest

from anyformer.experiments.bench.__main__ import parse_args
from anyformer.experiments.bench.explain import below_target, render_explanations, shapes_to_profile
from anyformer.experiments.bench.fit import PARTS, FitTiming, account, fit_rows, largest_other_actions, run_fit
from anyformer.experiments.bench.memory import gpt_spec, measure_here
from anyformer.experiments.bench.profiling import OpTotal, StepProfile
from anyformer.experiments.bench.report import Row, Target
from anyformer.experiments.bench.scaling import ScalingGrid, attention_share, render_scaling, scaling_points
from anyformer.experiments.bench.shapes import GPTShape
from anyformer.experiments.bench.timing import Runtime

TINY_FIT = [
    *("--model.config.transformer.dim", "16", "--model.config.transformer.n_layers", "1"),
    *("--model.config.transformer.n_heads", "2", "--data.context_len", "8", "--data.batch_size", "2"),
]

# SimpleProfiler's summed seconds of a 10-step fit: optimizer_step holds training_step, backward and clipping.
DURATIONS = {
    "run_training_epoch": 9.0,
    "run_training_batch": 7.0,
    "[LightningModule]GPTModule.optimizer_step": 6.0,
    "[Strategy]SingleDeviceStrategy.training_step": 2.0,
    "[Strategy]SingleDeviceStrategy.backward": 3.0,
    "[LightningModule]GPTModule.configure_gradient_clipping": 0.25,
    "[LightningModule]GPTModule.optimizer_zero_grad": 0.05,
    "[_TrainingEpochLoop].train_dataloader_next": 0.5,
    "save_checkpoint": 0.4,
    "[Callback]ModelCheckpoint{'monitor': 'val_loss'}.on_validation_end": 0.4,
    "[Callback]RichProgressBar.on_train_batch_end": 0.2,
    "[Strategy]SingleDeviceStrategy.validation_step": 0.9,
    "[LightningModule]GPTModule.lr_scheduler_step": 0.1,
}


def test_fit_accounting_splits_the_wall_outside_validation_into_its_parts():
    parts = account(DURATIONS, wall_s=10.0, validation_s=1.0)
    assert list(parts) == list(PARTS)
    assert parts["optimizer"] == pytest.approx(6.0 - 2.0 - 3.0 - 0.25)
    assert parts["data loading"] == 0.5 and parts["checkpointing"] == 0.4
    assert parts["Lightning & logging"] == pytest.approx(10.0 - 1.0 - 6.0 - 0.5 - 0.4)
    assert sum(parts.values()) == pytest.approx(9.0)
    names = [name for name, _ in largest_other_actions(DURATIONS)]
    assert names == ["[Callback]RichProgressBar.on_train_batch_end", "[LightningModule]GPTModule.lr_scheduler_step"]


def test_fit_ratio_is_tokens_per_second_outside_validation_over_the_raw_steps():
    record = {"steps": 10, "batch": 4, "context": 32, "wall_s": 10.0, "validation_s": 2.0}
    record["raw_step_s"] = [0.5, 0.7, 0.6]
    timing = FitTiming.from_record("s", {**record, "durations": DURATIONS})
    assert timing.tokens_per_s == pytest.approx(10 * 128 / 8.0)
    assert timing.raw_tokens_per_s == pytest.approx(128 / 0.6)  # the median raw step
    assert timing.ratio == pytest.approx(timing.tokens_per_s / timing.raw_tokens_per_s)
    (row,) = fit_rows([timing])
    assert row.ratio == pytest.approx(timing.ratio) and row.target == Target(0.9)


def test_a_real_tiny_fit_is_accounted_for_to_its_wall_time(shared_data):
    """``anyformer gpt fit`` in a fresh process: the parts are measured separately (SimpleProfiler) and
    only the last is a remainder, so a remainder >= 0 shows that the measured parts do not overlap."""
    timing = run_fit("tiny", Runtime(threads=1), steps=4, val_batches=1, raw_steps=2, overrides=TINY_FIT)
    assert (timing.steps, timing.batch, timing.context) == (4, 2, 8)
    assert sum(timing.parts.values()) == pytest.approx(timing.wall_s - timing.validation_s)
    assert all(timing.parts[part] > 0 for part in ("forward", "backward", "optimizer", "data loading"))
    assert timing.parts["checkpointing"] > 0  # the validation at the last step saves best and last
    assert timing.parts["Lightning & logging"] >= 0 and 0 < timing.validation_s < timing.wall_s
    assert math.isfinite(timing.ratio) and timing.raw_step_s > 0


GRID = ScalingGrid(seq_lens=(8, 16, 32), widths=(16, 32), width=16, seq_len=16, n_layers=1, tokens_per_step=32,
                   head_dim=8, vocab=11)  # fmt: skip


def test_scaling_sweep_has_one_row_per_grid_point_with_flops_growing_along_each_sweep():
    points = scaling_points(GRID, Runtime(threads=1, repeats=1, calls=1), memory=False)
    assert [(p.sweep, p.shape.context, p.shape.dim) for p in points] == [
        ("sequence", 8, 16), ("sequence", 16, 16), ("sequence", 32, 16), ("width", 16, 16), ("width", 16, 32),
    ]  # fmt: skip
    assert all(p.shape.batch * p.shape.context == 32 for p in points)
    for sweep in ("sequence", "width"):
        flops = [p.flops_per_step for p in points if p.sweep == sweep]
        assert flops == sorted(flops) and len(set(flops)) == len(flops)
    shares = [p.attention_flop_share for p in points if p.sweep == "sequence"]
    assert shares == sorted(shares)  # constant tokens: attention's part grows with T
    for p in points:
        assert set(p.step_s) == {"anyformer", "minimal"} and all(s > 0 for s in p.step_s.values())
        assert all(0 < share < 1 for share in p.attention_share.values())  # SDPA ran, and not alone
    table = [line for line in render_scaling(points, GRID, "plot.png").splitlines() if line.startswith("| ")]
    assert len(table) == 1 + len(points)


def test_attention_share_counts_the_sdpa_operators_forward_and_backward():
    ops = (
        OpTotal("aten::_scaled_dot_product_flash_attention_for_cpu", 20.0, 1),
        OpTotal("aten::_scaled_dot_product_flash_attention_for_cpu_backward", 30.0, 1),
        OpTotal("ScaledDotProductFlashAttentionForCpuBackward0", 5.0, 1),
        OpTotal("aten::mm", 45.0, 3),
    )
    assert attention_share(StepProfile("x", 1, 200.0, ops)) == pytest.approx(55 / 200)


def test_memory_takes_any_gpt_shape_as_a_spec():
    shape = GPTShape(batch=2, context=8, n_layers=1, n_heads=2, dim=16, vocab=11)
    assert gpt_spec(shape) == "gpt:2,8,1,2,16,11"
    assert measure_here(gpt_spec(shape), "minimal", Runtime(threads=1)) >= 0


def test_profile_lists_the_rows_below_target_and_only_those():
    rows = [
        Row("gpt-small", "train MFU", "GFLOP/s", 1, "oneDNN", 2, target=Target(0.75), ratio_override=0.6),
        Row("gpt-cpu", "train throughput", "tokens/s", 3, "minimal", 2, target=Target(1.0)),
        Row("gpt-gen", "greedy", "tokens/s", 1, "transformers", 1, target=Target(3)),
        Row("gpt-cpu", "whole fit, 30 steps, excl. validation", "tokens/s", 1, "raw step", 2, target=Target(0.9)),
        Row("vit-tiny", "train peak memory", "MiB", 1, "timm", 9),  # no target
    ]
    assert [row.shape for row in below_target(rows)] == ["gpt-small", "gpt-gen", "gpt-cpu"]
    assert shapes_to_profile(rows) == ["gpt-small", "gpt-gen"]  # the fit row is explained by its accounting
    text = render_explanations(rows, cases=[], fits=[], header="# h")
    listed = [line for line in text.splitlines() if line.startswith("- ")]
    assert len(listed) == 3 and not any("train throughput" in line or "memory" in line for line in listed)
    assert "see Whole fits below" in listed[2]
    assert "Every row with a target meets it." in render_explanations(rows[1:2], [], [], "# h")


def test_fit_and_scaling_are_selected_by_name_and_by_default_but_not_by_profile():
    assert {"fit", "scaling"} <= set(parse_args([]).only)
    assert parse_args(["--only", "fit"]).only == ["fit"]
    assert "scaling" not in parse_args(["--profile"]).only
    with pytest.raises(SystemExit):
        parse_args(["--profile", "--only", "scaling"])
