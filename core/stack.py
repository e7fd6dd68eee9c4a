"""Stacks of blocks: ``Encoder`` (bidirectional), ``Decoder`` (causal, optional
cross-attention) and ``EncoderDecoder``. Stacks consume embeddings (B, T, D), never ids
or pixels: each task's tokenizer makes the embeddings and its head reads the output.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.block import TransformerBlock, build_dropout, build_norm
from anyformer.core.cache import CrossKVCache, DecoderCache, KVCache, LayerCache
from anyformer.core.config import TransformerConfig
from anyformer.core.ffn import MixtureOfExperts
from anyformer.core.positions import build_input_positions


class TransformerStack(nn.Module):
    """Input positions -> (input norm) -> dropout -> blocks -> (final norm)."""

    def __init__(self, cfg: TransformerConfig, *, causal: bool, cross_attention: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.causal, self.cross_attention = causal, cross_attention
        self.positions = build_input_positions(cfg)
        self.input_norm = build_norm(cfg) if cfg.input_norm else nn.Identity()
        self.dropout = build_dropout(cfg.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg, causal=causal, cross_attention=cross_attention, drop_path=cfg.drop_path_rate(i))
            for i in range(cfg.n_layers)
        )
        self.final_norm = build_norm(cfg) if cfg.use_final_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """Run the blocks over embeddings.

        Args:
            x: (B, T, D) input embeddings (positions are added here for absolute encodings).
            mask: self-attention mask, boolean, broadcastable to (B, H, T, Tk), True = may
                attend; typically ``padding_mask(keep)``. Causal stacks add causality themselves.
            memory: (B, S, D) encoder output, for cross-attention.
            memory_mask: (B, 1, 1, S)-broadcastable mask over memory, True = may attend.
            cache: decoding cache from ``init_cache``, updated in place; x then holds only the
                new tokens, which sit at positions ``cache.length`` onwards.
            maps: if given, attention probabilities of every layer are appended to it.

        Returns:
            (B, T, D) contextual embeddings.
        """
        if cache is not None and not self.causal:
            raise ValueError("a KV cache is only meaningful for a causal (decoder) stack")
        if self.cross_attention and memory is None and (cache is None or cache.length == 0):
            raise ValueError("this decoder has cross-attention: pass `memory` (the encoder output)")
        start = cache.length if cache is not None else 0
        x = self.dropout(self.input_norm(self.positions(x, start)))
        for i, block in enumerate(self.blocks):
            layer_cache = cache.layers[i] if cache is not None else None
            x = block(x, mask=mask, memory=memory, memory_mask=memory_mask, cache=layer_cache, maps=maps)
        return self.final_norm(x)

    def init_cache(self, batch_size: int, max_len: int | None = None, *, device=None, dtype=None) -> DecoderCache:
        """An empty cache for ``batch_size`` streams of up to ``max_len`` (default max_seq_len) tokens."""
        if not self.causal:
            raise ValueError("only a causal (decoder) stack has a KV cache")
        cfg = self.cfg
        max_len = max_len or cfg.max_seq_len
        if cfg.position == "learned" and max_len > cfg.max_seq_len:
            raise ValueError(f"cache max_len={max_len} exceeds the learned positions' max_seq_len={cfg.max_seq_len}")
        if device is None or dtype is None:
            param = next(self.parameters())
            device = device or param.device
            if dtype is None and torch.is_autocast_enabled(torch.device(device).type):
                # Under autocast the keys and values leave the projections in the autocast dtype;
                # a cache in the parameters' dtype would convert them twice per step.
                dtype = torch.get_autocast_dtype(torch.device(device).type)
            dtype = dtype or param.dtype
        return DecoderCache(
            [
                LayerCache(
                    KVCache(batch_size, cfg.n_heads, max_len, cfg.head_dim, device=device, dtype=dtype),
                    CrossKVCache() if self.cross_attention else None,
                )
                for _ in range(cfg.n_layers)
            ]
        )

    def balance_loss(self) -> Tensor:
        """Sum of the mixture-of-experts balancing losses of the last forward (0 when dense)."""
        losses = [block.mlp.balance_loss for block in self.blocks if isinstance(block.mlp, MixtureOfExperts)]
        return torch.stack(losses).sum() if losses else torch.zeros(())


class Encoder(TransformerStack):
    """Bidirectional stack: every token may attend to every (unmasked) token."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__(cfg, causal=False)


class Decoder(TransformerStack):
    """Causal stack: token t attends to tokens <= t; optional cross-attention to a memory."""

    def __init__(self, cfg: TransformerConfig, *, cross_attention: bool = False) -> None:
        super().__init__(cfg, causal=True, cross_attention=cross_attention)


class EncoderDecoder(nn.Module):
    """An ``Encoder`` over the source and a cross-attending ``Decoder`` over the target."""

    def __init__(self, encoder: TransformerConfig, decoder: TransformerConfig) -> None:
        super().__init__()
        if encoder.dim != decoder.dim:
            raise ValueError(f"encoder.dim={encoder.dim} and decoder.dim={decoder.dim} must match for cross-attention")
        self.encoder = Encoder(encoder)
        self.decoder = Decoder(decoder, cross_attention=True)

    def forward(
        self, source: Tensor, target: Tensor, *, source_mask: Tensor | None = None, target_mask: Tensor | None = None
    ) -> Tensor:
        """(B, S, D) source and (B, T, D) target embeddings -> (B, T, D) decoder output.

        ``source_mask`` is a (B, 1, 1, S) padding mask (True = real token) used both by the
        encoder and by the decoder's cross-attention; ``target_mask`` pads the target.
        """
        memory = self.encoder(source, mask=source_mask)
        return self.decoder(target, mask=target_mask, memory=memory, memory_mask=source_mask)
