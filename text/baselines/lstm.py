"""LSTM language model: the recurrent baseline for the GPT ("why attention").

Same data (``TextDataModule``), loss, ``val_loss``/``val_bpc`` and checkpoint contents as
``GPTModule``, which it subclasses; only the network differs: token embedding -> stacked LSTM ->
LM head tied to the embedding. ``anyformer generate`` reads its checkpoints: the recurrent state
is an explicit cache object, like the transformer's KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from anyformer.core.checks import check_index_range
from anyformer.core.train.base import OptimConfig, TaskModule
from anyformer.text.gpt.gpt_task import GPTModule


@dataclass
class LSTMConfig:
    """A stacked-LSTM language model."""

    vocab_size: int = 512
    """Number of token ids (linked from the data module's tokenizer by the CLI)."""
    dim: int = 256
    """Width of the embedding and of every LSTM layer's hidden state."""
    n_layers: int = 2
    """Stacked LSTM layers."""
    dropout: float = 0.0
    """Dropout on the embedding, between layers and before the head."""
    max_seq_len: int = 256
    """Training window (linked from ``data.context_len``); generation restarts its state from the
    last 3/4 of this many tokens when it grows longer, as the GPT does with its context window."""
    tie_embeddings: bool = True
    """Share the LM head's matrix with the token embedding."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"LSTMConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LSTMConfig.dropout must be in [0, 1), got {self.dropout}")


class LSTMState:
    """The recurrent state carried between decoding calls: the decoding cache of an LSTM.

    ``length`` counts the tokens already read and ``max_len`` bounds it, as a KV cache does, so
    ``anyformer.core.decoding`` treats both models alike.
    """

    def __init__(self, max_len: int) -> None:
        self.hidden: tuple[Tensor, Tensor] | None = None  # (h, c), each (n_layers, B, D)
        self.length = 0
        self.max_len = max_len

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search follows each surviving beam's parent)."""
        if self.hidden is not None:
            self.hidden = tuple(state.index_select(1, index) for state in self.hidden)


class LSTMLanguageModel(nn.Module):
    """Ids (B, T) -> next-token logits (B, T, V)."""

    def __init__(self, cfg: LSTMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(cfg.dim, cfg.dim, cfg.n_layers, batch_first=True, dropout=cfg.dropout)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # The GPT's embedding init (normal, std 0.02), so the tied head starts near uniform like it;
        # the LSTM keeps PyTorch's default uniform(+-1/sqrt(dim)) init.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight
        else:
            nn.init.normal_(self.lm_head.weight, std=0.02)

    @property
    def max_seq_len(self) -> int:
        return self.cfg.max_seq_len

    def init_cache(self, batch_size: int, max_len: int | None = None) -> LSTMState:
        """An empty recurrent state for incremental decoding (see anyformer.core.decoding)."""
        return LSTMState(max_len or self.cfg.max_seq_len)

    def forward(self, ids: Tensor, *, cache: LSTMState | None = None) -> Tensor:
        """Next-token logits; causal by construction (each step sees only the tokens before it).

        Args:
            ids: (B, T) token ids; with a cache, only the new tokens.
            cache: state from ``init_cache``, updated in place.

        Returns:
            (B, T, V) logits.
        """
        check_index_range(ids, self.cfg.vocab_size)
        hidden, state = self.lstm(self.dropout(self.token_embedding(ids)), cache.hidden if cache else None)  # (B, T, D)
        if cache is not None:
            cache.hidden, cache.length = state, cache.length + ids.shape[1]
        return self.lm_head(self.dropout(hidden))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class LSTMModule(GPTModule):
    """Trains the LSTM exactly as ``GPTModule`` trains a GPT: same loss, metrics and checkpoint state."""

    task_name = "lstm"
    data_links: ClassVar[dict[str, str]] = {"vocab_size": "config.vocab_size", "context_len": "config.max_seq_len"}

    def __init__(self, config: LSTMConfig, optim: OptimConfig | None = None) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
        """
        # GPTModule.__init__ would build a GPT; everything else of GPTModule is reused as is.
        TaskModule.__init__(self, config, optim)
        self.model = LSTMLanguageModel(config)
        self.tokenizer = None
        self.chars_per_token = 1.0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        # GPTModule's step adds a mixture-of-experts balancing loss an LSTM does not have.
        loss = self._loss(batch)
        self.check_finite(loss)
        self.log("train_loss", loss, prog_bar=True)
        return loss
