"""Multi-head attention on ``torch.nn.functional.scaled_dot_product_attention``.

Shape notation used throughout core/: B batch, T tokens (Tq queries, Tk keys), D width,
H heads, Dh head width (D = H * Dh). Masks follow anyformer.core.masks: boolean, broadcastable to
(B, H, Tq, Tk), True = may attend.

Locality Self-Attention (Lee, Lee, Song 2021, "Vision Transformer for Small-Size Datasets") is the
``locality_self_attention`` option of an encoder's self-attention: softmax(q k^T / tau) with a learned
temperature tau per layer, and the diagonal masked so that no token attends to itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.cache import CrossKVCache, KVCache
from anyformer.core.config import TransformerConfig
from anyformer.core.linear import Linear
from anyformer.core.masks import causal_mask, merge_masks, no_self_mask
from anyformer.core.positions import RotaryEmbedding


@dataclass
class AttentionMaps:
    """Collects attention probabilities, (B, H, Tq, Tk) per layer, when passed to a forward.

    Passing one switches the layers to an explicit softmax path (slower, but it exposes
    the weights); the default path never materializes them.
    """

    self_attn: list[Tensor] = field(default_factory=list)
    cross_attn: list[Tensor] = field(default_factory=list)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention with optional causal masking, RoPE and KV cache.

    Self-attention projects q, k, v with one fused matrix (``qkv_proj``); cross-attention
    projects queries from x (``q_proj``) and keys/values from the memory (``kv_proj``). With
    ``cfg.locality_self_attention`` (non-causal self-attention only) the layer learns its softmax
    temperature (``log_temperature``) and masks the diagonal.
    """

    def __init__(self, cfg: TransformerConfig, *, causal: bool = False, cross: bool = False) -> None:
        super().__init__()
        if cfg.locality_self_attention and (causal or cross):
            kind = "causal self-attention" if causal else "cross-attention"
            raise ValueError(
                f"TransformerConfig.locality_self_attention=True is for non-causal self-attention (an encoder), "
                f"but this layer is {kind}: set it False in the decoder's config"
            )
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.causal, self.cross = causal, cross
        self.dropout = cfg.attn_dropout
        if cross:
            self.q_proj = Linear(cfg.dim, cfg.dim, bias=cfg.bias)
            self.kv_proj = Linear(cfg.dim, 2 * cfg.dim, bias=cfg.bias)
        else:
            self.qkv_proj = Linear(cfg.dim, 3 * cfg.dim, bias=cfg.bias)
        self.out_proj = Linear(cfg.dim, cfg.dim, bias=cfg.bias)
        use_rope = cfg.position == "rope" and not cross
        self.rope = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_base) if use_rope else None
        # LSA's temperature tau, stored as log(tau): it stays positive whatever step the optimizer takes
        # (a tau crossing 0 would flip every score's sign), a step moves the scale by a factor rather than
        # an amount, and 0-dim it is never weight-decayed (param_groups decays matrices only). It starts
        # at log(sqrt(Dh)), so the first steps attend exactly as with the usual 1/sqrt(Dh). Absent (None)
        # without LSA: the state dict of every other model keeps exactly its old keys.
        self.log_temperature: nn.Parameter | None = None
        if cfg.locality_self_attention:
            self.log_temperature = nn.Parameter(torch.tensor(0.5 * math.log(cfg.head_dim)))

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, T, D) -> (B, H, T, Dh)

    def _project(
        self, x: Tensor, memory: Tensor | None, cache: KVCache | CrossKVCache | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        if not self.cross:
            b, t, _ = x.shape
            qkv = self.qkv_proj(x).view(b, t, 3, self.n_heads, self.head_dim)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, T, 3D) -> 3 x (B, H, T, Dh), no copies
            if self.rope is not None:
                start = cache.length if cache is not None else 0
                q, k = self.rope(q, start), self.rope(k, start)
            if cache is not None:
                k, v = cache.append(k, v)
            return q, k, v
        q = self._heads(self.q_proj(x))
        if cache is not None and cache.keys is not None:
            return q, cache.keys, cache.values
        if memory is None:
            raise ValueError("cross-attention needs `memory` (the encoder output), got None")
        k, v = self.kv_proj(memory).chunk(2, dim=-1)
        k, v = self._heads(k), self._heads(v)
        if cache is not None:
            cache.keys, cache.values = k, v
        return q, k, v

    def forward(
        self,
        x: Tensor,
        *,
        memory: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | CrossKVCache | None = None,
        maps: list[Tensor] | None = None,
    ) -> Tensor:
        """Attend from x to itself (or to ``memory`` for cross-attention).

        Args:
            x: (B, Tq, D) queries' inputs.
            memory: (B, Tk, D) encoder output; cross-attention only (ignored once cached).
            mask: boolean, broadcastable to (B, H, Tq, Tk), True = may attend. A causal layer's
                causal constraint and LSA's diagonal are added here; pass only padding.
            cache: the layer's cache; updated in place.
            maps: if given, the (B, H, Tq, Tk) attention probabilities are appended to it.

        Returns:
            (B, Tq, D).
        """
        q, k, v = self._project(x, memory, cache)
        n_queries, n_keys = q.shape[2], k.shape[2]
        scale = None  # SDPA's default, 1/sqrt(Dh)
        if self.log_temperature is not None:
            if n_keys == 1:
                raise ValueError(
                    "locality_self_attention masks the diagonal, so a sequence of 1 token leaves its query no key "
                    "to attend to: give it at least 2 tokens (e.g. [CLS] and a patch)"
                )
            # q k^T / tau as (q / tau) k^T with SDPA's own scale 1: one (B, H, T, Dh) multiply, and the
            # fused kernels still run.
            q, scale = q * (-self.log_temperature).exp(), 1.0
            mask = merge_masks(no_self_mask(n_queries, device=x.device), mask)
        is_causal = False
        if self.causal:
            if mask is None and n_queries == n_keys:
                is_causal = True  # lets SDPA pick its fused causal kernel
            elif n_queries > 1:
                mask = merge_masks(causal_mask(n_queries, n_keys, device=x.device), mask)
        dropout = self.dropout if self.training else 0.0
        if maps is None:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal, scale=scale
            )
        else:
            if is_causal:
                mask = causal_mask(n_queries, n_keys, device=x.device)
            out, probs = _attention_with_probs(q, k, v, mask, dropout, scale)
            maps.append(probs)
        out = out.transpose(1, 2).reshape(x.shape[0], n_queries, -1)  # (B, H, Tq, Dh) -> (B, Tq, D)
        return self.out_proj(out)


def _attention_with_probs(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout: float, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """The explicit softmax(q k^T * scale) v, returning the probabilities too; ``scale`` None is
    1/sqrt(Dh), as for SDPA.

    A query row with no key to attend to gets all-zero probabilities and a zero output, as
    SDPA's fused path gives, instead of the NaN of a softmax over only ``-inf``.
    """
    scores = q @ k.transpose(-2, -1)  # (B, H, Tq, Tk)
    scores = scores / q.shape[-1] ** 0.5 if scale is None else scores * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    if mask is not None:
        # Partly masked rows already hold exact zeros there; this clears the NaN of fully masked
        # rows, and masked_fill's backward passes no gradient through the NaN either.
        probs = probs.masked_fill(~mask, 0.0)
    return F.dropout(probs, dropout) @ v, probs
