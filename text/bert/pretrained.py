"""Reading a ``bert`` pretraining checkpoint, the ``init_from`` of fine-tuning: its weights (the
classifier) and its tokenizer (the classification data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anyformer.core.train.checkpoint import CheckpointError, read_checkpoint
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
    """The tokenizer stored in a ``bert`` pretraining checkpoint."""
    state = pretrained_checkpoint(path)["anyformer"]["inference"].get("tokenizer")
    if state is None:
        raise CheckpointError(f"{path} holds no tokenizer; it was not written by a `bert fit` run")
    return tokenizer_from_state(state)
