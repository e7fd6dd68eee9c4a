"""fastText-style bag-of-words sentence classifier: the yardstick the BERT classifier is compared
with (task ``text-bow``; Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification").

Same data (``TextClassificationDataModule``: the byte-level BPE ids of ``[CLS] text [SEP]``),
loss, ``val_loss``/``val_acc`` and checkpoint contents as ``BertClassifierModule``, through their
shared ``SentenceClassifierModule``; only the network differs. It averages the embeddings of the
real tokens and, optionally, of hashed token bigrams (word order within a pair), then applies
dropout, an optional ReLU hidden layer and a linear head. Padding never reaches the average.

Shape notation: B batch, T tokens, D embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from anyformer.core.checks import check_index_range
from anyformer.core.masks import masked_mean
from anyformer.core.train.base import OptimConfig
from anyformer.text.bert.bert_task import Batch, SentenceClassifierModule

BIGRAM_HASH_MULTIPLIER = 116_049_371
"""fastText's multiplier for hashing an n-gram of ids (``Dictionary::addWordNgrams``)."""


@dataclass
class BagOfWordsConfig:
    """A bag-of-words (and hashed bigrams) sentence classifier."""

    vocab_size: int = 2048
    """Number of token ids; linked from the data module's tokenizer by the CLI."""
    num_classes: int = 2
    """Number of classes; linked from the data module."""
    max_seq_len: int = 128
    """Longest ``[CLS] text [SEP]`` sequence; linked from ``data.max_seq_len``, so ``anyformer
    classify`` crops a long text exactly as training did (the network itself takes any length)."""
    dim: int = 64
    """Width D of the token and bigram embeddings."""
    bigram_buckets: int = 0
    """Rows of the hashed-bigram embedding table; 0 uses token embeddings only."""
    hidden_dim: int = 0
    """Width of a ReLU hidden layer between the average and the head; 0 for a linear classifier."""
    dropout: float = 0.0
    """Dropout on the averaged embedding."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "num_classes", "max_seq_len", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"BagOfWordsConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        for name in ("bigram_buckets", "hidden_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"BagOfWordsConfig.{name} must be >= 0 (0 turns it off), got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BagOfWordsConfig.dropout must be in [0, 1), got {self.dropout!r}")


def bigram_ids(ids: Tensor, buckets: int) -> Tensor:
    """Hashed bucket of each pair of neighbouring tokens: (B, T) -> (B, T - 1), values in [0, buckets).

    Pair ``t`` is ``(ids[:, t], ids[:, t + 1])``, hashed as fastText hashes word n-grams:
    ``(first * 116049371 + second) mod buckets``.
    """
    return (ids[:, :-1] * BIGRAM_HASH_MULTIPLIER + ids[:, 1:]) % buckets


class BagOfWordsClassifier(nn.Module):
    """Token ids (B, T) and their keep mask -> class logits (B, num_classes)."""

    def __init__(self, cfg: BagOfWordsConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.bigram_embedding = nn.Embedding(cfg.bigram_buckets, cfg.dim) if cfg.bigram_buckets else None
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.hidden_dim:
            self.hidden = nn.Sequential(nn.Linear(cfg.dim, cfg.hidden_dim), nn.ReLU())
        else:
            self.hidden = nn.Identity()
        self.head = nn.Linear(cfg.hidden_dim or cfg.dim, cfg.num_classes)
        # fastText's init: inputs uniform(+-1/D); a small average lets the head start near uniform.
        for embedding in (self.token_embedding, self.bigram_embedding):
            if embedding is not None:
                nn.init.uniform_(embedding.weight, -1.0 / cfg.dim, 1.0 / cfg.dim)

    def forward_features(self, ids: Tensor, keep: Tensor) -> Tensor:
        """Average embedding of the real tokens and of the bigrams of two real tokens.

        Args:
            ids: (B, T) token ids; values at padded positions are ignored.
            keep: (B, T) bool, True = real token (padding is False).

        Returns:
            (B, D): the mean of the unigram and bigram vectors, each counted once.
        """
        check_index_range(ids, self.cfg.vocab_size)
        vectors = self.token_embedding(ids)  # (B, T, D)
        if self.bigram_embedding is not None:
            pair_keep = keep[:, :-1] & keep[:, 1:]  # (B, T - 1): both tokens real
            bigrams = self.bigram_embedding(bigram_ids(ids, self.cfg.bigram_buckets))  # (B, T - 1, D)
            vectors, keep = torch.cat([vectors, bigrams], dim=1), torch.cat([keep, pair_keep], dim=1)  # (B, 2T - 1, .)
        return masked_mean(vectors, keep)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, D) features -> (B, num_classes) logits."""
        return self.head(self.hidden(self.dropout(features)))

    def forward(self, ids: Tensor, keep: Tensor) -> Tensor:
        """(B, T) ids and keep mask (True = real token) -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(ids, keep))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class BagOfWordsModule(SentenceClassifierModule):
    """Trains the bag of words exactly as ``BertClassifierModule`` trains BERT (``anyformer text-bow``)."""

    task_name = "text-bow"
    data_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "num_classes": "config.num_classes",
        "max_seq_len": "config.max_seq_len",
    }

    def __init__(self, config: BagOfWordsConfig, optim: OptimConfig | None = None) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
        """
        super().__init__(config, BagOfWordsClassifier(config), optim)

    @property
    def max_seq_len(self) -> int:
        return self.config.max_seq_len

    def forward(self, ids: Tensor, keep: Tensor) -> Tensor:
        """(B, T) ids and keep mask (True = real token) -> (B, num_classes) logits."""
        return self.model(ids, keep)

    def batch_logits(self, batch: Batch) -> Tensor:
        return self.model(batch["input_ids"], batch["attention_mask"])  # one segment: segment_ids carry nothing
