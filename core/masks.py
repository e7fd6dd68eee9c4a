"""Attention masks.

One convention for the whole code base: a mask is a boolean tensor broadcastable to
(B, H, Tq, Tk) where **True means "may attend"**, exactly as the boolean ``attn_mask`` of
``torch.nn.functional.scaled_dot_product_attention``. ``None`` means "attend everywhere".
(``nn.MultiheadAttention``'s ``key_padding_mask`` has the opposite polarity; convert with
``padding_mask(~key_padding_mask)`` at that boundary.)
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(n_queries: int, n_keys: int | None = None, *, device: torch.device | None = None) -> Tensor:
    """Lower-triangular mask for queries that are the last ``n_queries`` of ``n_keys`` positions.

    Query i (absolute position ``n_keys - n_queries + i``) may attend to every key at or
    before its own position; this covers a full pass (``n_keys == n_queries``) and a
    cached step that appends ``n_queries`` tokens after ``n_keys - n_queries`` cached ones.

    Returns:
        (1, 1, Tq, Tk) boolean mask, True = may attend.
    """
    n_keys = n_queries if n_keys is None else n_keys
    if n_keys < n_queries:
        raise ValueError(f"causal_mask: n_keys={n_keys} must be >= n_queries={n_queries}")
    offset = n_keys - n_queries
    mask = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device).tril(diagonal=offset)
    return mask[None, None]


def no_self_mask(n_tokens: int, *, device: torch.device | None = None) -> Tensor:
    """Every token may attend to every other token but not to itself (Locality Self-Attention's
    diagonal masking, Lee et al. 2021: without its own key, a token's attention goes to the others).

    Returns:
        (1, 1, T, T) boolean mask, True = may attend.
    """
    return ~torch.eye(n_tokens, dtype=torch.bool, device=device)[None, None]


def padding_mask(keep: Tensor) -> Tensor:
    """Key mask from a (B, Tk) boolean tensor that is True at real tokens.

    Returns:
        (B, 1, 1, Tk) boolean mask, True = may attend.
    """
    if keep.dtype != torch.bool or keep.dim() != 2:
        raise ValueError(f"padding_mask expects a (B, Tk) bool tensor, got {tuple(keep.shape)} {keep.dtype}")
    return keep[:, None, None, :]


def lengths_to_keep(lengths: Tensor, max_len: int) -> Tensor:
    """(B,) sequence lengths -> (B, max_len) boolean tensor, True at real (non-padding) tokens."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def merge_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of any number of masks (``None`` entries are ignored)."""
    merged = None
    for mask in masks:
        if mask is None:
            continue
        merged = mask if merged is None else merged & mask
    return merged


def masked_mean(vectors: Tensor, keep: Tensor) -> Tensor:
    """Mean over the kept positions: vectors (B, T, D), keep (B, T) bool (True = counts) -> (B, D).

    A row without any kept position averages to zeros instead of NaN.
    """
    weights = keep.to(vectors.dtype).unsqueeze(-1)  # (B, T, 1)
    return (vectors * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)
