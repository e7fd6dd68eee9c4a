"""Shifted Patch Tokenization (Lee et al. 2021) against a reference written from the paper's code:
shift by slicing, rearrange 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)', LayerNorm, Linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from anyformer.core.config import TransformerConfig
from anyformer.core.patches import ShiftedPatchProjection
from anyformer.vision.vit import ViT, ViTConfig


def shifted(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Content moved down by dy and right by dx (negative: up / left), zeros shifted in."""
    out = torch.zeros_like(images)
    h, w = images.shape[-2:]
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def reference(module: ShiftedPatchProjection, images: torch.Tensor, patch: int) -> torch.Tensor:
    half = patch // 2
    copies = [images] + [shifted(images, dy * half, dx * half) for dy, dx in ((1, 1), (1, -1), (-1, 1), (-1, -1))]
    x = torch.cat(copies, dim=1)  # (B, 5C, H, W)
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)  # b h w p1 p2 c
    x = x.reshape(b, (h // patch) * (w // patch), patch * patch * c)
    x = F.layer_norm(x, x.shape[-1:], module.norm.weight, module.norm.bias, module.norm.eps)
    x = F.linear(x, module.proj.weight, module.proj.bias)  # (B, N, D)
    return x.transpose(1, 2).reshape(b, -1, h // patch, w // patch)


def test_shift_helper_moves_content_the_stated_way() -> None:
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 1, 1] = 1
    assert shifted(image, 2, -1)[0, 0, 3, 0] == 1 and shifted(image, 2, -1).sum() == 1


@pytest.mark.parametrize("patch", [2, 4])
def test_spt_matches_the_paper_layout(patch: int) -> None:
    torch.manual_seed(0)
    module = ShiftedPatchProjection(3, 16, patch)
    torch.nn.init.normal_(module.norm.weight)  # non-trivial affine: the reference must use it too
    torch.nn.init.normal_(module.norm.bias)
    images = torch.randn(2, 3, 8, 12)
    out = module(images)
    assert out.shape == (2, 16, 8 // patch, 12 // patch)
    torch.testing.assert_close(out, reference(module, images, patch))


def test_vit_with_spt_tokenizes_into_the_patch_grid() -> None:
    transformer = TransformerConfig(dim=32, n_layers=1, n_heads=4, position="none", norm_eps=1e-6)
    vit = ViT(ViTConfig(image_size=28, patch_size=4, stem="spt", transformer=transformer, distill=True))
    assert isinstance(vit.tokenizer.proj, ShiftedPatchProjection)
    assert vit.forward_features(torch.randn(2, 1, 28, 28)).shape == (2, 2 + 49, 32)
    with pytest.raises(ValueError, match="is not one of"):
        ViTConfig(stem="shifted")
