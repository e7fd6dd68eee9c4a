"""GPT: token embedding -> causal core stack -> LM head tied to the embedding."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.cache import DecoderCache
from anyformer.core.checks import check_index_range
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_scaled_embeddings, init_weights
from anyformer.core.linear import Linear
from anyformer.core.stack import Decoder
from anyformer.core.train.base import OptimConfig, TaskModule


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

    def forward(self, ids: Tensor, *, mask: Tensor | None = None, cache: DecoderCache | None = None) -> Tensor:
        """Next-token logits.

        Args:
            ids: (B, T) token ids; with a cache, only the new tokens.
            mask: optional (B, 1, 1, Tk) padding mask, True = real token (causality is implicit).
            cache: KV cache from ``init_cache``, updated in place.

        Returns:
            (B, T, V) logits.
        """
        if not torch.compiler.is_compiling():  # a data-dependent check would split the graph
            check_index_range(ids, self.cfg.vocab_size)
        embedded = self.token_embedding(ids)
        if self.embedding_scale != 1.0:
            embedded = embedded * self.embedding_scale
        hidden = self.decoder(embedded, mask=mask, cache=cache)
        return self.lm_head(hidden)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GPTModule(TaskModule):
    """Trains GPT with next-token cross-entropy; validation reports nats/token and bits/char."""

    task_name = "gpt"
    data_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "context_len": "config.transformer.max_seq_len",
    }

    def __init__(self, config: GPTConfig, optim: OptimConfig | None = None, balance_loss_weight: float = 0.01) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            balance_loss_weight: weight of the mixture-of-experts balancing loss (unused when dense).
        """
        super().__init__(config, optim)
        self.model = GPT(config)
        self.balance_loss_weight = balance_loss_weight
        self.tokenizer: Any = None
        self.chars_per_token = 1.0

    def read_data(self, data: Any) -> None:
        if self.tokenizer is None:
            self.tokenizer = data.tokenizer
            self.chars_per_token = data.val_chars_per_token

    def inference_state(self) -> dict[str, Any]:
        return {
            "tokenizer": self.tokenizer.to_state() if self.tokenizer else None,
            "chars_per_token": self.chars_per_token,
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        from anyformer.text.tokenizer import tokenizer_from_state

        self.tokenizer = tokenizer_from_state(state["tokenizer"]) if state.get("tokenizer") else None
        self.chars_per_token = state.get("chars_per_token", 1.0)

    def _loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits = self.model(batch["input_ids"])
        return F.cross_entropy(logits.flatten(0, 1), batch["targets"].flatten())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.check_finite(loss)
        self.log("train_loss", loss, prog_bar=True)
        if self.config.transformer.n_experts:
            balance = self.model.decoder.balance_loss()
            self.log("train_balance_loss", balance)
            loss = loss + self.balance_loss_weight * balance
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True)  # nats per token
        self.log("val_bpc", loss / math.log(2) / self.chars_per_token, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss = self._loss(batch)
        self.log("test_loss", loss)
        self.log("test_bpc", loss / math.log(2) / self.chars_per_token)
