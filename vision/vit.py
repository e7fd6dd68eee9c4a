"""The image classifier: the core ViT (``anyformer.core.vit``) with image defaults, the optional
convolutional stem (``anyformer.vision.stem``) and timm weights.

``ViT.from_timm`` copies a timm ``VisionTransformer``'s weights and reproduces its logits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from anyformer.core import vit as core_vit
from anyformer.core.config import TransformerConfig
from anyformer.core.patches import to_pair
from anyformer.vision.stem import STEMS, ConvStem


@dataclass
class ViTConfig(core_vit.ViTConfig):
    """An image classifier over patches; the fields it adds choose the tokenizer's projection."""

    image_size: int | tuple[int, int] = 28
    """Side of a square input image, or (H, W); linked from the data module by the CLI."""
    patch_size: int | tuple[int, int] = 4
    """Side P of a square patch, or (Ph, Pw); must divide the image size unless ``pad``."""
    in_channels: int = 1
    """Image channels (1 grayscale, 3 RGB); linked from the data module."""
    num_classes: int = 10
    """Number of classes; linked from the data module."""
    stem: str = "patch"
    """Tokenizer: ``patch`` (linear PxP patch projection, the ViT) or ``conv`` (strided 3x3 convolutions
    to the same token grid, the hybrid ViT of Xiao et al. 2021; square P a power of two, no stride)."""
    stem_width: int = 32
    """Channels of the conv stem's first block (doubled at each of its log2(P) blocks)."""
    stem_depth: int = 1
    """Conv3x3 blocks per resolution of the conv stem: 1 (the paper's stem), or more (stride-1 blocks)."""

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"ViTConfig.stem={self.stem!r} is not one of {list(STEMS)}")
        super().__post_init__()
        if self.stem == "conv":
            patch = to_pair(self.patch_size)
            stride = patch if self.patch_stride is None else to_pair(self.patch_stride)
            if patch[0] != patch[1] or patch[0] < 2 or patch[0] & (patch[0] - 1) or stride != patch:
                raise ValueError(
                    "ViTConfig.stem='conv' needs a patch_size that is a power of two >= 2, square and without "
                    f"patch_stride; got patch_size={self.patch_size!r}, patch_stride={self.patch_stride!r}"
                )


class ViT(core_vit.ViT):
    """Images (B, C, H, W) -> class logits (B, num_classes); ``stem='conv'`` tokenizes with a ``ConvStem``."""

    def __init__(self, cfg: ViTConfig) -> None:
        stem = None
        if cfg.stem == "conv":
            side = to_pair(cfg.patch_size)[0]
            stem = ConvStem(cfg.in_channels, cfg.transformer.dim, side, cfg.stem_width, cfg.stem_depth)
        super().__init__(cfg, proj=stem)

    @classmethod
    def from_timm(cls, timm_model: nn.Module) -> ViT:
        """A ViT with the architecture and weights of a timm ``VisionTransformer``.

        Supported: [CLS] pooling (``global_pool='token'``), class token inside the position
        table, no register tokens, layer scale or q/k norm, exact GELU — the plain ViT/DeiT
        recipe (``vit_tiny_patch16_224`` and friends).
        """
        return load_timm_state_dict(cls(timm_config(timm_model)), timm_model)


def timm_config(timm_model: nn.Module) -> ViTConfig:
    """The ``ViTConfig`` of a timm ``VisionTransformer``; ValueError for variants we do not build."""
    m: Any = timm_model
    block = m.blocks[0]
    unsupported = {
        "global_pool != 'token'": m.global_pool != "token",
        "register tokens": getattr(m, "num_reg_tokens", 0) > 0,
        "no class token": m.cls_token is None,
        "no_embed_class": getattr(m, "no_embed_class", False),
        "layer scale": not isinstance(block.ls1, nn.Identity),
        "q/k norm": not isinstance(block.attn.q_norm, nn.Identity),
        "pre-norm before the blocks": not isinstance(m.norm_pre, nn.Identity),
        "approximate GELU": not (isinstance(block.mlp.act, nn.GELU) and block.mlp.act.approximate == "none"),
        "no qkv bias": block.attn.qkv.bias is None,
        "no classifier head": not isinstance(m.head, nn.Linear),
    }
    found = [name for name, present in unsupported.items() if present]
    if found:
        raise ValueError(f"cannot build a ViT from this timm model: {', '.join(found)}")
    patch = to_pair(m.patch_embed.patch_size)
    dim = m.embed_dim
    transformer = TransformerConfig(
        dim=dim, n_layers=len(m.blocks), n_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / dim,
        norm_eps=m.norm.eps, position="none", activation="gelu", ffn="gelu", bias=True,
    )  # fmt: skip
    image_size = to_pair(m.patch_embed.img_size)
    return ViTConfig(
        image_size=image_size[0] if image_size[0] == image_size[1] else image_size,
        patch_size=patch[0] if patch[0] == patch[1] else patch,
        in_channels=m.patch_embed.proj.in_channels,
        num_classes=m.num_classes,
        pool="cls",
        position="learned",
        transformer=transformer,
    )


# timm VisionTransformer key -> ours (regex substitutions, applied in order; first match wins).
_TIMM_KEYS = [
    (r"^patch_embed\.proj\.", "tokenizer.proj."),
    (r"^cls_token$", "tokenizer.cls_token"),
    (r"^pos_embed$", "tokenizer.pos_embed"),
    (r"^blocks\.(\d+)\.norm1\.", r"encoder.blocks.\1.norm1."),
    (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.blocks.\1.attn.qkv_proj."),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.blocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.norm2\.", r"encoder.blocks.\1.norm2."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"encoder.blocks.\1.mlp.fc1."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"encoder.blocks.\1.mlp.fc2."),
    (r"^norm\.", "encoder.final_norm."),
    (r"^head\.", "head."),
]


def timm_key(name: str) -> str | None:
    """Our parameter name for a timm ``VisionTransformer`` state-dict key (None if unmapped)."""
    for pattern, replacement in _TIMM_KEYS:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return None


def load_timm_state_dict(vit: ViT, timm_model: nn.Module | dict[str, Tensor]) -> ViT:
    """Copy a timm ``VisionTransformer``'s weights (a model or its state dict) into ``vit``.

    Raises:
        ValueError: a timm key has no counterpart here, or the shapes disagree.
    """
    source = timm_model.state_dict() if isinstance(timm_model, nn.Module) else timm_model
    mapped, unmapped = {}, []
    for name, value in source.items():
        ours = timm_key(name)
        if ours is None:
            unmapped.append(name)
        else:
            mapped[ours] = value
    if unmapped:
        raise ValueError(f"timm weights with no ViT counterpart: {unmapped}")
    own = vit.state_dict()
    missing = sorted(set(own) - set(mapped))
    extra = sorted(set(mapped) - set(own))
    if missing or extra:
        raise ValueError(f"timm weights do not match this ViT: missing {missing}, unexpected {extra}")
    mismatched = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in mapped.items() if v.shape != own[k].shape
    ]
    if mismatched:
        raise ValueError(f"timm weights whose shapes differ from this ViT's (timm vs ours): {mismatched}")
    vit.load_state_dict(mapped, strict=True)
    return vit
