"""The convolutional stem: same token grid as the patch projection, local receptive fields, BatchNorm
that is batch-independent at inference, clear errors, and a hybrid ViT that trains through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anyformer.core.cli.main import main
from anyformer.core.patches import PatchTokenizer
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.stem import ConvStem
from anyformer.vision.vit import ViT, ViTConfig

FAST = ["--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize(
    ("size", "patch", "channels"), [((28, 28), 4, 1), ((32, 32), 4, 3), ((16, 24), 8, 3), ((6, 10), 2, 1)]
)
def test_conv_stem_gives_the_patch_projections_token_grid(size: tuple[int, int], patch: int, channels: int) -> None:
    images = torch.randn(2, channels, *size)
    patch_tokens = PatchTokenizer(size, patch, channels, dim=16)(images)
    conv_tokens = PatchTokenizer(size, patch, channels, dim=16, proj=ConvStem(channels, 16, patch, width=4))(images)
    assert conv_tokens.shape == patch_tokens.shape == (2, 1 + (size[0] // patch) * (size[1] // patch), 16)


def test_conv_stem_doubles_its_channels_once_per_halving() -> None:
    stem = ConvStem(in_channels=3, dim=64, patch_size=8, width=8)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (3, 8, 2), (8, 16, 2), (16, 32, 2), (32, 64, 1),
    ]  # fmt: skip


def test_a_deeper_stem_adds_stride_1_blocks_at_each_resolution_and_keeps_the_grid() -> None:
    stem = ConvStem(in_channels=1, dim=16, patch_size=4, width=4, depth=2)
    convs = [m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == [
        (1, 4, 2), (4, 4, 1), (4, 8, 2), (8, 8, 1), (8, 16, 1),
    ]  # fmt: skip
    assert stem(torch.randn(2, 1, 28, 28)).shape == (2, 16, 7, 7)
    model = ViT(ViTConfig(image_size=16, patch_size=4, stem="conv", stem_width=4, stem_depth=3))
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.tokenizer.proj.modules()) == 7
    with pytest.raises(ValueError, match="depth must be >= 1"):
        ConvStem(1, 8, 4, depth=0)


def test_a_change_inside_one_patch_reaches_only_the_neighbouring_tokens() -> None:
    # Two stride-2 3x3 convolutions see input rows 4r-3 .. 4r+3 for grid row r: a patch's own
    # pixels, plus a 3-pixel margin that reaches the adjacent grid cells and no further.
    torch.manual_seed(0)
    tokenizer = PatchTokenizer(28, 4, 1, dim=8, proj=ConvStem(1, 8, 4, width=4)).eval()
    images = torch.randn(1, 1, 28, 28)
    changed = images.clone()
    changed[..., 12:16, 12:16] += 5.0  # grid cell (3, 3)
    delta = (tokenizer(changed) - tokenizer(images))[0, 1:].abs().sum(-1).reshape(7, 7)
    assert delta[3, 3] > 0
    near = torch.zeros(7, 7, dtype=torch.bool)
    near[2:5, 2:5] = True
    assert torch.all(delta[~near] == 0)


def test_batchnorm_makes_inference_independent_of_the_rest_of_the_batch() -> None:
    torch.manual_seed(0)
    model = ViT(ViTConfig(image_size=16, patch_size=4, stem="conv", stem_width=4)).eval()
    images = torch.randn(5, 1, 16, 16)
    alone = model(images[:1])
    together = model(images)[:1]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("patch", [1, 3, 6, 7])
def test_conv_stem_rejects_a_patch_size_that_is_not_a_power_of_two(patch: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        ConvStem(1, 8, patch)
    with pytest.raises(ValueError, match="stem='conv' needs a patch_size that is a power of two"):
        ViTConfig(image_size=42, patch_size=patch, stem="conv")


def test_unknown_stem_is_named() -> None:
    with pytest.raises(ValueError, match=r"stem='resnet' is not one of \['patch', 'conv', 'spt'\]"):
        ViTConfig(stem="resnet")


def test_hybrid_vit_trains_and_its_checkpoint_classifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "experiments" / "vision" / "vit_digits.yaml"
    args = ["vit", "fit", "--config", str(config), "--model.config.stem=conv", "--model.config.stem_width=4"]
    args += ["--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.val_check_interval=2"]
    assert main([*args, *FAST]) == 0
    module = load_task(tmp_path / "runs" / "vit_digits" / "checkpoints" / "last.ckpt", tasks=("vit",))
    assert module.model.cfg.stem == "conv" and isinstance(module.model.tokenizer.proj, ConvStem)
    assert not module.training
    logits = module(torch.randn(3, 1, 8, 8))
    assert logits.shape == (3, 10) and torch.isfinite(logits).all()
