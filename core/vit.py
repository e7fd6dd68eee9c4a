"""Vision Transformer: patch tokenizer -> core Encoder -> pooled linear head (Dosovitskiy et al. 2021).

timm's ``VisionTransformer`` layout (pre-norm blocks, [CLS] token, learned positions, final
LayerNorm) over any (C, H, W) grid of values. The domains configure it with their own defaults and
input stages; this is the one encoder, pooling and head they share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_weights
from anyformer.core.linear import Linear
from anyformer.core.patches import POSITIONS, PatchTokenizer, patch_grid, to_pair
from anyformer.core.stack import Encoder

POOLS = ("cls", "mean")


def _vit_transformer() -> TransformerConfig:
    return TransformerConfig(dim=128, n_layers=6, n_heads=4, position="none", norm_eps=1e-6)


def check_patch_fields(cfg: Any, owner: str) -> None:
    """Validate the fields every patch-transformer config shares, naming ``owner``'s fields in errors;
    YAML lists in ``patch_size`` / ``patch_stride`` become (height, width) tuples.

    ``cfg`` has ``patch_size``, ``patch_stride``, ``num_classes``, ``pool``, ``position`` and ``transformer``.
    """
    if cfg.pool not in POOLS:
        raise ValueError(f"{owner}.pool={cfg.pool!r} is not one of {list(POOLS)}")
    if cfg.position not in POSITIONS:
        raise ValueError(f"{owner}.position={cfg.position!r} is not one of {list(POSITIONS)}")
    if cfg.num_classes < 1:
        raise ValueError(f"{owner}.num_classes must be >= 1, got {cfg.num_classes!r}")
    if cfg.transformer.position != "none":
        raise ValueError(
            f"{owner}.transformer.position={cfg.transformer.position!r} must be 'none': the patch tokenizer "
            f"adds 2-D positions itself (choose them with {owner}.position)"
        )
    for name in ("patch_size", "patch_stride"):
        value = getattr(cfg, name)
        if value is not None:
            pair = to_pair(value, f"{owner}.{name}")  # validates
            setattr(cfg, name, value if isinstance(value, int) else pair)


@dataclass
class ViTConfig:
    """An image classifier over (possibly overlapping) patches."""

    image_size: int | tuple[int, int] = 224
    """Side of a square input image, or (H, W)."""
    patch_size: int | tuple[int, int] = 16
    """Side of a square patch, or (Ph, Pw)."""
    patch_stride: int | tuple[int, int] | None = None
    """Step between patches, one int or (Sh, Sw); smaller than the patch = overlap; None = patch_size."""
    pad: bool = False
    """Zero-pad the bottom and right edges so the patches cover any size; False: they must tile it exactly."""
    in_channels: int = 3
    """Image channels (1 grayscale or spectrogram, 3 RGB)."""
    num_classes: int = 1000
    """Number of classes."""
    pool: str = "cls"
    """Summary the head reads: ``cls`` ([CLS] token) or ``mean`` (mean of the patch tokens)."""
    position: str = "learned"
    """2-D patch positions: ``learned`` (timm layout, resampled for other sizes), ``sinusoidal``, or ``none``
    (no positions: the ablation that shows what they are for)."""
    transformer: TransformerConfig = field(default_factory=_vit_transformer)
    """The encoder stack; ``position`` must be ``none`` (the patch tokenizer adds 2-D positions)."""

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_patch_fields(self, owner)
        if self.in_channels < 1:
            raise ValueError(f"{owner}.in_channels must be >= 1, got {self.in_channels!r}")
        if not isinstance(self.image_size, int):
            self.image_size = to_pair(self.image_size, f"{owner}.image_size")
        try:
            self.grid_size  # noqa: B018 -- raises when the patches cannot cover the image
        except ValueError as err:
            raise ValueError(f"{owner}.image_size/patch_size: {err}") from None

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Gh, Gw) patches along the height and the width."""
        patch = to_pair(self.patch_size)
        stride = patch if self.patch_stride is None else to_pair(self.patch_stride)
        return patch_grid(to_pair(self.image_size), patch, stride, pad=self.pad)[0]

    @property
    def num_patches(self) -> int:
        """N = Gh * Gw tokens besides [CLS]."""
        return math.prod(self.grid_size)


class ViT(nn.Module):
    """Images (B, C, H, W) -> class logits (B, num_classes).

    Args:
        cfg: the model.
        proj: replaces the tokenizer's linear patch projection (see ``PatchTokenizer``).
    """

    def __init__(self, cfg: ViTConfig, proj: nn.Module | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer.dim
        self.tokenizer = PatchTokenizer(
            cfg.image_size, cfg.patch_size, cfg.in_channels, dim, cfg.position, stride=cfg.patch_stride, pad=cfg.pad,
            proj=proj,
        )  # fmt: skip
        self.encoder = Encoder(cfg.transformer)
        self.head = Linear(dim, cfg.num_classes)
        init_weights(self.encoder, cfg.transformer.n_layers)
        init_weights(self.head, cfg.transformer.n_layers)

    def forward_features(self, images: Tensor, *, maps: AttentionMaps | None = None) -> Tensor:
        """Contextual tokens after the final norm.

        Args:
            images: (B, C, H, W), normalized; any H and W the patches cover (positions are resampled
                when the grid differs from ``cfg.image_size``'s).
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
