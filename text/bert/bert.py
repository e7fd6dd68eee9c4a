"""BERT (Devlin et al. 2019): token + segment embeddings -> core Encoder -> pooler, with the
pretraining heads (masked LM, next-sentence prediction) and a sentence-classification head.

Inputs are ``[CLS] A [SEP] B [SEP]`` (or ``[CLS] A [SEP]``) with segment ids 0 for ``[CLS] A
[SEP]`` and 1 for ``B [SEP]``, plus a boolean ``keep`` tensor that is True at real tokens and
False at padding (padding is never attended). The layout mirrors Hugging Face's ``BertModel``:
post-norm blocks, LayerNorm on the summed embeddings, learned positions, a pooler
``tanh(dense(h_[CLS]))`` read by the NSP and classification heads, and an MLM head
``dense -> GELU -> LayerNorm -> decoder`` whose matrix is the token embedding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.checks import check_index_range
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_weights
from anyformer.core.linear import Linear
from anyformer.core.masks import masked_mean, padding_mask
from anyformer.core.stack import Encoder

logger = logging.getLogger(__name__)


SUMMARIES = {
    "cls": lambda hidden, keep: hidden[:, 0],
    "mean": masked_mean,
}
"""How a sentence's (B, T, D) states become the (B, D) vector the classification pooler reads."""


def _bert_transformer() -> TransformerConfig:
    return TransformerConfig(
        dim=128, n_layers=2, n_heads=4, norm_position="post", input_norm=True, position="learned",
        activation="gelu", norm_eps=1e-12, max_seq_len=128, dropout=0.1, attn_dropout=0.1,
    )  # fmt: skip


@dataclass
class BertConfig:
    """A bidirectional encoder over one or two segments, with BERT's heads."""

    vocab_size: int = 512
    """Number of token ids (linked from the data module's tokenizer by the CLI)."""
    n_segments: int = 2
    """Segment (token-type) embeddings: 0 for sentence A, 1 for sentence B."""
    num_classes: int = 2
    """Classes of the classification head (linked from the data module; unused by pretraining)."""
    classifier_dropout: float = 0.1
    """Dropout on the pooled vector before the classification layer."""
    classifier_pool: str = "cls"
    """What the classification head reads through the pooler: ``cls`` (the [CLS] state, as in BERT)
    or ``mean`` (the mean of the states of the real tokens)."""
    transformer: TransformerConfig = field(default_factory=_bert_transformer)
    """The encoder stack; BERT is post-norm (``norm_position: post``) with ``input_norm: true``.
    Pre-norm is allowed: ``norm_position: pre`` (``final_norm`` then defaults to true)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_segments", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"BertConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.classifier_pool not in SUMMARIES:
            raise ValueError(
                f"BertConfig.classifier_pool must be one of {sorted(SUMMARIES)}, got {self.classifier_pool!r}"
            )
        if not 0.0 <= self.classifier_dropout < 1.0:
            raise ValueError(f"BertConfig.classifier_dropout must be in [0, 1), got {self.classifier_dropout!r}")
        if self.transformer.position == "none":
            raise ValueError("BertConfig.transformer.position='none' leaves BERT without word order; use 'learned'")
        if self.transformer.norm_position == "pre" and not self.transformer.use_final_norm:
            logger.warning("BERT with pre-norm blocks and final_norm=false: the heads read an unnormalized stream")


class BertModel(nn.Module):
    """Ids + segments -> contextual embeddings (B, T, D), and the pooled [CLS] vector (B, D)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer.dim
        self.token_embedding = nn.Embedding(cfg.vocab_size, dim)
        self.segment_embedding = nn.Embedding(cfg.n_segments, dim)
        self.encoder = Encoder(cfg.transformer)  # adds positions, applies the embedding LayerNorm
        self.pooler = Linear(dim, dim)

    def forward(self, ids: Tensor, segments: Tensor, keep: Tensor, *, maps: AttentionMaps | None = None) -> Tensor:
        """Contextual embeddings.

        Args:
            ids: (B, T) token ids.
            segments: (B, T) segment ids in ``[0, n_segments)``.
            keep: (B, T) bool, True at real tokens, False at padding (never attended).
            maps: if given, each layer's (B, H, T, T) attention probabilities are appended.

        Returns:
            (B, T, D) hidden states (those at padded positions are meaningless).
        """
        if ids.shape != segments.shape or ids.shape != keep.shape:
            raise ValueError(
                f"ids, segments and keep must share one (B, T) shape, got {tuple(ids.shape)}, "
                f"{tuple(segments.shape)}, {tuple(keep.shape)}"
            )
        check_index_range(ids, self.cfg.vocab_size)
        check_index_range(segments, self.cfg.n_segments, "segment ids")
        x = self.token_embedding(ids) + self.segment_embedding(segments)  # (B, T, D)
        return self.encoder(x, mask=padding_mask(keep), maps=maps)

    def pool(self, summary: Tensor) -> Tensor:
        """(B, D) summary of each sequence (its [CLS] state, or a ``SUMMARIES`` entry) -> (B, D)
        ``tanh(dense(summary))``."""
        return torch.tanh(self.pooler(summary))


