"""Positional encodings.

Absolute encodings (``sinusoidal``, ``learned``) are added to the input embeddings by the
stack; rotary (``rope``) rotates queries and keys inside self-attention, so the stack's
input adder is the identity for it. Every module takes ``start``, the absolute position of
the first token, so a cached decoding step gets the right positions.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from anyformer.core.config import TransformerConfig


def sinusoidal_table(positions: Tensor, dim: int, base: float = 10000.0) -> Tensor:
    """Interleaved sinusoids: ``pe[p, 2i] = sin(p / base^(2i/dim))``, ``pe[p, 2i+1] = cos(...)``.

    Args:
        positions: (T,) absolute positions (any length: the formula needs no table).

    Returns:
        (T, dim) float32 table.
    """
    half = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = torch.exp(-math.log(base) * half / dim)  # (ceil(dim/2),)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, ceil(dim/2))
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # (T, 2*ceil(dim/2))
    return table[:, :dim]


class NoPositions(nn.Module):
    """Adds nothing: for ``none`` and for ``rope`` (which acts inside attention)."""

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        return x


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal encodings, precomputed up to ``max_seq_len`` and computed beyond."""

    def __init__(self, dim: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        self.dim, self.base = dim, base
        self.register_buffer("table", sinusoidal_table(torch.arange(max_seq_len), dim, base), persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """(B, T, D) -> (B, T, D) with the encodings of positions start..start+T-1 added."""
        end = start + x.shape[1]
        if end <= self.table.shape[0]:
            table = self.table[start:end]
        else:
            table = sinusoidal_table(torch.arange(start, end, device=x.device), self.dim, self.base)
        return x + table.to(x.dtype)


class LearnedPositions(nn.Module):
    """A trained vector per position (GPT-2, BERT); positions >= ``max_seq_len`` are an error."""

    def __init__(self, dim: int, max_seq_len: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_seq_len, dim)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """(B, T, D) -> (B, T, D) with the embeddings of positions start..start+T-1 added."""
        end = start + x.shape[1]
        if end > self.embedding.num_embeddings:
            raise ValueError(
                f"sequence reaches position {end - 1} but learned positions stop at "
                f"max_seq_len={self.embedding.num_embeddings}; crop the input or raise max_seq_len"
            )
        return x + self.embedding.weight[start:end]


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE), 'rotate half' layout as in GPT-NeoX / LLaMA.

    Rotating q and k by angles proportional to their positions makes the score q.k depend
    on positions only through their difference.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base
        cos, sin = self._tables(torch.arange(max_seq_len))
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        inv_freq = self.base ** (-torch.arange(0, self.head_dim, 2, device=positions.device).float() / self.head_dim)
        angles = positions.float()[:, None] * inv_freq[None, :]  # (T, Dh/2)
        angles = torch.cat([angles, angles], dim=-1)  # (T, Dh)
        return angles.cos(), angles.sin()

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """Rotate (B, H, T, Dh) queries or keys that sit at positions start..start+T-1."""
        end = start + x.shape[-2]
        if end <= self.cos.shape[0]:
            cos, sin = self.cos[start:end], self.sin[start:end]
        else:
            cos, sin = self._tables(torch.arange(start, end, device=x.device))
        first, second = x.chunk(2, dim=-1)
        rotated = torch.cat([-second, first], dim=-1)
        return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def build_input_positions(cfg: TransformerConfig) -> nn.Module:
    """The module that adds absolute positions to a stack's input (identity for none/rope)."""
    if cfg.position == "sinusoidal":
        return SinusoidalPositions(cfg.dim, cfg.max_seq_len, cfg.rope_base)
    if cfg.position == "learned":
        return LearnedPositions(cfg.dim, cfg.max_seq_len)
    return NoPositions()
