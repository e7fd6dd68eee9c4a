"""GPT: token embedding -> causal core stack -> LM head tied to the embedding.

The network only; ``anyformer.text.gpt.gpt_task.GPTModule`` trains it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.cache import DecoderCache
from anyformer.core.checks import check_index_range
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_scaled_embeddings, init_weights
from anyformer.core.linear import Linear
from anyformer.core.stack import Decoder


@dataclass
class GPTConfig:
    """A decoder-only language model."""

    vocab_size: int = 512
    """Number of token ids (linked from the data module's tokenizer by the CLI)."""
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    """The causal stack."""
    tie_embeddings: bool = True
    """Share the LM head's matrix with the token embedding (GPT-2)."""
    scale_embeddings: bool = False
    """Token embeddings drawn from Normal(0, 1/dim) and multiplied by sqrt(dim) (original Transformer):
    the scale sinusoidal positions need; off keeps GPT-2's Normal(0, 0.02), right for learned/RoPE."""

    def __post_init__(self) -> None:
        if self.vocab_size < 1:
            raise ValueError(f"GPTConfig.vocab_size must be >= 1, got {self.vocab_size}")


class GPT(nn.Module):
    """Ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.transformer.dim)
        self.decoder = Decoder(cfg.transformer)
        self.lm_head = Linear(cfg.transformer.dim, cfg.vocab_size, bias=False)
        init_weights(self, cfg.transformer.n_layers)
        self.embedding_scale = 1.0
        if cfg.scale_embeddings:
            self.embedding_scale = init_scaled_embeddings([self.token_embedding], cfg.transformer.dim)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight

    @property
    def max_seq_len(self) -> int:
        return self.cfg.transformer.max_seq_len

    def init_cache(self, batch_size: int, max_len: int | None = None) -> DecoderCache:
        """An empty KV cache for incremental decoding (see anyformer.core.decoding)."""
        return self.decoder.init_cache(batch_size, max_len)

    def forward_features(
        self,
        ids: Tensor,
        *,
        mask: Tensor | None = None,
        cache: DecoderCache | None = None,
        maps: AttentionMaps | None = None,
    ) -> Tensor:
        """Contextual token states, before the LM head.

        Args:
            ids: (B, T) token ids; with a cache, only the new tokens.
            mask: optional (B, 1, 1, Tk) padding mask, True = real token (causality is implicit).
            cache: KV cache from ``init_cache``, updated in place.
            maps: if given, each layer's (B, H, T, Tk) attention probabilities are appended.

        Returns:
            (B, T, D) hidden states after the final norm.
        """
        check_index_range(ids, self.cfg.vocab_size)
        embedded = self.token_embedding(ids)  # (B, T, D)
        if self.embedding_scale != 1.0:
            embedded = embedded * self.embedding_scale
        return self.decoder(embedded, mask=mask, cache=cache, maps=maps)

    def forward_head(self, hidden: Tensor) -> Tensor:
        """(B, T, D) hidden states -> (B, T, V) next-token logits."""
        return self.lm_head(hidden)

    def forward(self, ids: Tensor, *, mask: Tensor | None = None, cache: DecoderCache | None = None) -> Tensor:
        """Next-token logits: ``forward_head(forward_features(ids, mask=mask, cache=cache))``.

        Args:
            ids: (B, T) token ids; with a cache, only the new tokens.
            mask: optional (B, 1, 1, Tk) padding mask, True = real token (causality is implicit).
            cache: KV cache from ``init_cache``, updated in place.

        Returns:
            (B, T, V) logits.
        """
        return self.forward_head(self.forward_features(ids, mask=mask, cache=cache))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
