"""``anyformer bert`` (masked-LM + NSP pretraining) and ``anyformer bert-classify`` (fine-tuning
for sentence classification, from a pretraining checkpoint or from scratch)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from anyformer.core.train.base import OptimConfig, TaskModule, dataclass_from_dict
from anyformer.core.train.checkpoint import CheckpointError
from anyformer.core.train.classifier import ClassifierModule
from anyformer.text.batching import IGNORE_INDEX
from anyformer.text.bert.bert import BertConfig, BertForClassification, BertForPretraining
from anyformer.text.bert.pretrained import pretrained_checkpoint, pretrained_tokenizer
from anyformer.text.hf import bert_from_hf, is_hf, load_weights

logger = logging.getLogger(__name__)

Batch = dict[str, Tensor]
# Transformer fields that may differ between pretraining and fine-tuning: they change no weight
# shape (max_seq_len may shrink: the learned position table is cropped).
FINETUNE_FREE_FIELDS = ("dropout", "attn_dropout", "max_seq_len")


def _tokenizer_state(tokenizer: Any) -> dict[str, Any] | None:
    return tokenizer.to_state() if tokenizer is not None else None


def _tokenizer_from(state: dict[str, Any] | None) -> Any:
    from anyformer.text.tokenizer import tokenizer_from_state

    return tokenizer_from_state(state) if state else None


class BertPretrainModule(TaskModule):
    """Pretraining: loss = masked-LM cross-entropy (masked positions only) + NSP cross-entropy.

    Validation logs ``val_loss``, ``val_mlm_loss``, ``val_nsp_loss``, ``val_mlm_acc`` (accuracy
    over all masked positions of the split) and ``val_nsp_acc``.
    """

    task_name = "bert"
    data_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "max_seq_len": "config.transformer.max_seq_len",
    }

    def __init__(self, config: BertConfig, optim: OptimConfig | None = None) -> None:
        """
        Args:
            config: the model (its ``num_classes`` and ``classifier_dropout`` are unused here).
            optim: optimizer and schedule.
        """
        super().__init__(config, optim)
        self.model = BertForPretraining(config)
        self.tokenizer: Any = None
        self.val_mlm_acc, self.val_nsp_acc = MeanMetric(), MeanMetric()

    def read_data(self, data: Any) -> None:
        if self.tokenizer is None:
            self.tokenizer = data.tokenizer

    def inference_state(self) -> dict[str, Any]:
        return {"tokenizer": _tokenizer_state(self.tokenizer)}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.tokenizer = _tokenizer_from(state.get("tokenizer"))

    def _losses(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(MLM loss, NSP loss, per-masked-token correctness, per-pair NSP correctness)."""
        hidden = self.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])  # (B, T, D)
        masked = batch["mlm_labels"] != IGNORE_INDEX  # (B, T)
        targets = batch["mlm_labels"][masked]  # (M,)
        mlm_logits = self.model.mlm_head(hidden[masked])  # (M, V): the decoder runs on masked tokens only
        mlm_loss = F.cross_entropy(mlm_logits, targets) if len(targets) else hidden.sum() * 0.0
        nsp_logits = self.model.nsp_logits(hidden)  # (B, 2)
        nsp_loss = F.cross_entropy(nsp_logits, batch["nsp_labels"])
        mlm_correct = (mlm_logits.argmax(-1) == targets).float()
        nsp_correct = (nsp_logits.argmax(-1) == batch["nsp_labels"]).float()
        return mlm_loss, nsp_loss, mlm_correct, nsp_correct

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        mlm_loss, nsp_loss, mlm_correct, nsp_correct = self._losses(batch)
        loss = mlm_loss + nsp_loss
        self.check_finite(loss)
        self.log_dict({"train_loss": loss, "train_mlm_loss": mlm_loss, "train_nsp_loss": nsp_loss}, prog_bar=True)
        self.log_dict({"train_mlm_acc": mlm_correct.mean(), "train_nsp_acc": nsp_correct.mean()})
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        mlm_loss, nsp_loss, mlm_correct, nsp_correct = self._losses(batch)
        size = len(batch["nsp_labels"])
        self.log("val_loss", mlm_loss + nsp_loss, prog_bar=True, batch_size=size)
        self.log_dict({"val_mlm_loss": mlm_loss, "val_nsp_loss": nsp_loss}, batch_size=size)
        self.val_mlm_acc.update(mlm_correct)  # token-weighted over the whole split
        self.val_nsp_acc.update(nsp_correct)
        self.log_dict({"val_mlm_acc": self.val_mlm_acc, "val_nsp_acc": self.val_nsp_acc}, prog_bar=True)


class SentenceClassifierModule(ClassifierModule):
    """Sentence classification on ``TextClassificationDataModule`` batches (cross-entropy, accuracy
    over each split); checkpoints carry the tokenizer and ``max_seq_len``.

    Shared by ``bert-classify`` and its ``text-bow`` baseline, so both report the same columns
    and ``anyformer classify`` reads both checkpoints. Subclasses build ``self.model`` and say how
    a batch becomes logits (:meth:`batch_logits`) and how long a sequence may be (``max_seq_len``).
    """

    def __init__(self, config: Any, model: nn.Module, optim: OptimConfig | None) -> None:
        super().__init__(config, model, optim)
        self.tokenizer: Any = None

    @property
    def max_seq_len(self) -> int:
        """Longest ``[CLS] text [SEP]`` sequence; inference crops longer texts to it, as the data module does."""
        raise NotImplementedError

    def batch_logits(self, batch: Batch) -> Tensor:
        """(B, num_classes) logits of a padded batch: (B, T) ``input_ids``, ``segment_ids`` and
        ``attention_mask`` (True = real token), as ``anyformer.text.batching.pad_batch`` builds it."""
        raise NotImplementedError

    def batch_labels(self, batch: Batch) -> Tensor:
        return batch["labels"]

    def read_data(self, data: Any) -> None:
        super().read_data(data)
        self.tokenizer = data.tokenizer

    def inference_state(self) -> dict[str, Any]:
        return super().inference_state() | {
            "tokenizer": _tokenizer_state(self.tokenizer),
            "max_seq_len": self.max_seq_len,
        }

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.tokenizer = _tokenizer_from(state.get("tokenizer"))


