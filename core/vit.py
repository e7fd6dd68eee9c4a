"""Vision Transformer: patch tokenizer -> core Encoder -> pooled linear head (Dosovitskiy et al. 2021).

timm's ``VisionTransformer`` layout (pre-norm blocks, [CLS] token, learned positions, final
LayerNorm) over any (C, H, W) grid of values. The domains configure it with their own defaults and
input stages; this is the one encoder, pooling and head they share.

With ``distill`` it is DeiT's distilled ViT (Touvron et al. 2021): a learned distillation token
after [CLS] and a second linear head that reads it; training fits that head to a teacher's
predictions (the task's loss), inference averages the two heads' logits. Off by default: the
parameters, and so every checkpoint without it, are unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
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
    distill: bool = False
    """DeiT's distillation token: a second summary token after [CLS] with its own head (``head_dist``),
    trained on a teacher's labels; the logits are the mean of the two heads'."""

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

    Tokens are [CLS], then the distillation token when ``cfg.distill``, then the N patches:
    ``num_prefix_tokens`` is 1 or 2.

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
        # Absent (None) without distillation, as the tokenizer's pos_embed without learned
        # positions: the state dict of a plain ViT keeps exactly its old keys.
        self.dist_token: nn.Parameter | None = None
        self.head_dist: Linear | None = None
        if cfg.distill:
            # One parameter is the token plus its position (the same for every image), as timm's
            # DeiT pos_embed slot and dist_token together; timm's init.
            self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.trunc_normal_(self.dist_token, std=0.02)
            self.head_dist = Linear(dim, cfg.num_classes)
            init_weights(self.head_dist, cfg.transformer.n_layers)
        init_weights(self.encoder, cfg.transformer.n_layers)
        init_weights(self.head, cfg.transformer.n_layers)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches: [CLS], and the distillation token when ``cfg.distill``."""
        return 1 if self.dist_token is None else 2

    def forward_features(self, images: Tensor, *, maps: AttentionMaps | None = None) -> Tensor:
        """Contextual tokens after the final norm.

        Args:
            images: (B, C, H, W), normalized; any H and W the patches cover (positions are resampled
                when the grid differs from ``cfg.image_size``'s).
            maps: if given, each layer's (B, H, P+N, P+N) attention probabilities are appended.

        Returns:
            (B, P + N, D) with P = ``num_prefix_tokens``: [CLS] first, then the distillation token
            when there is one. No mask: every token may attend to every token.
        """
        x = self.tokenizer(images)  # (B, 1+N, D), [CLS] first
        if self.dist_token is not None:
            x = torch.cat([x[:, :1], self.dist_token.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)  # (B, 2+N, D)
        return self.encoder(x, maps=maps)

    def pool(self, features: Tensor) -> Tensor:
        """(B, P + N, D) -> (B, D): the [CLS] token or the mean of the patch tokens."""
        return features[:, 0] if self.cfg.pool == "cls" else features[:, self.num_prefix_tokens :].mean(dim=1)

    def forward_heads(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 2 + N, D) features of a distilled ViT -> the class head's and the distillation head's
        (B, num_classes) logits, apart (training fits them to different targets)."""
        if self.head_dist is None:
            raise ValueError("forward_heads needs a ViT built with distill=True (it has one head)")
        return self.head(self.pool(features)), self.head_dist(features[:, 1])

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, P + N, D) features -> (B, num_classes) logits; a distilled ViT averages its two heads (DeiT)."""
        if self.head_dist is None:
            return self.head(self.pool(features))
        logits, dist_logits = self.forward_heads(features)
        return (logits + dist_logits) / 2

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(images))

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides norms and biases: [CLS] and positions."""
        names = {"tokenizer.cls_token"}
        if self.tokenizer.pos_embed is not None:
            names.add("tokenizer.pos_embed")
        if self.dist_token is not None:
            names.add("dist_token")
        return names

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
