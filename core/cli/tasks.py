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
    "gpt": TaskSpec(
        "anyformer.text.gpt.gpt_task:GPTModule",
        "anyformer.text.gpt.data:TextDataModule",
        "GPT causal language model (text)",
    ),
    "vit": TaskSpec(
        "anyformer.vision.vit_task:ViTModule",
        "anyformer.vision.data:ImageDataModule",
        "Vision Transformer image classifier",
    ),
    "bert": TaskSpec(
        "anyformer.text.bert.bert_task:BertPretrainModule",
        "anyformer.text.bert.data:BertPretrainDataModule",
        "BERT pretraining",
    ),
    "bert-classify": TaskSpec(
        "anyformer.text.bert.bert_task:BertClassifierModule",
        "anyformer.text.classification_data:TextClassificationDataModule",
        "BERT classifier",
    ),
    "dt": TaskSpec(
        "anyformer.rl.dt_task:DTModule", "anyformer.rl.data:TrajectoryDataModule", "Decision Transformer (offline RL)"
    ),
    "seq2seq": TaskSpec(
        "anyformer.text.seq2seq.seq2seq_task:Seq2SeqModule",
        "anyformer.text.seq2seq.data:ParallelDataModule",
        "translation",
    ),
    "gru-seq2seq": TaskSpec(
        "anyformer.text.baselines.gru_seq2seq:GRUSeq2SeqModule",
        "anyformer.text.seq2seq.data:ParallelDataModule",
        "GRU + attention translation baseline",
    ),
    "speech": TaskSpec(
        "anyformer.speech.speech_task:SpeechModule",
        "anyformer.speech.data:SpeechDataModule",
        "Spoken-word transformer (speech)",
    ),
    "speech-cnn": TaskSpec(
        "anyformer.speech.speech_task:SpeechCNNModule",
        "anyformer.speech.data:SpeechDataModule",
        "CNN baseline (speech)",
    ),
    "lstm": TaskSpec(
        "anyformer.text.baselines.lstm:LSTMModule",
        "anyformer.text.gpt.data:TextDataModule",
        "LSTM language model baseline (text)",
    ),
    "text-bow": TaskSpec(
        "anyformer.text.baselines.bow:BagOfWordsModule",
        "anyformer.text.classification_data:TextClassificationDataModule",
        "bag-of-words baseline (text classifier)",
    ),
    "vision-cnn": TaskSpec(
        "anyformer.vision.vit_task:ImageCNNModule", "anyformer.vision.data:ImageDataModule", "CNN baseline (vision)"
    ),
    "dpo": TaskSpec(
        "anyformer.text.preference.dpo_task:DPOModule",
        "anyformer.text.preference.data:PreferenceDataModule",
        "preference tuning of a GPT (DPO) on chosen/rejected pairs",
    ),
}

# name -> (``module:function`` taking argv and returning an exit code, summary)
TOOLS: dict[str, tuple[str, str]] = {
    "generate": ("anyformer.text.gpt.generate:main", "generate text from a GPT checkpoint"),
    "decode-eval": (
        "anyformer.text.gpt.decode_eval:main",
        "score a decoding strategy of a GPT checkpoint (perplexity, diversity)",
    ),
    "classify": ("anyformer.core.cli.classify:main", "classify images, sentences or audio clips with a checkpoint"),
    "attention": (
        "anyformer.core.cli.attention:main",
        "draw a checkpoint's attention for one input (text, image, audio, RL)",
    ),
    "collect": ("anyformer.rl.collect:main", "collect an offline-RL trajectory dataset (.npz) with a behaviour policy"),
    "rollout": ("anyformer.rl.rollout:main", "play a Decision Transformer checkpoint conditioned on target returns"),
    "translate": (
        "anyformer.text.seq2seq.translate:main",
        "translate sentences or score a test set with a seq2seq checkpoint",
    ),
    "experiment": (
        "anyformer.experiments.runner:main",
        "run a comparison of experiments/comparisons/ end to end, resumably",
    ),
    "report": (
        "anyformer.experiments.report:main",
        "regenerate experiments/results/RESULTS.md and plots from the run logs",
    ),
    "demo": (
        "anyformer.experiments.demo:main",
        "the main job: every task at a tiny size, offline, one output each",
    ),
    "soak": (
        "anyformer.experiments.soak:main",
        "a long fit (validating, checkpointing, logging) with its resident memory sampled and reported",
    ),
    "data": (
        "anyformer.core.data.cli:main",
        "list the datasets and where they are read from; fetch one ahead of time",
    ),
    "export": (
        "anyformer.core.cli.export:main",
        "write a checkpoint as safetensors, ONNX or Hugging Face files (--format)",
    ),
    "app": ("anyformer.app:main", "a local web page to try every checkpoint, one tab each (extra [app])"),
    "preferences": (
        "anyformer.text.preference.preferences:main",
        "sample continuations from a GPT, score them with a classifier, write chosen/rejected pairs (JSONL)",
    ),
    "preference-eval": (
        "anyformer.text.preference.evaluate:main",
        "judge a (tuned) GPT's continuations of held-out prompts: judge-positive rate, reward, KL, diversity",
    ),
}

EVALUATION_TOOLS = ("decode-eval", "rollout", "attention", "preferences", "preference-eval", "soak")
"""Tools that take ``--run-name NAME`` and record their metrics in ``runs/NAME/run.json``
(``anyformer.core.train.run_record.record_evaluation``): the evaluation runs of a comparison."""


def resolve(path: str) -> Any:
    """Import ``module:attribute``."""
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


def task_of_model(model_path: str) -> str:
    for name, spec in TASKS.items():
        if spec.model == model_path:
            return name
    raise KeyError(model_path)
