"""Encoder-decoder translation model: source ids -> core ``EncoderDecoder`` -> target logits.

Reads as ``tokenizer -> embedding -> core stack -> head``:

- source ids (B, S) -> ``src_embedding`` -> ``Encoder`` (bidirectional self-attention over the
  real source tokens) -> memory (B, S, D);
- target ids (B, T) -> ``tgt_embedding`` -> ``Decoder`` (causal self-attention + cross-attention
  to the memory) -> ``lm_head`` (tied to the target embedding) -> logits (B, T, V_tgt).

Embeddings are **not** scaled by sqrt(dim) by default (``scale_embeddings=False``): every weight
uses GPT-2's Normal(0, 0.02) init, which puts token and learned position embeddings on the same
scale. ``scale_embeddings=True`` is the original Transformer's recipe instead: token embeddings
drawn from Normal(0, 1/dim) and multiplied by sqrt(dim), meant for sinusoidal positions.

Special tokens come from the tokenizer: the decoder starts from ``[CLS]`` (used as BOS, so BOS and
EOS are different tokens and the model never confuses "start" with "stop"), stops at
``<|endoftext|>`` (EOS), and ``[PAD]`` pads batches. The source is encoded as ``tokens + EOS``.

Decoding reuses ``anyformer.core.decoding`` unchanged: :class:`BoundDecoder` binds one batch of encoder
memory to the decoder and satisfies ``anyformer.core.decoding.CausalModel``; :func:`translate_ids` runs
greedy (``generate``) or beam search (``beam_search``) through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.cache import DecoderCache
from anyformer.core.config import TransformerConfig
from anyformer.core.decoding import GenerationConfig, beam_search, generate
from anyformer.core.init import init_scaled_embeddings, init_weights
from anyformer.core.linear import Linear
from anyformer.core.masks import padding_mask
from anyformer.core.stack import EncoderDecoder


def _default_stack() -> TransformerConfig:
    return TransformerConfig(dim=128, n_layers=2, n_heads=4, max_seq_len=64)


@dataclass
class Seq2SeqConfig:
    """A translation model: encoder over the source, cross-attending decoder over the target."""

    src_vocab_size: int = 512
    """Source token ids (linked from the data module's tokenizer by the CLI)."""
    tgt_vocab_size: int = 512
    """Target token ids (linked from the data module; equals ``src_vocab_size`` when shared)."""
    shared_vocab: bool = True
    """One tokenizer for both languages: source and target share one embedding matrix."""
    encoder: TransformerConfig = field(default_factory=_default_stack)
    """The bidirectional source stack; its ``max_seq_len`` caps source tokens (EOS included)."""
    decoder: TransformerConfig = field(default_factory=_default_stack)
    """The causal target stack; its ``max_seq_len`` caps BOS + target tokens."""
    tie_embeddings: bool = True
    """Share the output head's matrix with the target embedding."""
    scale_embeddings: bool = False
    """Multiply token embeddings by sqrt(dim) (original Transformer); off with GPT-2 init."""

    def __post_init__(self) -> None:
        for name in ("src_vocab_size", "tgt_vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"Seq2SeqConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.shared_vocab and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"Seq2SeqConfig.shared_vocab=True needs src_vocab_size == tgt_vocab_size, "
                f"got {self.src_vocab_size} and {self.tgt_vocab_size}"
            )
        if self.encoder.dim != self.decoder.dim:
            raise ValueError(
                f"Seq2SeqConfig.encoder.dim={self.encoder.dim} and decoder.dim={self.decoder.dim} must match"
            )

    @property
    def dim(self) -> int:
        return self.decoder.dim


class Seq2Seq(nn.Module):
    """Source ids (B, S) and target ids (B, T) -> target logits (B, T, V_tgt)."""

    def __init__(self, cfg: Seq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.src_embedding = nn.Embedding(cfg.src_vocab_size, cfg.dim)
        self.tgt_embedding = self.src_embedding if cfg.shared_vocab else nn.Embedding(cfg.tgt_vocab_size, cfg.dim)
        self.core = EncoderDecoder(cfg.encoder, cfg.decoder)
        self.lm_head = Linear(cfg.dim, cfg.tgt_vocab_size, bias=False)
        # Residual projections shrink with each stack's own depth.
        init_weights(self, cfg.encoder.n_layers)
        init_weights(self.core.decoder, cfg.decoder.n_layers)
        self.embedding_scale = 1.0
        if cfg.scale_embeddings:
            embeddings = {id(e): e for e in (self.src_embedding, self.tgt_embedding)}.values()  # shared: once
            self.embedding_scale = init_scaled_embeddings(embeddings, cfg.dim)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embedding.weight

    @property
    def max_source_len(self) -> int:
        return self.cfg.encoder.max_seq_len

    @property
    def max_target_len(self) -> int:
        return self.cfg.decoder.max_seq_len

    def init_decoder_cache(self, batch_size: int, max_len: int | None = None) -> DecoderCache:
        """An empty cache for :meth:`decode` (``BoundDecoder`` asks every translation model for one)."""
        return self.core.decoder.init_cache(batch_size, max_len)

    @staticmethod
    def _check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
        if ids.numel() and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(f"{name} ids must be in [0, {vocab_size}), got range [{ids.min()}, {ids.max()}]")

    def encode(self, source: Tensor, source_keep: Tensor | None = None, *, maps: AttentionMaps | None = None) -> Tensor:
        """Source ids (B, S) -> memory (B, S, D).

        Args:
            source: (B, S) token ids, right-padded.
            source_keep: (B, S) bool, True at real tokens (None: no padding).
            maps: if given, each encoder layer's (B, H, S, S) attention probabilities are appended.
        """
        self._check_ids(source, self.cfg.src_vocab_size, "source")
        if source.shape[1] > self.max_source_len:
            raise ValueError(
                f"source has {source.shape[1]} tokens but the encoder's max_seq_len is {self.max_source_len}; crop it"
            )
        mask = padding_mask(source_keep) if source_keep is not None else None
        return self.core.encoder(self.src_embedding(source) * self.embedding_scale, mask=mask, maps=maps)

    def decode_features(
        self,
        target: Tensor,
        memory: Tensor,
        memory_mask: Tensor | None = None,
        *,
        cache: DecoderCache | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """Target ids -> decoder states, attending to ``memory``: :meth:`decode` without the head.

        Args:
            target: (B, T) ids; with a cache, only the new tokens (at positions ``cache.length`` on).
            memory: (B, S, D) encoder output (read once per cache, then taken from the cache).
            memory_mask: (B, 1, 1, S) boolean, True = real source token (``padding_mask(source_keep)``).
            cache: decoder cache from ``Decoder.init_cache``, updated in place.
            maps: if given, each decoder layer's (B, H, T, Tk) self-attention probabilities are appended
                to ``maps.self_attn`` and its (B, H, T, S) cross-attention ones to ``maps.cross_attn``.

        Returns:
            (B, T, D) decoder states after its final norm.
        """
        self._check_ids(target, self.cfg.tgt_vocab_size, "target")
        x = self.tgt_embedding(target) * self.embedding_scale
        return self.core.decoder(x, memory=memory, memory_mask=memory_mask, cache=cache, maps=maps)

    def decode(
        self, target: Tensor, memory: Tensor, memory_mask: Tensor | None = None, *, cache: DecoderCache | None = None
    ) -> Tensor:
        """Target ids -> next-token logits, attending to ``memory``.

        Args:
            target: (B, T) ids; with a cache, only the new tokens (at positions ``cache.length`` on).
            memory: (B, S, D) encoder output (read once per cache, then taken from the cache).
            memory_mask: (B, 1, 1, S) boolean, True = real source token (``padding_mask(source_keep)``).
            cache: decoder cache from ``Decoder.init_cache``, updated in place.

        Returns:
            (B, T, V_tgt) logits. No target padding mask is needed: with right padding and causal
            attention, real tokens never see the padding after them.
        """
        return self.forward_head(self.decode_features(target, memory, memory_mask, cache=cache))

    def forward_features(
        self,
        source: Tensor,
        target: Tensor,
        *,
        source_keep: Tensor | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """Teacher-forced decoder states, before the output head.

        Args:
            source: (B, S) source ids, right-padded.
            target: (B, T) decoder input ids (BOS + target[:-1]), right-padded.
            source_keep: (B, S) bool, True at real source tokens.
            maps: if given, ``maps.self_attn`` receives the encoder's layers, (B, H, S, S) each, then
                the decoder's, (B, H, T, T) each; ``maps.cross_attn`` the decoder's (B, H, T, S).

        Returns:
            (B, T, D) decoder states after its final norm.
        """
        memory = self.encode(source, source_keep, maps=maps)
        mask = padding_mask(source_keep) if source_keep is not None else None
        return self.decode_features(target, memory, mask, maps=maps)

    def forward(self, source: Tensor, target: Tensor, *, source_keep: Tensor | None = None) -> Tensor:
        """Teacher-forced logits: the output head over :meth:`forward_features`.

        Args:
            source: (B, S) source ids, right-padded.
            target: (B, T) decoder input ids (BOS + target[:-1]), right-padded.
            source_keep: (B, S) bool, True at real source tokens.

        Returns:
            (B, T, V_tgt) logits.
        """
        return self.forward_head(self.forward_features(source, target, source_keep=source_keep))

    def forward_head(self, hidden: Tensor) -> Tensor:
        """(B, T, D) decoder states -> (B, T, V_tgt) next-token logits."""
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BoundDecoder:
    """The decoder with one batch of encoder memory bound: a ``anyformer.core.decoding.CausalModel``.

    Works for any model with ``encode``, ``decode``, ``init_decoder_cache`` and
    ``max_target_len``: :class:`Seq2Seq`, and ``anyformer.text.baselines.gru_seq2seq.GRUSeq2Seq`` whose cache is
    its recurrent state.

    Rows of ``memory`` are the decoding streams; for beam search pass the memory already
    expanded per beam (``repeat_interleave(beams, 0)``), matching ``beam_search``'s layout.
    Beams are only ever reordered within their own row, so the bound memory needs no reorder;
    the cross-attention keys/values live in the cache and are reordered with it.
    """

    def __init__(self, model: Seq2Seq, memory: Tensor, memory_keep: Tensor) -> None:
        self.model, self.memory = model, memory
        self.memory_mask = padding_mask(memory_keep)  # (B, 1, 1, S), True = real token
        self.max_seq_len = model.max_target_len

    def init_cache(self, batch_size: int, max_len: int | None = None) -> DecoderCache:
        if batch_size != self.memory.shape[0]:
            raise ValueError(f"cache for {batch_size} streams, but {self.memory.shape[0]} memories are bound")
        return self.model.init_decoder_cache(batch_size, max_len)

    def __call__(self, ids: Tensor, *, cache: DecoderCache) -> Tensor:
        """(B, T) new ids -> (B, T, V) logits; the memory is projected on the first call only."""
        return self.model.decode(ids, self.memory, self.memory_mask, cache=cache)


def bind_memory(model: Seq2Seq, source: Tensor, source_keep: Tensor, beams: int = 1) -> BoundDecoder:
    """Encode (B, S) ``source`` once and bind it, repeated ``beams`` times per row, to the decoder."""
    memory = model.encode(source, source_keep)
    return BoundDecoder(model, memory.repeat_interleave(beams, 0), source_keep.repeat_interleave(beams, 0))


def default_max_new_tokens(source_keep: Tensor, max_target_len: int) -> int:
    """Budget of new tokens: twice the longest source plus 10, within the decoder's window."""
    return min(max_target_len, 2 * int(source_keep.sum(1).max()) + 10)


@torch.no_grad()
def translate_ids(
    model: Seq2Seq,
    source: Tensor,
    source_keep: Tensor,
    *,
    bos_id: int,
    eos_id: int,
    strategy: str = "greedy",
    beams: int = 4,
    length_penalty: float = 1.0,
    max_new_tokens: int | None = None,
) -> list[list[int]]:
    """Translate a batch of source ids; returns each row's target ids without BOS and EOS.

    Args:
        model: the translation model (put it in eval mode).
        source: (B, S) source ids (``tokens + EOS``), right-padded.
        source_keep: (B, S) bool, True at real tokens.
        bos_id: the token the decoder starts from.
        eos_id: the token that ends a translation.
        strategy: ``greedy`` or ``beam``.
        beams: beam width for ``beam``.
        length_penalty: ``beam`` ranks by log_prob / length**length_penalty.
        max_new_tokens: stop after this many tokens (default :func:`default_max_new_tokens`);
            never more than the decoder's ``max_seq_len``, so the window never has to slide.
    """
    if strategy not in ("greedy", "beam"):
        raise ValueError(f"translation strategy {strategy!r} is not one of ['greedy', 'beam']")
    limit = model.max_target_len
    budget = default_max_new_tokens(source_keep, limit) if max_new_tokens is None else min(max_new_tokens, limit)
    width = beams if strategy == "beam" else 1
    cfg = GenerationConfig(strategy, max_new_tokens=budget, beams=width, length_penalty=length_penalty, eos_id=eos_id)
    bound = bind_memory(model, source, source_keep, width)
    start = torch.full((source.shape[0], 1), bos_id, dtype=torch.long, device=source.device)  # (B, 1)
    if strategy == "beam":
        rows = [hyps[0].tokens for hyps in beam_search(bound, start, cfg)]
    else:
        rows = generate(bound, start, cfg)[:, 1:].tolist()
    return [row[: row.index(eos_id)] if eos_id in row else row for row in rows]
