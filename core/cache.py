"""Key/value caches for incremental decoding.

A cache is an explicit object that the caller creates (``Decoder.init_cache``), passes to
every forward call and owns; attention layers append to it in place. Nothing is hidden in
module state, so one model can decode many independent streams at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


class KVCache:
    """Self-attention keys and values of one layer, preallocated for ``max_len`` positions.

    Preallocation keeps a decoding step free of ``torch.cat`` copies: a step writes its new
    keys into the next free slots and attends over a view of the filled prefix.
    """

    def __init__(self, batch_size: int, n_heads: int, max_len: int, head_dim: int, *, device=None, dtype=None) -> None:
        shape = (batch_size, n_heads, max_len, head_dim)  # (B, H, T_max, Dh)
        # Uninitialized: only the filled prefix is ever read, and zero-filling a long cache (tens
        # of MiB for a batch) would cost more than a short generation.
        self.keys = torch.empty(shape, device=device, dtype=dtype)
        self.values = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.keys.shape[2]

    def append(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Store (B, H, T, Dh) new keys/values; return all keys/values so far, (B, H, length, Dh)."""
        end = self.length + keys.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions requested, cache holds {self.max_len}")
        # Slicing rather than ``narrow``: the same views, one operator fewer each (narrow dispatches
        # to slice), and a decoding step makes four of them per layer.
        self.keys[:, :, self.length : end] = keys
        self.values[:, :, self.length : end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]  # (B, H, length, Dh) views of the filled prefix

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search: follow each surviving beam's parent).

        Only the filled prefix is moved: a beam step early in a long cache copies a few
        positions, not ``max_len``.
        """
        if index.shape[0] == self.keys.shape[0]:
            for buffer in (self.keys, self.values):
                filled = buffer.narrow(2, 0, self.length)
                filled.copy_(filled.index_select(0, index))  # index_select copies first, so rows may repeat
        else:
            self.keys = self.keys.index_select(0, index)
            self.values = self.values.index_select(0, index)


class CrossKVCache:
    """Cross-attention keys and values: computed from the encoder memory once, then reused."""

    def __init__(self) -> None:
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        if self.keys is not None:
            self.keys = self.keys.index_select(0, index)
            self.values = self.values.index_select(0, index)


@dataclass
class LayerCache:
    """What one decoder block remembers between steps."""

    self_attn: KVCache
    cross_attn: CrossKVCache | None = None


@dataclass
class DecoderCache:
    """The caches of every block of a decoder stack."""

    layers: list[LayerCache] = field(default_factory=list)

    @property
    def length(self) -> int:
        """Number of positions already processed (the next token's absolute position)."""
        return self.layers[0].self_attn.length if self.layers else 0

    @property
    def max_len(self) -> int:
        return self.layers[0].self_attn.max_len

    def reorder(self, index: Tensor) -> None:
        """Select batch rows ``index`` in every layer (used by beam search)."""
        for layer in self.layers:
            layer.self_attn.reorder(index)
            if layer.cross_attn is not None:
                layer.cross_attn.reorder(index)
