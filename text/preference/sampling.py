"""Prompts, continuations and their scores: what ``anyformer preferences`` and ``anyformer preference-eval``
share.

The policy is a GPT trained on SST-2's training sentences, one per line, so a newline is where a
sentence starts and ends: a prompt is read after :data:`SENTENCE_START`, and a continuation ends at
the first newline token (kept: it is the policy's choice to stop), or after ``max_new_tokens``.
A continuation is scored by a sentence classifier (``bert-classify`` or ``text-bow``) as the
probability of its ``positive`` class for the whole sentence, prompt + continuation.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from anyformer.core.cli.errors import UsageError, positive_int
from anyformer.core.decoding import GenerationConfig, generate
from anyformer.core.train.checkpoint import load_task
from anyformer.text.classification_data import read_table, sst2_table
from anyformer.text.classify import classify_text
from anyformer.text.tokenizer import DEFAULT_SPECIALS

logger = logging.getLogger(__name__)

SENTENCE_START = "\n"
"""What the policy reads before a prompt: its training text has one sentence per line."""
POLICY_TASKS = ("gpt", "dpo")
"""Checkpoints that hold a GPT policy (``.model``, ``.tokenizer``)."""
CLASSIFIER_TASKS = ("bert-classify", "text-bow")
"""Checkpoints that can score a sentence (reward model, judge)."""
SST2_SPLITS = ("train", "dev", "test")
GENERATION_ROWS = 256
"""Sequences sampled together (one batch through the model)."""


@dataclass(frozen=True)
class Continuation:
    """What the policy wrote after one prompt: its token ids (the end-of-sentence newline included when
    it stopped) and their text."""

    ids: tuple[int, ...]
    text: str


def load_policy(path: str | Path, option: str = "--policy") -> Any:
    """The GPT of a ``gpt`` or ``dpo`` checkpoint (a task module with ``.model`` and ``.tokenizer``), eval mode."""
    try:
        module = load_task(path, tasks=POLICY_TASKS)
    except UsageError as err:
        raise UsageError(f"{option}: {err} (a GPT policy)") from None
    if module.tokenizer is None:
        raise UsageError(f"{option} {path} holds no tokenizer; expected a checkpoint written by `anyformer gpt fit`")
    sentence_end_id(module.tokenizer, option)
    return module


def load_classifier(path: str | Path, option: str, positive: str = "positive") -> Any:
    """A sentence classifier (``bert-classify``, ``text-bow``) that has a ``positive`` class, eval mode."""
    try:
        module = load_task(path, tasks=CLASSIFIER_TASKS)
    except UsageError as err:
        raise UsageError(f"{option}: {err} (a sentence classifier)") from None
    if positive not in module.class_names:
        raise UsageError(f"{option} {path} has classes {list(module.class_names)}, none named {positive!r}")
    return module


def same_tokenizer(first: Any, second: Any) -> bool:
    """Whether two tokenizers map every text to the same ids (same kind, vocabulary and merges)."""
    return first.to_state() == second.to_state()


def sentence_end_id(tokenizer: Any, option: str = "--policy") -> int:
    """The id of the newline that ends a sentence of the policy's training text."""
    ids = tokenizer.encode(SENTENCE_START)
    if len(ids) != 1:
        raise UsageError(f"{option}: its tokenizer encodes a newline as {len(ids)} tokens; expected one")
    return ids[0]


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The ids the policy reads before continuing ``prompt``: a sentence start, then the prompt."""
    return tokenizer.encode(SENTENCE_START + prompt)


def first_words(sentences: Sequence[str], n_prompts: int, words: int, first: int, where: str) -> list[str]:
    """The first ``words`` words of sentences, as prompts.

    Sentences of more than ``words`` words only (something must be left to continue), each distinct
    prompt once (SST-2's training split lists phrases of the same sentence), in order, from the
    ``first``-th such prompt.

    Raises:
        UsageError: fewer than ``first + n_prompts`` prompts in ``sentences``.
    """
    prompts, seen = [], set()
    for text in sentences:
        tokens = text.split()
        prompt = " ".join(tokens[:words])
        if len(tokens) > words and prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    if len(prompts) < first + n_prompts:
        raise UsageError(
            f"{where} has {len(prompts)} distinct {words}-word prompts; {first} + {n_prompts} were asked for"
        )
    return prompts[first : first + n_prompts]


def add_prompt_arguments(parser: argparse.ArgumentParser, split: str) -> None:
    """The options :func:`read_prompts` and :func:`sample_continuations` read (``--split``, ``--first``,
    ``--prompt-file``, ``--prompt-words``, ``--new-tokens``), the same in every command that samples
    continuations of prompts; ``split`` is the default SST-2 split."""
    parser.add_argument("--split", choices=SST2_SPLITS, default=split, help="SST-2 split of the prompts")
    parser.add_argument("--first", type=int, default=0, help="skip this many prompts of the split (default 0)")
    parser.add_argument(
        "--prompt-file", help="UTF-8 sentences, one per line, to take the prompts from instead of SST-2"
    )
    parser.add_argument("--prompt-words", type=positive_int, default=3, help="words per prompt (default 3)")
    parser.add_argument("--new-tokens", type=positive_int, default=24, help="most tokens per continuation")


def read_prompts(
    split: str, prompt_file: str | Path | None, n_prompts: int, words: int, first: int = 0, root: str | None = None
) -> list[str]:
    """Prompts (:func:`first_words`) of the sentences of ``prompt_file`` (UTF-8, one per line) if given,
    else of SST-2's ``split`` (read through :mod:`anyformer.core.data`)."""
    if prompt_file is not None:
        try:
            sentences = Path(prompt_file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--prompt-file {prompt_file} cannot be read as UTF-8 text: {err}") from None
        return first_words(sentences, n_prompts, words, first, f"--prompt-file {prompt_file}")
    if split not in SST2_SPLITS:
        raise UsageError(f"SST-2 split {split!r} is not one of {list(SST2_SPLITS)}")
    try:
        sentences, _ = read_table(sst2_table(f"{split}.tsv", root), "sentence")
    except (OSError, ValueError) as err:  # missing or damaged data: the data layer's one line
        raise UsageError(f"SST-2 {split} sentences cannot be read: {err}") from None
    return first_words(sentences, n_prompts, words, first, f"SST-2 {split}")


class TextOnly:
    """A causal model whose special tokens (``[PAD]``, ``[CLS]``, ``<|endoftext|>``, ...) are never
    sampled: they are not text, and a continuation must read back as the ids it was written with.
    The newline that ends a sentence is an ordinary token and stays."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.max_seq_len = model, model.max_seq_len
        self.banned = []
        for token in DEFAULT_SPECIALS:
            try:
                self.banned.append(tokenizer.token_id(token))
            except KeyError:  # a tokenizer of a pretrained model has fewer specials
                pass

    def init_cache(self, batch_size: int, max_len: int | None = None) -> Any:
        return self.model.init_cache(batch_size, max_len)

    def __call__(self, ids: Tensor, *, cache: Any = None) -> Tensor:
        logits = self.model(ids, cache=cache)  # (B, T, V)
        logits[..., self.banned] = float("-inf")
        return logits


@torch.no_grad()
def sample_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    samples: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[Continuation]]:
    """``samples`` continuations of every prompt, sampled from the model's distribution / temperature
    (special tokens excluded: :class:`TextOnly`).

    Prompts of the same token length are sampled together (a batch needs one length), so the result
    depends on the prompts' lengths and the generator's seed only.

    Returns:
        For each prompt, its ``samples`` continuations.
    """
    end = sentence_end_id(tokenizer)
    cfg = GenerationConfig(strategy="sample", max_new_tokens=max_new_tokens, temperature=temperature, eos_id=end)
    encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts]
    too_long = [i for i, ids in enumerate(encoded) if len(ids) + max_new_tokens > model.max_seq_len]
    if too_long:
        raise UsageError(
            f"prompt {too_long[0]} ({prompts[too_long[0]]!r}) plus {max_new_tokens} new tokens exceeds the policy's "
            f"{model.max_seq_len}-token context; use shorter prompts or fewer new tokens"
        )
    text_only = TextOnly(model, tokenizer)
    rows = sorted((len(ids), index) for index, ids in enumerate(encoded) for _ in range(samples))
    results: list[list[Continuation]] = [[] for _ in prompts]
    for start in range(0, len(rows), GENERATION_ROWS):
        chunk = rows[start : start + GENERATION_ROWS]
        for length in sorted({length for length, _ in chunk}):
            indices = [index for row_length, index in chunk if row_length == length]
            prompt = torch.tensor([encoded[index] for index in indices], dtype=torch.long)  # (B, length)
            sequences = generate(text_only, prompt, cfg, generator)[:, length:].tolist()  # (B, new)
            for index, new in zip(indices, sequences):
                kept = new[: new.index(end) + 1] if end in new else new
                results[index].append(Continuation(tuple(kept), tokenizer.decode(kept)))
    return results


def positive_probability(classifier: Any, texts: Sequence[str], positive: str = "positive") -> list[float]:
    """The classifier's probability of the ``positive`` class for each text."""
    if not texts:
        return []
    ranked = classify_text(classifier, [text.strip() for text in texts], top_k=len(classifier.class_names))
    return [dict(labels)[positive] for labels in ranked]
