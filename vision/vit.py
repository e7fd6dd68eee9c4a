"""Vision Transformer: patch tokenizer -> core Encoder -> linear head (Dosovitskiy et al. 2021).

The model is timm's ``VisionTransformer`` (pre-norm blocks, [CLS] token, learned positions,
final LayerNorm), built from the shared core; ``ViT.from_timm`` copies a timm model's weights
and reproduces its logits.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_weights
from anyformer.core.linear import Linear
from anyformer.core.stack import Encoder
from anyformer.vision.stem import STEMS
from anyformer.vision.tokenizer import POSITIONS, PatchTokenizer, check_divisible, to_2tuple

POOLS = ("cls", "mean")


def _vit_transformer() -> TransformerConfig:
    return TransformerConfig(dim=128, n_layers=6, n_heads=4, position="none", norm_eps=1e-6)


@dataclass
class ViTConfig:
    """An image classifier over non-overlapping patches."""

    image_size: int | tuple[int, int] = 28
    """Side of a square input image, or (H, W); linked from the data module by the CLI."""
    patch_size: int = 4
    """Side P of a square patch; must divide the image size."""
    in_channels: int = 1
    """Image channels (1 grayscale, 3 RGB); linked from the data module."""
    num_classes: int = 10
    """Number of classes; linked from the data module."""
    pool: str = "cls"
    """Image summary the head reads: ``cls`` ([CLS] token) or ``mean`` (mean of the patch tokens)."""
    position: str = "learned"
    """2-D patch positions: ``learned`` (timm layout, resampled for other sizes), ``sinusoidal``, or ``none``
    (no positions: the ablation that shows what they are for)."""
    stem: str = "patch"
    """Tokenizer: ``patch`` (linear PxP patch projection, the ViT) or ``conv`` (strided 3x3 convolutions
    to the same token grid, the hybrid ViT of Xiao et al. 2021; P a power of two)."""
    stem_width: int = 32
    """Channels of the conv stem's first block (doubled at each of its log2(P) blocks)."""
    stem_depth: int = 1
    """Conv3x3 blocks per resolution of the conv stem: 1 (the paper's stem), or more (stride-1 blocks)."""
    transformer: TransformerConfig = field(default_factory=_vit_transformer)
    """The encoder stack; ``position`` must be ``none`` (the patch tokenizer adds 2-D positions)."""

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"ViTConfig.pool={self.pool!r} is not one of {list(POOLS)}")
        if self.position not in POSITIONS:
            raise ValueError(f"ViTConfig.position={self.position!r} is not one of {list(POSITIONS)}")
        if self.stem not in STEMS:
            raise ValueError(f"ViTConfig.stem={self.stem!r} is not one of {list(STEMS)}")
        if self.stem == "conv" and (self.patch_size < 2 or self.patch_size & (self.patch_size - 1)):
            raise ValueError(
                f"ViTConfig.stem='conv' needs a patch_size that is a power of two >= 2, got {self.patch_size}"
            )
        if self.transformer.position != "none":
            raise ValueError(
                f"ViTConfig.transformer.position={self.transformer.position!r} must be 'none': the patch tokenizer "
                "adds 2-D positions itself (choose them with ViTConfig.position)"
            )
        for name in ("patch_size", "in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ViTConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not isinstance(self.image_size, int):
            self.image_size = to_2tuple(self.image_size)
        try:
            check_divisible(to_2tuple(self.image_size), self.patch_size)
        except ValueError as err:
            raise ValueError(f"ViTConfig.image_size/patch_size: {err}") from None

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Gh, Gw) patches along the height and the width."""
        return check_divisible(to_2tuple(self.image_size), self.patch_size)

    @property
    def num_patches(self) -> int:
        """N = Gh * Gw tokens besides [CLS]."""
        return math.prod(self.grid_size)


class ViT(nn.Module):
    """Images (B, C, H, W) -> class logits (B, num_classes)."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer.dim
        self.tokenizer = PatchTokenizer(
            cfg.image_size, cfg.patch_size, cfg.in_channels, dim, cfg.position, cfg.stem, cfg.stem_width,
            cfg.stem_depth,
        )  # fmt: skip
        self.encoder = Encoder(cfg.transformer)
        self.head = Linear(dim, cfg.num_classes)
        init_weights(self.encoder, cfg.transformer.n_layers)
        init_weights(self.head, cfg.transformer.n_layers)

    def forward_features(self, images: Tensor, *, maps: AttentionMaps | None = None) -> Tensor:
        """Contextual tokens after the final norm.

        Args:
            images: (B, C, H, W), normalized; H and W multiples of the patch size (positions are
                resampled when they differ from ``cfg.image_size``).
            maps: if given, each layer's (B, H, 1+N, 1+N) attention probabilities are appended.

        Returns:
            (B, 1 + N, D), [CLS] first. No mask: every token may attend to every token.
        """
        return self.encoder(self.tokenizer(images), maps=maps)

    def pool(self, features: Tensor) -> Tensor:
        """(B, 1 + N, D) -> (B, D): the [CLS] token or the mean of the patch tokens."""
        return features[:, 0] if self.cfg.pool == "cls" else features[:, 1:].mean(dim=1)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, 1 + N, D) features -> (B, num_classes) logits."""
        return self.head(self.pool(features))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(images))

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides norms and biases: [CLS] and positions."""
        names = {"tokenizer.cls_token"}
        if self.tokenizer.pos_embed is not None:
            names.add("tokenizer.pos_embed")
        return names

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

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
    patch = to_2tuple(m.patch_embed.patch_size)
    if patch[0] != patch[1]:
        raise ValueError(f"only square patches are supported, timm model has {patch}")
    dim = m.embed_dim
    transformer = TransformerConfig(
        dim=dim, n_layers=len(m.blocks), n_heads=block.attn.num_heads, mlp_ratio=block.mlp.fc1.out_features / dim,
        norm_eps=m.norm.eps, position="none", activation="gelu", ffn="gelu", bias=True,
    )  # fmt: skip
    image_size = to_2tuple(m.patch_embed.img_size)
    return ViTConfig(
        image_size=image_size[0] if image_size[0] == image_size[1] else image_size,
        patch_size=patch[0],
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
