"""GRU encoder-decoder with attention: the recurrent baseline of the seq2seq Transformer.

Same data (``ParallelDataModule``), losses, metrics (``val_loss``, ``val_bleu``, ``test_bleu_*``),
decoding and checkpoint contents as ``Seq2SeqModule``, which it subclasses; only the network
differs (Luong et al. 2015, "Effective Approaches to Attention-based NMT", with input feeding):

- source ids (B, S) -> embedding (E) -> bidirectional GRU, ``hidden_dim // 2`` per direction
  (packed, so padding never enters the recurrence) -> memory (B, S, H), zeros at padding;
- the decoder's initial state is ``tanh(W mean(memory))`` over the real source tokens (Nematus);
- each target step: ``x_t = [embedding(y_{t-1}); a_{t-1}]`` (input feeding) -> GRU -> h_t (H) ->
  attention over the memory with h_t as the query -> context c_t (H) ->
  ``a_t = tanh(W_c [c_t; h_t])`` (E) -> ``lm_head`` (tied to the target embedding) -> logits.

The attentional vector a_t is ``emb_dim`` wide so the output layer can always share the target
embedding's matrix, whatever ``hidden_dim`` is. Attention scores (``ATTENTIONS``): Luong's
``dot`` (h_t . m_s) and ``general`` (h_t . W_a m_s), or Bahdanau's ``additive``
(v . tanh(W_q h_t + W_k m_s)), all in Luong's order (the query is the state after the step).

Decoding goes through ``anyformer.core.decoding`` unchanged: the recurrent state (:class:`GRUState`:
hidden states, last attentional vector, projected memory) is the "cache" -- it counts
``length``, bounds it by ``max_len`` and follows beams with ``reorder`` -- and
``anyformer.text.seq2seq.seq2seq.translate_ids`` binds the memory as it does for the Transformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from anyformer.core.masks import lengths_to_keep
from anyformer.core.train.base import OptimConfig
from anyformer.text.seq2seq.seq2seq import Seq2Seq
from anyformer.text.seq2seq.seq2seq_task import Seq2SeqModule


# -- attention scores ---------------------------------------------------------------------------
class DotScore(nn.Module):
    """Luong's ``dot``: score(h, m) = h . m."""

    def __init__(self, dim: int) -> None:
        super().__init__()

    def project(self, memory: Tensor) -> Tensor:
        return memory

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        return query @ keys.transpose(1, 2)  # (B, T, H) @ (B, H, S) -> (B, T, S)


class GeneralScore(DotScore):
    """Luong's ``general``: score(h, m) = h . W_a m, with W_a m computed once per sentence."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.proj = nn.Linear(dim, dim, bias=False)

    def project(self, memory: Tensor) -> Tensor:
        return self.proj(memory)


class AdditiveScore(nn.Module):
    """Bahdanau's additive score: v . tanh(W_q h + W_k m), with W_k m computed once per sentence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.key_proj = nn.Linear(dim, dim, bias=False)
        self.query_proj = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, 1, bias=False)

    def project(self, memory: Tensor) -> Tensor:
        return self.key_proj(memory)

    def forward(self, query: Tensor, keys: Tensor) -> Tensor:
        mixed = torch.tanh(self.query_proj(query)[:, :, None] + keys[:, None])  # (B, T, S, H)
        return self.v(mixed).squeeze(-1)  # (B, T, S)


ATTENTIONS: dict[str, type[nn.Module]] = {"dot": DotScore, "general": GeneralScore, "additive": AdditiveScore}


