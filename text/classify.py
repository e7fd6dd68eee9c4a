"""The text side of ``anyformer classify``: label sentences with a ``bert-classify`` or ``text-bow`` checkpoint.

    anyformer classify --ckpt runs/bert_finetune_sst2/checkpoints/last.ckpt "a gorgeous film" "dull ." --top-k 2

Each positional input is one sentence (``-`` reads one sentence per line from stdin). A sentence
longer than the model's context is cropped from the right, and characters the tokenizer cannot
encode are replaced; both are logged as warnings, never an error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

import torch

from anyformer.core.train.checkpoint import load_task
from anyformer.text.batching import pad_batch
from anyformer.text.sentence_encoding import encode_sentence

logger = logging.getLogger(__name__)

TASKS = ("bert-classify", "text-bow")
"""Checkpoint tasks this module classifies."""
BATCH_SIZE = 64
SHOWN_CHARS = 200
"""Longer texts are shown cut to this many characters."""


def classify_text(module, texts: list[str], top_k: int = 1) -> list[list[tuple[str, float]]]:
    """The ``top_k`` most probable classes of each text.

    Args:
        module: a ``SentenceClassifierModule`` (e.g. from ``load_task(path, tasks=TASKS)``).
        texts: the sentences.
        top_k: labels per sentence (at most the number of classes).

    Returns:
        For each text, ``[(class name, probability), ...]`` in decreasing probability.
    """
    tokenizer, max_seq_len = module.tokenizer, module.max_seq_len
    if tokenizer is None:
        raise ValueError("the classifier has no tokenizer; was it trained with `anyformer bert-classify|text-bow fit`?")
    top_k = max(1, min(top_k, len(module.class_names)))
    items = []
    for index, text in enumerate(texts):
        ids, n_cropped, n_replaced = encode_sentence(tokenizer, text, max_seq_len)
        if n_replaced:
            logger.warning("text %d: %d character(s) the tokenizer cannot encode were replaced", index, n_replaced)
        if n_cropped:
            logger.warning(
                "text %d: cropped from the right, %d token(s) beyond max_seq_len=%d dropped",
                index,
                n_cropped,
                max_seq_len,
            )
        ids_t = torch.tensor(ids, dtype=torch.long)
        items.append({"input_ids": ids_t, "segment_ids": torch.zeros_like(ids_t)})
    module.eval()
    results = []
    for start in range(0, len(items), BATCH_SIZE):
        batch = pad_batch(items[start : start + BATCH_SIZE], tokenizer.pad_id)
        with torch.no_grad():
            logits = module.batch_logits(batch)  # (B, C)
        probs, indices = logits.softmax(dim=-1).topk(top_k, dim=-1)
        for row_probs, row_indices in zip(probs.tolist(), indices.tolist()):
            results.append([(module.class_names[i], p) for i, p in zip(row_indices, row_probs)])
    return results


def print_predictions(texts: list[str], predictions: list[list[tuple[str, float]]], file: TextIO | None = None) -> None:
    """Print each text, then one ``probability  label`` line per predicted class."""
    file = file or sys.stdout
    for text, ranked in zip(texts, predictions):
        shown = text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."
        print(shown.encode("utf-8", "backslashreplace").decode("utf-8"), file=file)  # lone surrogates as \udxxx
        for label, prob in ranked:
            print(f"  {prob:.4f}  {label}", file=file)


def classify_text_args(args: argparse.Namespace) -> int:
    """``anyformer classify`` handler for text checkpoints: ``args.ckpt``, ``args.inputs`` (the
    sentences; ``-`` reads stdin lines) and ``args.top_k``. Returns the exit code."""
    module = load_task(args.ckpt, tasks=TASKS)
    texts = []
    for item in args.inputs:
        texts += [line.rstrip("\n") for line in sys.stdin if line.strip()] if item == "-" else [item]
    print_predictions(texts, classify_text(module, texts, args.top_k))
    return 0
