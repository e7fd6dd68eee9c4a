"""DeiT's distilled ViT: the distillation token's place and heads, the hard-distillation loss against
its formula, the frozen teacher, and the tools (classify, attention) on a distilled checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import main as attention
from anyformer.core.cli.classify import main as classify
from anyformer.core.cli.errors import UsageError
from anyformer.core.cli.main import main
from anyformer.core.config import TransformerConfig
from anyformer.core.rollout import attention_rollout, patch_relevance
from anyformer.core.train.base import OptimConfig, no_weight_decay_names
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.classify import vit_rollout
from anyformer.vision.data import ImageDataModule
from anyformer.vision.vit import ViT, ViTConfig
from anyformer.vision.vit_task import ViTModule, hard_distillation_loss

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments" / "vision"
FAST = ["--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", "--trainer.enable_model_summary=false"]
STEPS = ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2"]


def tiny_config(**overrides) -> ViTConfig:
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=4, position="none", norm_eps=1e-6)
    return ViTConfig(**({"image_size": 8, "patch_size": 2, "transformer": transformer} | overrides))


def test_plain_vit_keeps_its_parameters_and_one_summary_token() -> None:
    plain, distilled = ViT(tiny_config()), ViT(tiny_config(distill=True))
    assert plain.num_prefix_tokens == 1 and distilled.num_prefix_tokens == 2
    # Off by default: a checkpoint of a ViT without the token (speech's too) has exactly these keys.
    assert not any("dist" in name for name in plain.state_dict())
    extra = set(distilled.state_dict()) - set(plain.state_dict())
    assert extra == {"dist_token", "head_dist.weight", "head_dist.bias"}
    assert "model.dist_token" in no_weight_decay_names(torch.nn.ModuleDict({"model": distilled}))
    with pytest.raises(ValueError, match="distill=True"):
        plain.forward_heads(torch.randn(2, 17, 32))


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_distillation_token_sits_after_cls_and_the_logits_average_the_heads(pool: str) -> None:
    torch.manual_seed(0)
    vit = ViT(tiny_config(distill=True, pool=pool, num_classes=5)).eval()
    images = torch.randn(3, 1, 8, 8)
    features = vit.forward_features(images)
    assert features.shape == (3, 2 + 16, 32)
    # The same tokens by hand: [CLS] + positions, the distillation token, then the patches.
    tokens = vit.tokenizer(images)
    by_hand = torch.cat([tokens[:, :1], vit.dist_token.expand(3, -1, -1), tokens[:, 1:]], dim=1)
    torch.testing.assert_close(features, vit.encoder(by_hand))
    summary = features[:, 0] if pool == "cls" else features[:, 2:].mean(dim=1)
    logits, dist_logits = vit.forward_heads(features)
    torch.testing.assert_close(logits, vit.head(summary))
    torch.testing.assert_close(dist_logits, vit.head_dist(features[:, 1]))
    torch.testing.assert_close(vit(images), (vit.head(summary) + vit.head_dist(features[:, 1])) / 2)  # DeiT inference


def test_rollout_reads_both_summary_tokens() -> None:
    torch.manual_seed(0)
    vit = ViT(tiny_config(distill=True)).eval()
    maps = AttentionMaps()
    vit.forward_features(torch.randn(1, 1, 8, 8), maps=maps)
    assert maps.self_attn[0].shape == (1, 4, 18, 18)
    rollout = attention_rollout(maps.self_attn)  # (1, 18, 18)
    weights = rollout[:, :2].mean(dim=1)[:, 2:]  # the two summary rows, the 16 patch columns
    expected = (weights - weights.min()) / (weights.max() - weights.min())
    torch.testing.assert_close(patch_relevance(maps.self_attn, (4, 4), "cls", prefix=2), expected.reshape(1, 4, 4))


def test_hard_distillation_loss_matches_its_formula() -> None:
    torch.manual_seed(0)
    logits, dist_logits, teacher = torch.randn(3, 6, 4).unbind(0)
    labels = torch.tensor([0, 3, 1, 2, 2, 0])
    smoothing = 0.1
    log_p, log_q = logits.log_softmax(-1), dist_logits.log_softmax(-1)
    target = F.one_hot(labels, 4).float() * (1 - smoothing) + smoothing / 4
    base = -(target * log_p).sum(-1).mean()
    distill = -log_q[torch.arange(6), teacher.argmax(-1)].mean()  # the teacher's hard label
    expected = 0.5 * base + 0.5 * distill
    torch.testing.assert_close(hard_distillation_loss(logits, dist_logits, labels, teacher, smoothing), expected)
    soft = torch.softmax(torch.randn(6, 4), -1)  # mixup / cutmix labels
    expected_soft = 0.5 * -(soft * log_p).sum(-1).mean() + 0.5 * distill
    torch.testing.assert_close(hard_distillation_loss(logits, dist_logits, soft, teacher), expected_soft)


def test_a_teacher_needs_the_distillation_token() -> None:
    with pytest.raises(ValueError, match=r"teacher needs config\.distill=True"):
        ViTModule(tiny_config(), teacher="teacher.ckpt")


@pytest.fixture(scope="module")
def teacher_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps of the digits CNN through the CLI: the teacher."""
    workdir = tmp_path_factory.mktemp("teacher")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert main(["vision-cnn", "fit", "--config", str(EXPERIMENTS / "cnn_digits.yaml"), *STEPS, *FAST]) == 0
    return workdir / "runs" / "cnn_digits" / "checkpoints" / "last.ckpt"


