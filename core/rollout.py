"""Attention rollout (Abnar & Zuidema 2020): which input tokens (patches of an image or of a
spectrogram) a model's summary draws from.

Each layer's attention, averaged over heads, is mixed with the identity to account for the
residual connection (``0.5 * A + 0.5 * I``, rows renormalized); the product over layers says how
much of each input token flows into each output token.
"""

from __future__ import annotations

import torch
from torch import Tensor


def attention_rollout(attentions: list[Tensor], residual: float = 0.5) -> Tensor:
    """Token-to-token attribution through all layers.

    Args:
        attentions: per layer (first to last), (B, H, T, T) attention probabilities, e.g.
            ``anyformer.core.attention.AttentionMaps().self_attn`` after a forward.
        residual: weight of the identity (the skip connection) mixed into each layer.

    Returns:
        (B, T, T) with rows summing to 1: row i is how much output token i draws from each input token.
    """
    if not attentions:
        raise ValueError("attention_rollout needs at least one layer's attention")
    b, _, t, _ = attentions[0].shape
    eye = torch.eye(t, device=attentions[0].device)
    rollout = eye.expand(b, t, t)
    for layer in attentions:
        mixed = (1 - residual) * layer.float().mean(dim=1) + residual * eye  # (B, T, T)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout
    return rollout


def summary_weights(attention: Tensor, pool: str = "cls", prefix: int = 1) -> Tensor:
    """How much the pooled summary draws from each patch.

    Args:
        attention: (B, P+N, P+N) token-to-token weights (one layer's, heads averaged, or a rollout);
            the first ``prefix`` = P tokens are summaries ([CLS], then a distillation token), the
            N patches follow.
        pool: ``'cls'`` averages the summary tokens' rows (a distilled ViT's logits average the
            heads reading them); ``'mean'`` averages the patch rows.
        prefix: P.

    Returns:
        (B, N): the chosen row(s) without the summary columns.
    """
    rows = attention[:, :prefix] if pool == "cls" else attention[:, prefix:]
    return rows.mean(dim=1)[:, prefix:]


def patch_relevance(attentions: list[Tensor], grid: tuple[int, int], pool: str = "cls", prefix: int = 1) -> Tensor:
    """(B, Gh, Gw) relevance of each patch to the pooled summary, scaled to [0, 1] per image.

    ``pool='cls'`` reads the summary tokens' rows of the rollout; ``'mean'`` averages the patch rows.
    The first ``prefix`` tokens are summaries ([CLS], a distillation token); patches follow row-major.
    """
    relevance = summary_weights(attention_rollout(attentions), pool, prefix)  # (B, P+N, P+N) -> (B, N)
    low = relevance.min(dim=-1, keepdim=True).values
    high = relevance.max(dim=-1, keepdim=True).values
    relevance = (relevance - low) / (high - low).clamp_min(1e-12)
    return relevance.reshape(-1, *grid)