# -- config and model ---------------------------------------------------------------------------
@dataclass
class GRUSeq2SeqConfig:
    """A bidirectional-GRU encoder and an attentive GRU decoder with input feeding."""

    src_vocab_size: int = 512
    """Source token ids (linked from the data module's tokenizer by the CLI)."""
    tgt_vocab_size: int = 512
    """Target token ids (linked from the data module; equals ``src_vocab_size`` when shared)."""
    shared_vocab: bool = True
    """One tokenizer for both languages: source and target share one embedding matrix."""
    emb_dim: int = 128
    """Width of the token embeddings and of the attentional vector fed to the output layer."""
    hidden_dim: int = 128
    """Decoder GRU width and memory width (each encoder direction has half of it); even."""
    encoder_layers: int = 1
    """Stacked bidirectional GRU layers of the encoder."""
    decoder_layers: int = 1
    """Stacked GRU layers of the decoder."""
    attention: str = "general"
    """Attention score: one of ``dot``, ``general`` (Luong) or ``additive`` (Bahdanau)."""
    dropout: float = 0.0
    """Dropout on embeddings, between GRU layers and before the output layer."""
    tie_embeddings: bool = True
    """Share the output layer's matrix with the target embedding."""
    max_source_len: int = 64
    """Source ids per sentence, EOS included (linked from the data); longer input is cropped by ``translate``."""
    max_target_len: int = 64
    """BOS + target ids (linked from the data): the most tokens a translation may have."""

    def __post_init__(self) -> None:
        sizes = ("src_vocab_size", "tgt_vocab_size", "emb_dim", "hidden_dim", "encoder_layers", "decoder_layers")
        for name in (*sizes, "max_source_len", "max_target_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRUSeq2SeqConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim % 2:
            raise ValueError(
                f"GRUSeq2SeqConfig.hidden_dim must be even (two encoder directions), got {self.hidden_dim}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(f"GRUSeq2SeqConfig.attention={self.attention!r} is not one of {list(ATTENTIONS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GRUSeq2SeqConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.shared_vocab and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError(
                f"GRUSeq2SeqConfig.shared_vocab=True needs src_vocab_size == tgt_vocab_size, "
                f"got {self.src_vocab_size} and {self.tgt_vocab_size}"
            )


class GRUState:
    """The decoder's recurrent state between calls: the decoding cache of a GRU decoder.

    Filled by the first ``decode`` call from the bound memory; ``length`` counts the target
    tokens read and ``max_len`` bounds it, as a KV cache does, so ``anyformer.core.decoding`` treats
    both decoders alike.
    """

    def __init__(self, max_len: int) -> None:
        self.hidden: Tensor | None = None  # (L, B, H) every decoder layer's state
        self.feed: Tensor | None = None  # (B, E) the last attentional vector (input feeding)
        self.keys: Tensor | None = None  # (B, S, H) the memory as the attention score reads it
        self.length = 0
        self.max_len = max_len

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows ``index`` (beam search follows each surviving beam's parent)."""
        if self.hidden is not None:
            self.hidden = self.hidden.index_select(1, index)
            self.feed = self.feed.index_select(0, index)
            self.keys = self.keys.index_select(0, index)


class GRUSeq2Seq(nn.Module):
    """Source ids (B, S) and target ids (B, T) -> target logits (B, T, V_tgt).

    The interface of ``anyformer.text.seq2seq.seq2seq.Seq2Seq`` (``encode``, ``decode``, ``init_decoder_cache``,
    ``max_source_len``, ``max_target_len``), so ``translate_ids`` and ``Seq2SeqModule`` use either.
    """

    def __init__(self, cfg: GRUSeq2SeqConfig) -> None:
        super().__init__()
        self.cfg = cfg
        emb, hidden = cfg.emb_dim, cfg.hidden_dim
        self.src_embedding = nn.Embedding(cfg.src_vocab_size, emb)
        self.tgt_embedding = self.src_embedding if cfg.shared_vocab else nn.Embedding(cfg.tgt_vocab_size, emb)
        self.dropout = nn.Dropout(cfg.dropout)
        gru_dropout = cfg.dropout if cfg.encoder_layers > 1 else 0.0  # nn.GRU warns about dropout with 1 layer
        self.encoder = nn.GRU(emb, hidden // 2, cfg.encoder_layers, batch_first=True, bidirectional=True,
                              dropout=gru_dropout)  # fmt: skip
        self.bridge = nn.Linear(hidden, cfg.decoder_layers * hidden)  # mean memory -> initial decoder states
        gru_dropout = cfg.dropout if cfg.decoder_layers > 1 else 0.0
        self.decoder = nn.GRU(2 * emb, hidden, cfg.decoder_layers, batch_first=True, dropout=gru_dropout)
        self.score = ATTENTIONS[cfg.attention](hidden)
        self.combine = nn.Linear(2 * hidden, emb, bias=False)  # [c_t; h_t] -> a_t
        self.lm_head = nn.Linear(emb, cfg.tgt_vocab_size, bias=False)
        # Embeddings drawn from N(0, 1/emb_dim): unit-norm GRU inputs, and O(1) logits from the tied
        # head (a_t is in [-1, 1]). The GPT's std 0.02 starved the GRUs: on the reversal task of the
        # tests the loss barely moved in 80 steps. GRUs and linears keep PyTorch's uniform init.
        for layer in (self.src_embedding, self.tgt_embedding, self.lm_head):
            nn.init.normal_(layer.weight, std=emb**-0.5)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tgt_embedding.weight

    @property
    def max_source_len(self) -> int:
        return self.cfg.max_source_len

    @property
    def max_target_len(self) -> int:
        return self.cfg.max_target_len

    _check_ids = staticmethod(Seq2Seq._check_ids)  # the Transformer's error for out-of-range ids

    def encode(self, source: Tensor, source_keep: Tensor | None = None) -> Tensor:
        """Source ids (B, S) -> memory (B, S, H), zero at padding.

        Args:
            source: (B, S) token ids, right-padded.
            source_keep: (B, S) bool, True at real tokens, a prefix of each row (None: no padding).
        """
        self._check_ids(source, self.cfg.src_vocab_size, "source")
        lengths = torch.full((source.shape[0],), source.shape[1]) if source_keep is None else source_keep.sum(1).cpu()
        if source_keep is not None and not torch.equal(source_keep.cpu(), lengths_to_keep(lengths, source.shape[1])):
            raise ValueError("source_keep must mark a prefix of each row (right padding)")
        if source.shape[1] == 0 or lengths.min() < 1:
            raise ValueError("every source row needs at least one real token (the data module appends EOS)")
        packed = pack_padded_sequence(self.dropout(self.src_embedding(source)), lengths, batch_first=True,
                                      enforce_sorted=False)  # fmt: skip
        memory, _ = pad_packed_sequence(self.encoder(packed)[0], batch_first=True, total_length=source.shape[1])
        return memory  # (B, S, H): forward and backward halves side by side

    def init_decoder_cache(self, batch_size: int, max_len: int | None = None) -> GRUState:
        """An empty decoder state; the first ``decode`` call fills it from the memory."""
        return GRUState(max_len or self.max_target_len)

    def _start(self, state: GRUState, memory: Tensor, keep: Tensor | None) -> None:
        """Initial decoder states from the mean of the real memory positions; no attentional vector yet."""
        weights = torch.ones(memory.shape[:2], device=memory.device) if keep is None else keep[:, 0].to(memory.dtype)
        mean = (weights[..., None] * memory).sum(1) / weights.sum(1, keepdim=True)  # (B, H)
        hidden = torch.tanh(self.bridge(mean)).view(memory.shape[0], self.cfg.decoder_layers, -1)  # (B, L, H)
        state.hidden = hidden.transpose(0, 1).contiguous()  # (L, B, H)
        state.feed = memory.new_zeros(memory.shape[0], self.cfg.emb_dim)
        state.keys = self.score.project(memory)

    def decode(
        self, target: Tensor, memory: Tensor, memory_mask: Tensor | None = None, *, cache: GRUState | None = None
    ) -> Tensor:
        """Target ids -> next-token logits, attending to ``memory``; one GRU step per token.

        Args:
            target: (B, T) ids; with a cache, only the new tokens.
            memory: (B, S, H) encoder output (read on a cache's first call only).
            memory_mask: (B, 1, 1, S) or (B, S) boolean, True = real source token (may attend).
            cache: state from ``init_decoder_cache``, updated in place (None: start afresh).

        Returns:
            (B, T, V_tgt) logits.
        """
        self._check_ids(target, self.cfg.tgt_vocab_size, "target")
        keep = None if memory_mask is None else memory_mask.reshape(memory.shape[0], 1, memory.shape[1])  # (B, 1, S)
        state = self.init_decoder_cache(target.shape[0]) if cache is None else cache
        if state.hidden is None:
            self._start(state, memory, keep)
        embedded = self.dropout(self.tgt_embedding(target))  # (B, T, E)
        outputs = []
        for t in range(target.shape[1]):
            step_in = torch.cat([embedded[:, t], state.feed], dim=-1)[:, None]  # (B, 1, 2E)
            query, state.hidden = self.decoder(step_in, state.hidden)  # (B, 1, H)
            scores = self.score(query, state.keys)  # (B, 1, S)
            if keep is not None:
                scores = scores.masked_fill(~keep, float("-inf"))
            context = scores.softmax(dim=-1) @ memory  # (B, 1, S) @ (B, S, H) -> (B, 1, H)
            state.feed = torch.tanh(self.combine(torch.cat([context, query], dim=-1)))[:, 0]  # (B, E)
            outputs.append(state.feed)
        state.length += target.shape[1]
        return self.lm_head(self.dropout(torch.stack(outputs, dim=1)))  # (B, T, V)

    def forward(self, source: Tensor, target: Tensor, *, source_keep: Tensor | None = None) -> Tensor:
        """Teacher-forced logits (B, T, V_tgt), with the arguments of ``Seq2Seq.forward``."""
        return self.decode(target, self.encode(source, source_keep), source_keep)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class GRUSeq2SeqModule(Seq2SeqModule):
    """Trains :class:`GRUSeq2Seq` exactly as ``Seq2SeqModule`` trains the Transformer."""

    task_name = "gru-seq2seq"
    model_class = GRUSeq2Seq
    data_links: ClassVar[dict[str, str]] = {
        **Seq2SeqModule.data_links,
        "max_source_len": "config.max_source_len",
        "max_target_len": "config.max_target_len",
    }

    def __init__(self, config: GRUSeq2SeqConfig, optim: OptimConfig | None = None, **evaluation: Any) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            evaluation: ``Seq2SeqModule``'s ``label_smoothing``, ``val_bleu_sentences``, ``test_beams``
                and ``length_penalty``, with its defaults.
        """
        super().__init__(config, optim, **evaluation)