class BertClassifierModule(SentenceClassifierModule):
    """Fine-tuning: ``[CLS] text [SEP]`` -> class, cross-entropy; logs ``val_loss`` and ``val_acc``.

    With ``init_from`` the embeddings, encoder and pooler start from a ``bert`` pretraining
    checkpoint (its architecture must equal ``config``'s, bar dropout and a shorter
    ``max_seq_len``) or from a Hugging Face BERT, ``hf:<folder or hub id>`` (the architecture is
    then taken from its config.json, see ``anyformer.text.hf``; a folder without a pooler, as
    ``BertForMaskedLM`` saves, leaves the pooler random); the classification layer always starts
    fresh. Without it, every weight is random: the from-scratch baseline.
    """

    task_name = "bert-classify"
    # The pretraining checkpoint seeds the weights once; a trained classifier carries them, so
    # rebuilding it (load_from_checkpoint) must not read that file again (it may have moved).
    hparams_ignore: ClassVar[tuple[str, ...]] = ("init_from",)
    data_links: ClassVar[dict[str, str]] = {
        "vocab_size": "config.vocab_size",
        "num_classes": "config.num_classes",
        "max_seq_len": "config.transformer.max_seq_len",
        "init_from": "init_from",
    }

    def __init__(self, config: BertConfig, optim: OptimConfig | None = None, init_from: str | None = None) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            init_from: ``bert`` pretraining checkpoint or ``hf:<folder or hub id>`` to start the
                encoder from (linked from ``data.init_from``, which also takes the tokenizer from
                it); None trains from scratch.
        """
        hf_state = None
        if is_hf(init_from):
            config, hf_state, _ = bert_from_hf(init_from, config)  # before super(): the hparams keep this config
        super().__init__(config, BertForClassification(config), optim)
        self.init_from = init_from
        if hf_state is not None:
            load_weights(self.model.bert, hf_state, init_from, optional=("pooler.",))
            self.tokenizer = pretrained_tokenizer(init_from)
        elif init_from is not None:
            self.load_pretrained(init_from)

    def load_pretrained(self, path: str) -> None:
        """Copy the embeddings, encoder and pooler of a ``bert`` checkpoint into this model.

        Raises:
            CheckpointError: unreadable file, another task's checkpoint, or another architecture.
        """
        checkpoint = pretrained_checkpoint(path)
        meta = checkpoint["anyformer"]
        pretrained = dataclass_from_dict(BertConfig, meta["config"])
        mismatches = _architecture_mismatches(pretrained, self.config)
        if mismatches:
            raise CheckpointError(f"init_from={path!r} has another architecture than config: {'; '.join(mismatches)}")
        prefix = "model.bert."
        state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
        key = "encoder.positions.embedding.weight"
        if key in state:
            state[key] = state[key][: self.config.transformer.max_seq_len]  # a shorter context keeps the first rows
        self.model.bert.load_state_dict(state)
        self.tokenizer = _tokenizer_from(meta["inference"].get("tokenizer"))
        logger.info("initialized the encoder from %s (%d tensors)", path, len(state))

    @property
    def max_seq_len(self) -> int:
        return self.config.transformer.max_seq_len

    def forward(self, ids: Tensor, segments: Tensor, keep: Tensor) -> Tensor:
        """(B, T) ids, segments, keep (True = real token) -> (B, num_classes) logits."""
        return self.model(ids, segments, keep)

    def batch_logits(self, batch: Batch) -> Tensor:
        return self.model(batch["input_ids"], batch["segment_ids"], batch["attention_mask"])


def _architecture_mismatches(pretrained: BertConfig, config: BertConfig) -> list[str]:
    """Fields that differ between a pretrained and a fine-tuning config and change weight shapes."""
    mismatches = [
        f"{name}={getattr(pretrained, name)!r} in the checkpoint but {getattr(config, name)!r} here"
        for name in ("vocab_size", "n_segments")
        if getattr(pretrained, name) != getattr(config, name)
    ]
    # final_norm=None and its resolved value build the same stack (older checkpoints store the bool).
    ours_t, theirs_t = (
        dataclasses.replace(t, final_norm=t.use_final_norm) for t in (config.transformer, pretrained.transformer)
    )
    for field in dataclasses.fields(config.transformer):
        ours, theirs = getattr(ours_t, field.name), getattr(theirs_t, field.name)
        if field.name not in FINETUNE_FREE_FIELDS and ours != theirs:
            mismatches.append(f"transformer.{field.name}={theirs!r} in the checkpoint but {ours!r} here")
    if config.transformer.max_seq_len > pretrained.transformer.max_seq_len:
        mismatches.append(
            f"max_seq_len={config.transformer.max_seq_len} exceeds the checkpoint's learned positions "
            f"({pretrained.transformer.max_seq_len})"
        )
    return mismatches
