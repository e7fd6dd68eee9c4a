"""Numerical safety: a diverging run stops with a clear message and a good checkpoint, gradients
are clipped by default, and bf16 autocast trains on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from anyformer.core.train.checkpoint import load_task
from anyformer.text.gpt.gpt import GPTConfig
from anyformer.text.gpt.gpt_task import GPTModule
from tests.reliability.tiny_gpt import DtypeProbe, GradientProbe, fit, fit_args, read_rows, weights, write_corpus


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_corpus(tmp_path)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(corpus, monkeypatch, capsys) -> None:
    real_loss = GPTModule._loss

    def loss_that_turns_nan_at_step_15(self: GPTModule, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        loss = real_loss(self, batch)
        return loss * math.nan if self.training and self.global_step >= 15 else loss

    monkeypatch.setattr(GPTModule, "_loss", loss_that_turns_nan_at_step_15)
    assert fit(fit_args("run", corpus)) == 1
    (message,) = [line for line in capsys.readouterr().err.splitlines() if line.startswith("anyformer gpt:")]
    assert message.startswith("anyformer gpt: training stopped: non-finite training loss nan at step 15;")
    assert "last saved checkpoint is intact" in message

    last = corpus.parent / "runs" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 10  # the validation before
    assert all(torch.isfinite(tensor).all() for tensor in weights(last).values())
    assert load_task(last, tasks=("gpt",)).model.num_parameters() > 0
    val_steps = [row["step"] for row in read_rows(corpus.parent / "runs" / "run" / "metrics.csv") if row["val_loss"]]
    assert val_steps == ["9"]  # the curve up to the failure is kept


def test_a_checkpoint_of_non_finite_weights_is_refused() -> None:
    module = GPTModule(GPTConfig(vocab_size=11))
    module.on_save_checkpoint({})  # finite: fine
    with torch.no_grad():
        module.model.lm_head.weight[0, 0] = math.inf  # tied: the embedding too
    with pytest.raises(FloatingPointError, match=r"non-finite weights at step 0 \(model\.token_embedding\.weight\)"):
        module.on_save_checkpoint({})


def test_gradients_are_clipped_to_norm_1_by_default(corpus) -> None:
    GradientProbe.before_clip.clear()
    GradientProbe.stepped.clear()
    probe = {"class_path": "tests.reliability.tiny_gpt.GradientProbe"}
    assert fit(fit_args("run", corpus, {"trainer.max_steps": 10}, [probe])) == 0
    before, stepped = GradientProbe.before_clip, GradientProbe.stepped
    assert len(before) == len(stepped) == 10
    assert any(norm > 1.0 for norm in before), f"no gradient above the clip norm to test with: {before}"
    for unclipped, used in zip(before, stepped, strict=True):
        # clip_grad_norm_: gradients scaled by 1 / (norm + 1e-6) when their norm is above 1.
        assert used == pytest.approx(min(unclipped, 1.0), rel=1e-4)


def test_bf16_mixed_precision_trains_gpt_on_the_cpu(corpus) -> None:
    DtypeProbe.logits.clear()
    probe = {"class_path": "tests.reliability.tiny_gpt.DtypeProbe"}
    overrides = {"trainer.precision": "bf16-mixed", "trainer.max_steps": 3, "trainer.val_check_interval": 3}
    assert fit(fit_args("run", corpus, overrides, [probe])) == 0
    assert DtypeProbe.logits == [torch.bfloat16] * 3  # the forward ran under bf16 autocast
    rows = read_rows(corpus.parent / "runs" / "run" / "metrics.csv")
    assert [math.isfinite(float(row["val_loss"])) for row in rows if row["val_loss"]] == [True]
    last = weights(corpus.parent / "runs" / "run" / "checkpoints" / "last.ckpt")
    assert {tensor.dtype for tensor in last.values()} == {torch.float32}  # the weights stay fp32
