"""Small random timm ViTs on disk, in the layouts ``init_from: timm:...`` reads; nothing reaches a hub.

``tests/test_configs.py`` points ``experiments/vision/vit_tiny_finetune_cifar10.yaml`` at
:func:`tiny_timm_folder` instead of the hub download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import save_for_hf

TINY = {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 2}
"""A ViT of ``vit_tiny_patch16_224``'s family shrunk to 2 blocks of width 32 over 16x16 images."""


def tiny_timm(seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A random timm ViT (:data:`TINY` + ``overrides``), every weight moved off its init so a
    swapped or dropped one shows in the logits."""
    torch.manual_seed(seed)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, **(TINY | overrides)).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


def tiny_timm_folder(folder: Path, **overrides: Any) -> Path:
    """Write :func:`tiny_timm` with timm's own ``save_for_hf`` (``config.json`` + ``model.safetensors``);
    ``init_from: timm:<folder>`` reads it."""
    save_for_hf(tiny_timm(**overrides), str(folder), safe_serialization=True)
    return folder
