"""Registry of tasks (trained through LightningCLI) and tools (plain commands).

Entries are import paths, resolved only when used, so ``anyformer --help`` stays fast and
the core never imports a domain package it does not need.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    model: str
    """``module:Class`` of the LightningModule."""
    data: str
    """``module:Class`` of the LightningDataModule."""
    summary: str


TASKS: dict[str, TaskSpec] = {
    "gpt": TaskSpec("text.gpt:GPTModule", "text.data:TextDataModule", "GPT causal language model (text)"),
    "vit": TaskSpec("vision.task:ViTModule", "vision.data:ImageDataModule", "Vision Transformer image classifier"),
    "speech": TaskSpec("speech.task:SpeechModule", "speech.data:SpeechDataModule", "Spoken-word transformer (speech)"),
    "speech-cnn": TaskSpec("speech.task:SpeechCNNModule", "speech.data:SpeechDataModule", "CNN baseline (speech)"),
}

# name -> (``module:function`` taking argv and returning an exit code, summary)
TOOLS: dict[str, tuple[str, str]] = {
    "generate": ("text.generate:main", "generate text from a GPT checkpoint"),
    "classify": ("vision.classify:main", "classify images (and later text/audio) with a checkpoint"),
}


def resolve(path: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def task_of_model(model_path: str) -> str:
    for name, spec in TASKS.items():
        if spec.model == model_path:
            return name
    raise KeyError(model_path)