def test_the_teacher_stays_frozen_in_eval_mode(teacher_checkpoint: Path, tmp_path: Path) -> None:
    pl.seed_everything(0)
    config = tiny_config(distill=True)
    module = ViTModule(config, OptimConfig(warmup_steps=1), teacher=str(teacher_checkpoint))
    calls: list[tuple[bool, bool]] = []
    original = module.load_teacher

    def load_and_watch() -> torch.nn.Module:
        teacher = original()
        teacher.register_forward_hook(lambda mod, args, out: calls.append((mod.training, torch.is_grad_enabled())))
        return teacher

    module.load_teacher = load_and_watch  # type: ignore[method-assign]
    data = ImageDataModule(source="digits", batch_size=16, batch_augment=True, random_crop_padding=1)
    trainer = pl.Trainer(
        max_steps=3, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    assert calls == [(False, False)] * 3  # one teacher call per step: eval mode, no graph
    saved = torch.load(teacher_checkpoint, weights_only=True)["state_dict"]
    teacher = module.teacher
    assert teacher is not None and not teacher.training and all(not m.training for m in teacher.modules())
    for name, value in teacher.state_dict().items():  # BatchNorm statistics included
        torch.testing.assert_close(value, saved[f"model.{name}"], rtol=0, atol=0)
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not any(name.startswith("teacher") for name in module.state_dict())  # the checkpoint is the student's
    assert module.model.dist_token.grad is not None  # the distillation token did learn


def test_fitting_a_distilled_vit_without_or_with_a_foreign_teacher_is_a_usage_error(
    teacher_checkpoint: Path,
) -> None:
    with pytest.raises(UsageError, match=r"needs model\.teacher"):
        ViTModule(tiny_config(distill=True)).load_teacher()
    module = ViTModule(tiny_config(distill=True), teacher=str(teacher_checkpoint))
    module.class_names = [f"c{i}" for i in range(10)]
    with pytest.raises(UsageError, match="trained on other data: classes"):
        module.load_teacher()


@pytest.fixture(scope="module")
def distilled_checkpoint(teacher_checkpoint: Path) -> Path:
    """Two steps of the digits ViT with the distillation token, taught by the CNN, through the CLI."""
    workdir = teacher_checkpoint.parents[3]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        args = ["vit", "fit", "--config", str(EXPERIMENTS / "vit_digits.yaml"), "--run-name", "deit", *STEPS, *FAST]
        args += ["--model.config.distill=true", f"--model.teacher={teacher_checkpoint}", "--data.batch_augment=true"]
        assert main(args) == 0
    return workdir / "runs" / "deit" / "checkpoints" / "last.ckpt"


def _digit_png(path: Path) -> Path:
    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[1:-1, 3:5] = 255  # a vertical bar, like a 1
    Image.fromarray(pixels).save(path)
    return path


def test_classify_and_attention_read_a_distilled_checkpoint(
    distilled_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    module = load_task(distilled_checkpoint, tasks=("vit",))  # no teacher needed
    assert module.model.cfg.distill and module.model.num_prefix_tokens == 2
    image = _digit_png(tmp_path / "one.png")
    out = tmp_path / "map.png"
    assert classify(["--ckpt", str(distilled_checkpoint), str(image), "--top-k", "2", "--attention-map", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    with Image.open(image) as opened:
        heat, logits = vit_rollout(module, opened.convert("L"))
    probs = logits.softmax(-1).topk(2).values.tolist()
    assert [float(line.split()[0]) for line in printed[1:3]] == pytest.approx(probs, abs=1e-4)
    assert heat.shape == (4, 4) and out.is_file()
    figure = tmp_path / "figure.png"
    assert attention(["--ckpt", str(distilled_checkpoint), str(image), "--out", str(figure)]) == 0
    assert figure.is_file()
