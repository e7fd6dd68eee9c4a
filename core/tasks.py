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
    "bert": TaskSpec("text.bert_task:BertPretrainModule", "text.bert_data:BertPretrainDataModule", "BERT pretraining"),
    "bert-classify": TaskSpec(
        "text.bert_task:BertClassifierModule", "text.bert_data:TextClassificationDataModule", "BERT classifier"
    ),
    "dt": TaskSpec("rl.task:DTModule", "rl.data:TrajectoryDataModule", "Decision Transformer (offline RL)"),
    "seq2seq": TaskSpec("text.seq2seq_task:Seq2SeqModule", "text.parallel_data:ParallelDataModule", "translation"),
    "gru-seq2seq": TaskSpec(
        "text.gru_seq2seq:GRUSeq2SeqModule",
        "text.parallel_data:ParallelDataModule",
        "GRU + attention translation baseline",
    ),
    "speech": TaskSpec("speech.task:SpeechModule", "speech.data:SpeechDataModule", "Spoken-word transformer (speech)"),
    "speech-cnn": TaskSpec("speech.task:SpeechCNNModule", "speech.data:SpeechDataModule", "CNN baseline (speech)"),
    "lstm": TaskSpec("text.lstm:LSTMModule", "text.data:TextDataModule", "LSTM language model baseline (text)"),
    "text-bow": TaskSpec(
        "text.bow:BagOfWordsModule",
        "text.bert_data:TextClassificationDataModule",
        "bag-of-words baseline (text classifier)",
    ),
    "vision-cnn": TaskSpec("vision.task:ImageCNNModule", "vision.data:ImageDataModule", "CNN baseline (vision)"),
}

# name -> (``module:function`` taking argv and returning an exit code, summary)
TOOLS: dict[str, tuple[str, str]] = {
    "generate": ("text.generate:main", "generate text from a GPT checkpoint"),
    "decode-eval": ("text.decode_eval:main", "score a decoding strategy of a GPT checkpoint (perplexity, diversity)"),
    "classify": ("vision.classify:main", "classify images, sentences or audio clips with a checkpoint"),
    "attention": ("core.attention_figure:main", "draw a checkpoint's attention for one input (text, image, audio, RL)"),
    "collect": ("rl.collect:main", "collect an offline-RL trajectory dataset (.npz) with a behaviour policy"),
    "rollout": ("rl.rollout:main", "play a Decision Transformer checkpoint conditioned on target returns"),
    "translate": ("text.translate:main", "translate sentences or score a test set with a seq2seq checkpoint"),
    "experiment": ("core.experiment:main", "run a comparison of experiments/comparisons/ end to end, resumably"),
    "report": ("core.report:main", "regenerate experiments/results/RESULTS.md and plots from the run logs"),
}

EVALUATION_TOOLS = ("decode-eval", "rollout", "attention")
"""Tools that take ``--run-name NAME`` and record their metrics in ``runs/NAME/run.json``
(``core.run_record.record_evaluation``): the evaluation runs of a comparison."""


def resolve(path: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def task_of_model(model_path: str) -> str:
    for name, spec in TASKS.items():
        if spec.model == model_path:
            return name
    raise KeyError(model_path)
