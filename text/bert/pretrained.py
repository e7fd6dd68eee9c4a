"""Reading the ``init_from`` of fine-tuning, a ``bert`` pretraining checkpoint or a Hugging Face BERT
(``hf:<folder or hub id>``, see ``anyformer.text.hf``): its weights (the classifier) and its
tokenizer (the classification data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyformer.core.train.checkpoint import CheckpointError, read_checkpoint
from anyformer.text.hf import hf_tokenizer, is_hf
from anyformer.text.tokenizer import Tokenizer, tokenizer_from_state


def pretrained_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a ``bert`` pretraining checkpoint; another task's checkpoint is a :class:`CheckpointError`."""
    checkpoint = read_checkpoint(path)
    task = checkpoint["anyformer"].get("task")
    if task != "bert":
        raise CheckpointError(
            f"init_from={str(path)!r} is a {task!r} checkpoint; it must be a 'bert' pretraining checkpoint "
            "(written by `anyformer bert fit`)"
        )
    return checkpoint


def pretrained_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer stored in a ``bert`` pretraining checkpoint, or that of a HF BERT (``hf:...``).

    Raises:
        ValueError: unreadable, or (HF) without the ``[CLS]``, ``[SEP]`` and ``[PAD]`` tokens.
    """
    if is_hf(path):
        tokenizer = hf_tokenizer(str(path))
        for token in ("[CLS]", "[SEP]", "[PAD]"):
            try:
                tokenizer.token_id(token)
            except KeyError:
                raise ValueError(f"the tokenizer of {path} has no {token} token, which BERT inputs need") from None
        return tokenizer
    state = pretrained_checkpoint(path)["anyformer"]["inference"].get("tokenizer")
    if state is None:
        raise CheckpointError(f"{path} holds no tokenizer; it was not written by a `bert fit` run")
    return tokenizer_from_state(state)
