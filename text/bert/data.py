"""Data for BERT pretraining: documents of sentences, turned into masked NSP pairs
(:mod:`anyformer.text.bert.pairs`) by :class:`BertPretrainDataModule`.

Pretraining text is cut into documents and sentences by one rule (:func:`split_documents`):
documents are separated by blank lines, sentences are the stripped non-empty lines of a
document, and a document that is a single line (an SST-2 sentence, a one-line paragraph) is
cut in two at its middle word so it still yields a true next-sentence pair. Labelled sentences
for fine-tuning are :mod:`anyformer.text.classification_data`.
"""

from __future__ import annotations

import logging
import os
import re

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from anyformer.core.train.data_order import batch_loader, distributed, placement
from anyformer.text.bert.pairs import PairSampler, SentencePairs
from anyformer.text.classification_data import read_table, sst2_table
from anyformer.text.corpus import load_corpus
from anyformer.text.tokenizer import Tokenizer, build_tokenizer, load_tokenizer

logger = logging.getLogger(__name__)

PRETRAIN_SOURCE_HELP = "'sst2' (the SST-2 training sentences), 'pydoc', 'tinyshakespeare' or a text file/folder"


def split_documents(text: str) -> list[list[str]]:
    """Documents (blank-line separated) of sentences (stripped non-empty lines).

    A one-line document is cut before its middle word (``n_words // 2``) into two sentences;
    the second keeps a leading space so byte-level BPE tokenizes it as inside the line. A
    one-line document of a single word cannot be cut and is dropped.
    """
    documents = []
    for block in re.split(r"\n[ \t\r\f\v]*\n", text):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if len(lines) == 1:
            starts = [match.start() for match in re.finditer(r"\S+", lines[0])]
            if len(starts) < 2:
                continue
            cut = starts[len(starts) // 2]
            lines = [lines[0][:cut].rstrip(), " " + lines[0][cut:]]
        if lines:
            documents.append(lines)
    return documents


def load_pretraining_documents(source: str, root: str | os.PathLike[str] | None = None) -> list[list[str]]:
    """Documents of sentences of one pretraining source: ``sst2`` (the SST-2 training sentences,
    one document each), or any :func:`anyformer.text.corpus.load_corpus` source (``pydoc``, ...).
    ``root`` is the folder of a named dataset source (``sst2``, ``tinyshakespeare``)."""
    if source == "sst2":
        sentences, _ = read_table(sst2_table("train.tsv", root), "sentence")
        return split_documents("\n\n".join(sentences))  # one document per line
    return split_documents(load_corpus(source, root))


class BertPretrainDataModule(pl.LightningDataModule):
    """Masked-LM + NSP pairs from one or more corpora.

    Each source's documents are split in order: the last ``val_fraction`` of them (at least
    two) are validation. The BPE tokenizer is trained on the training sentences (or loaded).
    ``tokenizer``, ``vocab_size`` and ``max_seq_len`` work right after construction, so the
    CLI can size the model from them. Batches are dicts of (B, T) ``input_ids``, ``segment_ids``,
    ``attention_mask`` (bool, True = real token), ``mlm_labels`` (-100 = no loss) and (B,)
    ``nsp_labels`` (0 = true next sentence), padded to the longest pair of the batch.

    Args:
        source: a corpus or a list of corpora: ``sst2`` (the SST-2 training sentences), ``pydoc``,
            ``tinyshakespeare`` or a text file/folder (see :func:`anyformer.text.corpus.load_corpus`).
        root: Folder of the named dataset source (``sst2`` or ``tinyshakespeare``), first in the
            lookup order of :mod:`anyformer.core.data`; None: ``$ANYFORMER_DATA``, the user cache,
            then a download. With several named sources, a data folder laid out like
            ``$ANYFORMER_DATA`` (``sst2/``, ``tinyshakespeare/``).
        vocab_size: target BPE vocabulary size when training a tokenizer.
        tokenizer_path: JSON tokenizer from ``Tokenizer.save`` to use instead of training one.
        max_seq_len: longest pair in tokens, [CLS] and [SEP]s included (linked into the model).
        mask_prob: share of tokens chosen for the masked LM.
        batch_size: pairs per batch.
        val_fraction: share of each source's documents held out for validation.
        num_workers: DataLoader worker processes.
        seed: seed of the pairing and masking draws (epoch ``e``'s from ``(seed, e)``, so a resumed fit replays them).
    """

    def __init__(
        self,
        source: str | list[str] = "pydoc",
        root: str | None = None,
        vocab_size: int = 2048,
        tokenizer_path: str | None = None,
        max_seq_len: int = 128,
        mask_prob: float = 0.15,
        batch_size: int = 32,
        val_fraction: float = 0.05,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if batch_size < 1:
            raise ValueError(f"{owner}.batch_size must be >= 1, got {batch_size!r}")
        if max_seq_len < 5:
            raise ValueError(f"{owner}.max_seq_len must be >= 5 ([CLS] A [SEP] B [SEP]), got {max_seq_len}")
        if not 0 < mask_prob < 1 or not 0 < val_fraction < 1:
            raise ValueError(f"{owner}.mask_prob and val_fraction must be in (0, 1), got {mask_prob}, {val_fraction}")
        self.sources = [source] if isinstance(source, str) else list(source)
        if not self.sources:
            raise ValueError(f"{owner}.source is empty; name at least one of {PRETRAIN_SOURCE_HELP}")
        self.root, self.requested_vocab_size, self.tokenizer_path = root, vocab_size, tokenizer_path
        self.max_seq_len, self.mask_prob, self.batch_size = max_seq_len, mask_prob, batch_size
        self.val_fraction, self.num_workers, self.seed = val_fraction, num_workers, seed
        self._documents: dict[str, list[list[str]]] | None = None
        self._tokenizer: Tokenizer | None = None
        self._pairs: dict[str, SentencePairs] = {}

    def documents(self, split: str) -> list[list[str]]:
        """The documents of ``"train"`` or ``"val"``, every source read once."""
        if self._documents is None:
            train, val = [], []
            for source in self.sources:
                docs = load_pretraining_documents(source, self.root)
                n_val = max(2, round(len(docs) * self.val_fraction))
                if len(docs) < n_val + 2:
                    raise ValueError(f"source {source!r} has {len(docs)} documents; NSP needs at least {n_val + 2}")
                train += docs[:-n_val]
                val += docs[-n_val:]
            self._documents = {"train": train, "val": val}
            logger.info("pretraining documents: %d train, %d val", len(train), len(val))
        return self._documents[split]

    @property
    def tokenizer(self) -> Tokenizer:
        """The BPE tokenizer: loaded from ``tokenizer_path`` or trained on the train sentences."""
        if self._tokenizer is None:
            if self.tokenizer_path is not None:
                self._tokenizer = load_tokenizer(self.tokenizer_path)
            else:
                lines = ["\n".join(doc) for doc in self.documents("train")]
                self._tokenizer = build_tokenizer("bpe", lines, self.requested_vocab_size)
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def pairs(self, split: str) -> SentencePairs:
        """The NSP dataset of one split, tokenized on first use."""
        if split not in self._pairs:
            docs = self.documents(split)
            sentences = [s for doc in docs for s in doc]
            doc_of_sentence = [d for d, doc in enumerate(docs) for _ in doc]
            ids = self.tokenizer.encode_batch(sentences)
            self._pairs[split] = SentencePairs(ids, doc_of_sentence, self.tokenizer, self.max_seq_len, self.mask_prob)
            logger.info("%s: %d sentences, %d pairs", split, len(sentences), len(self._pairs[split]))
        return self._pairs[split]

    def setup(self, stage: str) -> None:
        for split in ("train", "val"):
            self.pairs(split)

    def train_dataloader(self) -> DataLoader:
        train = self.pairs("train")
        return self._loader(train, PairSampler(train, self.batch_size, self.seed, **placement(self)))

    def val_dataloader(self) -> DataLoader:
        val = self.pairs("val")
        return self._loader(val, PairSampler(val, self.batch_size, self.seed + 1, fixed=True, **distributed(self)))

    def _loader(self, dataset: SentencePairs, sampler: PairSampler) -> DataLoader:
        return batch_loader(dataset, sampler, dataset.collate, self.num_workers)
