"""``anyformer speech`` (spectrogram transformer) and ``anyformer speech-cnn`` (CNN baseline):
spoken-word classification with cross-entropy; accuracy on val and test.

Both read ``{"waveform": (B, samples), "label": (B,)}`` batches from ``speech.data`` and differ
only in the network, so they share ``SpeechClassifierModule``. They are two tasks rather than
one task with a ``backbone`` switch because each network has its own config dataclass: a switch
would leave the transformer's fields (patches, stack) meaningless for the CNN and vice versa.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from core.training import OptimConfig, TaskModule
from speech.cnn import SpeechCNN, SpeechCNNConfig
from speech.model import SpeechConfig, SpeechTransformer

Batch = dict[str, Tensor]


class SpeechClassifierModule(TaskModule):
    """Shared training logic; subclasses build ``self.model`` from their config."""

    data_links: ClassVar[dict[str, str]] = {
        "num_classes": "config.num_classes",
        "spectrogram_config": "config.spectrogram",
    }

    def __init__(self, config: Any, model: nn.Module, optim: OptimConfig | None, label_smoothing: float) -> None:
        super().__init__(config, optim)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{type(self).__name__}.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.model = model
        self.label_smoothing = label_smoothing
        # One metric per split: each accumulates over its own epoch.
        self.train_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.class_names: list[str] = [str(i) for i in range(config.num_classes)]

    def read_data(self, data: Any) -> None:
        names = list(data.class_names)  # inference names classes with these
        if len(names) != self.config.num_classes:
            raise ValueError(f"the data has {len(names)} classes but the model was built for {self.config.num_classes}")
        self.class_names = names

    def inference_state(self) -> dict[str, Any]:
        # The spectrogram settings (and normalization) travel in the config: the model needs them to be built.
        return {"class_names": self.class_names}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.class_names = list(state.get("class_names", self.class_names))

    def forward(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, num_classes) logits."""
        return self.model(waves)

    def _step(self, batch: Batch, split: str) -> Tensor:
        """Log ``<split>_loss`` and ``<split>_acc``; label smoothing applies to training only."""
        logits, labels = self.model(batch["waveform"]), batch["label"]
        smoothing = self.label_smoothing if split == "train" else 0.0
        loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        self.log(f"{split}_loss", loss, prog_bar=split != "test")
        accuracy = getattr(self, f"{split}_acc")
        accuracy(logits, labels)
        self.log(f"{split}_acc", accuracy, prog_bar=split == "val")
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss = self._step(batch, "train")
        self.check_finite(loss)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """(B, num_classes) class probabilities."""
        return torch.softmax(self.model(batch["waveform"]), dim=-1)


class SpeechModule(SpeechClassifierModule):
    """Spectrogram-patch transformer (``anyformer speech``)."""

    task_name = "speech"

    def __init__(self, config: SpeechConfig, optim: OptimConfig | None = None, label_smoothing: float = 0.0) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
        """
        super().__init__(config, SpeechTransformer(config), optim, label_smoothing)


class SpeechCNNModule(SpeechClassifierModule):
    """CNN baseline on the same log-mel input (``anyformer speech-cnn``)."""

    task_name = "speech-cnn"

    def __init__(self, config: SpeechCNNConfig, optim: OptimConfig | None = None, label_smoothing: float = 0.0) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
        """
        super().__init__(config, SpeechCNN(config), optim, label_smoothing)