class MaskedLMHead(nn.Module):
    """dense -> GELU -> LayerNorm -> decoder; the decoder matrix is the token embedding."""

    def __init__(self, cfg: BertConfig, token_embedding: nn.Embedding) -> None:
        super().__init__()
        dim = cfg.transformer.dim
        self.dense = Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=cfg.transformer.norm_eps)
        self.token_embedding = token_embedding  # shared, not a copy
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        """(..., D) hidden states -> (..., V) vocabulary logits."""
        return self.norm(self.act(self.dense(hidden))) @ self.token_embedding.weight.T + self.bias


class BertForPretraining(nn.Module):
    """The encoder with a masked-LM head over tokens and an NSP head over the pooled [CLS]."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.mlm_head = MaskedLMHead(cfg, self.bert.token_embedding)
        self.nsp_head = Linear(cfg.transformer.dim, 2)
        init_weights(self, cfg.transformer.n_layers)

    def forward_features(
        self, ids: Tensor, segments: Tensor, keep: Tensor, *, maps: AttentionMaps | None = None
    ) -> Tensor:
        """(B, T) ids, segments, keep (True = real token) -> (B, T, D) hidden states.

        ``maps``, if given, collects each layer's (B, H, T, T) attention probabilities.
        """
        return self.bert(ids, segments, keep, maps=maps)

    def forward(self, ids: Tensor, segments: Tensor, keep: Tensor) -> Tensor:
        """(B, T) ids, segments, keep (True = real token) -> (B, T, D) hidden states.

        Pretraining has two heads over the features, so ``forward`` is ``forward_features``; the
        heads are separate calls so the MLM decoder runs on the masked positions only:
        ``mlm_head(hidden[labels != -100])`` and ``nsp_logits(hidden)``.
        """
        return self.forward_features(ids, segments, keep)

    def nsp_logits(self, hidden: Tensor) -> Tensor:
        """(B, T, D) -> (B, 2) logits; class 0 = B follows A, 1 = B is a random sentence."""
        return self.nsp_head(self.bert.pool(hidden[:, 0]))  # NSP reads [CLS], as in BERT

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BertForClassification(nn.Module):
    """The encoder with ``pooler -> dropout -> Linear(num_classes)`` on the [CLS] vector (or on the
    mean of the real tokens' states, ``classifier_pool: mean``)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = BertModel(cfg)
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = Linear(cfg.transformer.dim, cfg.num_classes)
        init_weights(self, cfg.transformer.n_layers)

    def forward_features(
        self, ids: Tensor, segments: Tensor, keep: Tensor, *, maps: AttentionMaps | None = None
    ) -> Tensor:
        """(B, T) ids, segments, keep (True = real token) -> (B, T, D) hidden states.

        ``maps``, if given, collects each layer's (B, H, T, T) attention probabilities.
        """
        return self.bert(ids, segments, keep, maps=maps)

    def forward_head(self, hidden: Tensor, keep: Tensor) -> Tensor:
        """(B, T, D) hidden states and (B, T) keep -> (B, num_classes) logits."""
        summary = SUMMARIES[self.cfg.classifier_pool](hidden, keep)  # (B, D)
        return self.classifier(self.dropout(self.bert.pool(summary)))

    def forward(self, ids: Tensor, segments: Tensor, keep: Tensor) -> Tensor:
        """(B, T) ids, segments, keep (True = real token) -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(ids, segments, keep), keep)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
