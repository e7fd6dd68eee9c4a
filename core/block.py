"""A transformer block: self-attention, optional cross-attention, feed-forward."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps, MultiHeadAttention
from anyformer.core.cache import LayerCache
from anyformer.core.config import TransformerConfig
from anyformer.core.ffn import build_ffn


def build_norm(cfg: TransformerConfig) -> nn.Module:
    """The normalization layer the config asks for."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.dim, eps=cfg.norm_eps)
    return nn.LayerNorm(cfg.dim, eps=cfg.norm_eps, bias=cfg.bias)


def build_dropout(p: float) -> nn.Module:
    """Dropout, or the identity when ``p`` is 0 (one module call and one op fewer per use in a decoding step)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def build_drop_path(p: float) -> nn.Module:
    """Stochastic depth over whole samples (torchvision's, the "row" mode: each sample of the batch
    keeps or skips the branch, kept ones scaled by 1 / (1 - p)), or the identity when ``p`` is 0.
    It has no parameters or buffers, so state dicts are the same with or without it."""
    if p == 0:
        return nn.Identity()
    # Imported here: torchvision's package import more than doubles ``import anyformer.core`` (~1.5 s),
    # which every model without stochastic depth would pay.
    from torchvision.ops import StochasticDepth

    return StochasticDepth(p, mode="row")


class TransformerBlock(nn.Module):
    """Pre-norm ``x + f(norm(x))`` or post-norm ``norm(x + f(x))`` around each sublayer.

    Args:
        cfg: the stack's shape and flavour.
        causal: causal self-attention (a decoder block).
        cross_attention: add cross-attention to a memory after self-attention.
        drop_path: this block's stochastic-depth rate on each residual branch (the stack gives
            ``cfg.drop_path_rate(i)``).
    """

    def __init__(
        self, cfg: TransformerConfig, *, causal: bool = False, cross_attention: bool = False, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        self.norm1 = build_norm(cfg)
        self.attn = MultiHeadAttention(cfg, causal=causal)
        self.norm_cross = build_norm(cfg) if cross_attention else None
        self.cross_attn = MultiHeadAttention(cfg, cross=True) if cross_attention else None
        self.norm2 = build_norm(cfg)
        self.mlp = build_ffn(cfg)
        self.dropout = build_dropout(cfg.dropout)
        self.drop_path = build_drop_path(drop_path)

    def _sublayer(self, x: Tensor, norm: nn.Module, fn: Callable[..., Tensor], **kwargs) -> Tensor:
        if self.pre_norm:
            return x + self.drop_path(self.dropout(fn(norm(x), **kwargs)))
        return norm(x + self.drop_path(self.dropout(fn(x, **kwargs))))

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: LayerCache | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """(B, T, D) -> (B, T, D). Masks: boolean, True = may attend (see anyformer.core.masks)."""
        x = self._sublayer(
            x, self.norm1, self.attn, mask=mask,
            cache=cache.self_attn if cache else None, maps=maps.self_attn if maps else None,
        )  # fmt: skip
        if self.cross_attn is not None:
            x = self._sublayer(
                x, self.norm_cross, self.cross_attn, memory=memory, mask=memory_mask,
                cache=cache.cross_attn if cache else None, maps=maps.cross_attn if maps else None,
            )  # fmt: skip
        return self._sublayer(x, self.norm2, self.mlp)
