"""Preference pairs as DPO batches: ``{"input_ids", "scored"}`` of shape (2B, T), the B chosen sequences
first, then the B rejected ones (row i + B is the rejected continuation of row i's prompt).

A sequence is the prompt as the policy reads it (:func:`anyformer.text.preference.sampling.encode_prompt`)
followed by the continuation, right-padded; ``scored`` is True at the continuation's tokens only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from anyformer.core.train.checkpoint import read_checkpoint
from anyformer.text.preference.pairs import PreferencePair, read_pairs
from anyformer.text.preference.sampling import POLICY_TASKS, encode_prompt
from anyformer.text.tokenizer import Tokenizer, tokenizer_from_state

logger = logging.getLogger(__name__)


def encode_pair(tokenizer: Tokenizer, pair: PreferencePair, max_seq_len: int) -> tuple[list[int], list[int], int, bool]:
    """(prompt + chosen ids, prompt + rejected ids, prompt length, cropped?) of one pair.

    A prompt longer than ``max_seq_len - 1`` keeps its last tokens (one is left for the continuation);
    a continuation that does not fit is cut at the end.
    """
    prompt = encode_prompt(tokenizer, pair.prompt)
    cropped = len(prompt) > max_seq_len - 1
    prompt = prompt[-(max_seq_len - 1) :]
    sequences = []
    for continuation in (pair.chosen, pair.rejected):
        ids = prompt + tokenizer.encode(continuation)
        cropped |= len(ids) > max_seq_len
        sequences.append(ids[:max_seq_len])
    return sequences[0], sequences[1], len(prompt), cropped


class EncodedPairs(Dataset[dict[str, Any]]):
    """Encoded pairs; item i is ``{"chosen": ids, "rejected": ids, "prompt_len": int}``."""

    def __init__(self, tokenizer: Tokenizer, pairs: Sequence[PreferencePair], max_seq_len: int, where: str) -> None:
        self.items = []
        n_cropped = 0
        for pair in pairs:
            chosen, rejected, prompt_len, cropped = encode_pair(tokenizer, pair, max_seq_len)
            n_cropped += cropped
            self.items.append({"chosen": chosen, "rejected": rejected, "prompt_len": prompt_len})
        if n_cropped:
            logger.warning(
                "%s: %d of %d pairs cropped to the policy's %d tokens", where, n_cropped, len(pairs), max_seq_len
            )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.items[index]


def collate_pairs(items: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """B encoded pairs -> (2B, T) ``input_ids`` (chosen rows, then rejected rows; padded with ``pad_id``)
    and (2B, T) bool ``scored`` (True at continuation tokens)."""
    rows = [item["chosen"] for item in items] + [item["rejected"] for item in items]
    prompt_lens = [item["prompt_len"] for item in items] * 2
    longest = max(len(row) for row in rows)
    ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
    scored = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, (row, prompt_len) in enumerate(zip(rows, prompt_lens)):
        ids[i, : len(row)] = torch.tensor(row)
        scored[i, prompt_len : len(row)] = True
    return {"input_ids": ids, "scored": scored}


class PreferenceDataModule(pl.LightningDataModule):
    """Pairs of a JSONL file (:mod:`anyformer.text.preference.pairs`) encoded with the policy's tokenizer.

    Args:
        pairs: the training pairs (``anyformer preferences --out``, or a file of one's own).
        policy: ``gpt`` checkpoint to tune; its tokenizer encodes the pairs, its context bounds
            their length, and the path is linked into the model (which starts from its weights).
        val_pairs: pairs to validate on; None takes the last ``val_fraction`` of ``pairs``.
        val_fraction: share of ``pairs`` held out when there is no ``val_pairs``.
        batch_size: pairs per batch (the model sees twice as many sequences).
        num_workers: DataLoader worker processes.
        seed: seed of the training shuffle.
    """

    def __init__(
        self,
        pairs: str,
        policy: str,
        val_pairs: str | None = None,
        val_fraction: float = 0.05,
        batch_size: int = 16,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not 0 < val_fraction < 1:
            raise ValueError(f"{owner}.val_fraction must be in (0, 1), got {val_fraction!r}")
        if batch_size < 1:
            raise ValueError(f"{owner}.batch_size must be >= 1, got {batch_size!r}")
        self.pairs_path, self.policy, self.val_pairs_path = pairs, policy, val_pairs
        self.val_fraction, self.batch_size, self.num_workers, self.seed = val_fraction, batch_size, num_workers, seed
        meta = read_checkpoint(policy)["anyformer"]
        if meta.get("task") not in POLICY_TASKS:
            raise ValueError(
                f"data.policy {policy} is a {meta.get('task')!r} checkpoint; expected a GPT ({POLICY_TASKS})"
            )
        if not meta["inference"].get("tokenizer"):
            raise ValueError(f"data.policy {policy} holds no tokenizer; expected a checkpoint of `anyformer gpt fit`")
        self.tokenizer = tokenizer_from_state(meta["inference"]["tokenizer"])
        config = meta["config"].get("gpt", meta["config"])  # a dpo checkpoint nests the GPT's config
        self.max_seq_len = int(config["transformer"]["max_seq_len"])
        self._datasets: dict[str, EncodedPairs] = {}

    def setup(self, stage: str) -> None:
        if self._datasets:
            return
        pairs = read_pairs(self.pairs_path)
        if self.val_pairs_path is not None:
            train, val = pairs, read_pairs(self.val_pairs_path)
        else:
            n_val = max(1, round(len(pairs) * self.val_fraction))
            if n_val >= len(pairs):
                raise ValueError(
                    f"{self.pairs_path} holds {len(pairs)} pair(s): too few to hold some out for validation"
                )
            train, val = pairs[:-n_val], pairs[-n_val:]
        logger.info("preference pairs: %d train, %d val", len(train), len(val))
        self._datasets = {
            "train": EncodedPairs(self.tokenizer, train, self.max_seq_len, self.pairs_path),
            "val": EncodedPairs(self.tokenizer, val, self.max_seq_len, self.val_pairs_path or self.pairs_path),
        }

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            shuffle=shuffle,
            collate_fn=partial(collate_pairs, pad_id=self.tokenizer.pad_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)
