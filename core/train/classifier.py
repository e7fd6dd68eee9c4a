"""The classification task every modality shares: batch -> logits -> cross-entropy (with optional
label smoothing for training), accuracy over each validation and test split, class names for
inference.

Images, spectrograms and sentences differ only in how a batch becomes logits and labels: a
subclass implements :meth:`ClassifierModule.batch_logits` and :meth:`ClassifierModule.batch_labels`
and extends :meth:`read_data` / :meth:`inference_state` with what its inference needs besides class
names (normalization statistics, a tokenizer). Each network keeps its own subclass with a typed
``__init__``: LightningCLI reads the config class from it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from anyformer.core.train.base import OptimConfig, TaskModule


class ClassifierModule(TaskModule):
    """Logs ``train_loss``/``train_acc`` per step and ``{val,test}_loss``/``{val,test}_acc`` per split.

    Training labels may be class indices (B,) or class probabilities (B, num_classes) (mixup,
    cutmix); the training accuracy is logged only for the former. ``config`` has ``num_classes``.
    """

    def __init__(self, config: Any, model: nn.Module, optim: OptimConfig | None, label_smoothing: float = 0.0) -> None:
        super().__init__(config, optim)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{type(self).__name__}.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.model = model
        self.label_smoothing = label_smoothing
        # One metric per split: each accumulates over its own epoch, weighted by examples.
        self.val_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.class_names: list[str] = [str(i) for i in range(config.num_classes)]

    def batch_logits(self, batch: Any) -> Tensor:
        """(B, num_classes) logits of a batch."""
        raise NotImplementedError

    def batch_labels(self, batch: Any) -> Tensor:
        """(B,) class indices, or (B, num_classes) class probabilities, of a batch."""
        raise NotImplementedError

    def read_data(self, data: Any) -> None:
        names = list(data.class_names)  # inference names classes with these
        if len(names) != self.config.num_classes:
            raise ValueError(f"the data has {len(names)} classes but the model was built for {self.config.num_classes}")
        self.class_names = names

    def inference_state(self) -> dict[str, Any]:
        return {"class_names": self.class_names}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.class_names = list(state.get("class_names", self.class_names))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        logits, labels = self.batch_logits(batch), self.batch_labels(batch)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.check_finite(loss)
        size = len(logits)
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        if labels.ndim == 1:
            self.log("train_acc", (logits.argmax(-1) == labels).float().mean(), prog_bar=True, batch_size=size)
        return loss

    def _evaluate(self, batch: Any, split: str, accuracy: MulticlassAccuracy) -> None:
        """Log ``<split>_loss`` (no label smoothing: the loss of the model's own probabilities) and ``<split>_acc``."""
        logits, labels = self.batch_logits(batch), self.batch_labels(batch)
        self.log(f"{split}_loss", F.cross_entropy(logits, labels), prog_bar=split == "val", batch_size=len(logits))
        accuracy(logits, labels)
        self.log(f"{split}_acc", accuracy, prog_bar=split == "val")

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """(B, num_classes) class probabilities."""
        return torch.softmax(self.batch_logits(batch), dim=-1)
