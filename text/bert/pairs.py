"""BERT's pretraining pairs: ``[CLS] A [SEP] B [SEP]`` with B the next sentence of A's document
(NSP label 0) or a random sentence of another document (NSP label 1), exactly half and half every
epoch, masked on the fly.

Randomness is drawn in the main process by a seeded batch sampler (:class:`PairSampler`) that
yields batches of ``(pair, sentence B, mask seed)`` requests, epoch ``e``'s from ``(seed, e)``;
the dataset builds the pairs and its ``collate`` masks a whole batch in one vectorized draw seeded
by the batch's first request. So every epoch gets new partners and new masks, runs (and resumed
runs) are reproducible, and worker processes never repeat each other's draws. Validation draws
epoch 0 every time, so its pairs and masks are the same at every evaluation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from anyformer.core.train.data_order import epoch_generator
from anyformer.text.batching import LengthBatchSampler, pad_batch
from anyformer.text.bert.masking import mask_tokens, special_ids
from anyformer.text.tokenizer import Tokenizer

IS_NEXT, NOT_NEXT = 0, 1
"""NSP labels (Hugging Face's convention): 0 = B follows A, 1 = B is a random sentence."""
Request = tuple[int, int, int]
"""``(pair, sentence B, mask seed)``: pair indexes :attr:`SentencePairs.first_sentences`."""


def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Lengths after BERT's pair truncation: drop the last token of the longer side (B on a tie)
    until both fit in ``budget`` tokens."""
    if len_a + len_b <= budget:
        return len_a, len_b
    short = budget // 2
    if min(len_a, len_b) > short:
        return budget - short, short
    return (len_a, budget - len_a) if len_a <= len_b else (budget - len_b, len_b)


class SentencePairs(Dataset[dict[str, Tensor]]):
    """NSP pairs over tokenized sentences; items are built from :class:`PairSampler` requests
    and masked by :meth:`collate`, the DataLoader's ``collate_fn``.

    Args:
        sentences: token ids of every sentence, documents in order.
        doc_of_sentence: document index of each sentence.
        tokenizer: gives the ids of [CLS], [SEP], [MASK] and the special tokens.
        max_seq_len: longest pair, specials included.
        mask_prob: share of tokens chosen for the masked LM.
    """

    def __init__(
        self,
        sentences: Sequence[Sequence[int]],
        doc_of_sentence: Sequence[int],
        tokenizer: Tokenizer,
        max_seq_len: int,
        mask_prob: float = 0.15,
    ) -> None:
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        self.ids = torch.tensor([i for s in sentences for i in s], dtype=torch.long)  # all sentences, flat
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        self.sentence_lengths = lengths
        self.doc_of_sentence = torch.tensor(doc_of_sentence, dtype=torch.long)
        same_doc = self.doc_of_sentence[1:] == self.doc_of_sentence[:-1]
        self.first_sentences = torch.nonzero(same_doc & (lengths[:-1] > 0) & (lengths[1:] > 0)).flatten()
        if len(self.first_sentences) == 0 or int(self.doc_of_sentence.max()) < 1:
            raise ValueError("NSP needs at least two documents and one document with two sentences")
        self.cls_id, self.sep_id, self.mask_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id
        self.pad_id = tokenizer.pad_id
        specials = torch.tensor(special_ids(tokenizer))
        self.specials = specials
        all_ids = torch.arange(tokenizer.vocab_size)
        self.random_ids = all_ids[~torch.isin(all_ids, specials)]
        self.max_seq_len, self.mask_prob = max_seq_len, mask_prob

    def __len__(self) -> int:
        return len(self.first_sentences)

    def sentence(self, index: int) -> Tensor:
        return self.ids[self.offsets[index] : self.offsets[index + 1]]

    def __getitem__(self, request: Request) -> dict[str, Tensor]:
        """The unmasked pair of a ``(pair, sentence B, mask seed)`` request; :meth:`collate` masks."""
        pair, b_index, seed = request
        a_index = int(self.first_sentences[pair])
        a, b = self.sentence(a_index), self.sentence(b_index)
        len_a, len_b = truncate_pair(len(a), len(b), self.max_seq_len - 3)
        ids = torch.cat([torch.tensor([self.cls_id]), a[:len_a], torch.tensor([self.sep_id]),
                         b[:len_b], torch.tensor([self.sep_id])])  # fmt: skip
        segments = torch.cat([torch.zeros(len_a + 2, dtype=torch.long), torch.ones(len_b + 1, dtype=torch.long)])
        nsp = IS_NEXT if b_index == a_index + 1 else NOT_NEXT
        return {
            "input_ids": ids,
            "segment_ids": segments,
            "nsp_labels": torch.tensor(nsp),
            "mask_seed": torch.tensor(seed),
        }

    def collate(self, items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Pad the pairs (see :func:`~anyformer.text.batching.pad_batch`) and mask them in one
        vectorized draw, seeded by the first item's request; adds ``mlm_labels`` and replaces
        ``input_ids`` by the masked ids."""
        batch = pad_batch(items, self.pad_id)
        generator = torch.Generator().manual_seed(int(batch.pop("mask_seed")[0]))
        candidates = batch["attention_mask"] & ~torch.isin(batch["input_ids"], self.specials)
        batch["input_ids"], batch["mlm_labels"] = mask_tokens(
            batch["input_ids"], candidates, mask_id=self.mask_id, random_ids=self.random_ids,
            generator=generator, mask_prob=self.mask_prob,
        )  # fmt: skip
        return batch


class PairSampler(LengthBatchSampler):
    """Batches of ``(pair, sentence B, mask seed)`` requests, every pair once per epoch.

    Exactly ``len // 2`` pairs per epoch get their true next sentence; the others get a
    uniformly drawn sentence of another document. The requests are then bucketed by the length
    of their two sentences, as every :class:`~anyformer.text.batching.LengthBatchSampler` buckets
    (on CPU this roughly halves the cost of SST-2's long-tailed pairs). Epoch ``e``'s requests are
    drawn by a generator seeded with ``(seed, e)``.

    Args:
        pairs: the dataset.
        batch_size: requests per batch.
        seed: non-negative seed of the draws.
        fixed: every epoch is epoch 0 (validation: the same pairs and masks each time).
        rank, world_size, position: as for :class:`~anyformer.text.batching.LengthBatchSampler`.
    """

    def __init__(self, pairs: SentencePairs, batch_size: int, seed: int, fixed: bool = False, **placed: Any) -> None:
        # The items and their lengths are drawn anew every epoch (epoch_items), not given here.
        super().__init__([], batch_size, shuffle=True, seed=seed, **placed)
        self.pairs, self.fixed = pairs, fixed

    def epoch_items(self, epoch: int) -> tuple[list[Request], list[int]]:
        """The requests of ``epoch`` in random order, and the length of each pair's two sentences."""
        g, pairs = epoch_generator(self.seed, 0 if self.fixed else epoch), self.pairs
        n, n_sentences = len(pairs), len(pairs.doc_of_sentence)
        order = torch.randperm(n, generator=g)
        is_next = torch.randperm(n, generator=g) < n // 2
        first = pairs.first_sentences[order]
        doc = pairs.doc_of_sentence[first]
        partner = torch.randint(n_sentences, (n,), generator=g)
        clash = pairs.doc_of_sentence[partner] == doc
        while clash.any():  # redraw random partners that fell in A's own document
            partner[clash] = torch.randint(n_sentences, (int(clash.sum()),), generator=g)
            clash = pairs.doc_of_sentence[partner] == doc
        partner = torch.where(is_next, first + 1, partner)
        seeds = torch.randint(2**62, (n,), generator=g)
        lengths = pairs.sentence_lengths[first] + pairs.sentence_lengths[partner]
        return list(zip(order.tolist(), partner.tolist(), seeds.tolist())), lengths.tolist()

    def plan(self, epoch: int) -> list[list[Request]]:
        return super().plan(0 if self.fixed else epoch)

    def draw(self) -> list[Request]:
        """The requests of epoch ``self.epoch`` in random order, before bucketing; the next call
        draws the next epoch's."""
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self.epoch_items(epoch)[0]
