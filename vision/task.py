"""``anyformer vit`` (Vision Transformer) and ``anyformer vision-cnn`` (CNN baseline): image
classification with cross-entropy; accuracy on val and test.

Both read ``(images, labels)`` batches from ``vision.data`` and differ only in the network, so
they share ``ImageClassifierModule``; each network has its own config dataclass, hence two tasks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from core.training import OptimConfig, TaskModule
from vision.cnn import ImageCNN, ImageCNNConfig
from vision.vit import ViT, ViTConfig

Batch = tuple[Tensor, Tensor]


class ImageClassifierModule(TaskModule):
    """Image classification: ``(images, labels)`` batches -> cross-entropy, accuracy on val and test.

    Training labels may be class indices (B,) or class probabilities (B, num_classes) from
    mixup/cutmix; the accuracy of training batches is logged only for the former. Subclasses
    build ``model`` (images (B, C, H, W) -> logits (B, num_classes)) from their config, which has
    ``num_classes``, ``in_channels`` and ``image_size``.
    """

    data_links: ClassVar[dict[str, str]] = {
        "num_classes": "config.num_classes",
        "in_channels": "config.in_channels",
        "image_size": "config.image_size",
    }

    def __init__(self, config: Any, model: nn.Module, optim: OptimConfig | None, label_smoothing: float) -> None:
        super().__init__(config, optim)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{type(self).__name__}.label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.model = model
        self.label_smoothing = label_smoothing
        self.val_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(config.num_classes, average="micro")
        self.class_names: list[str] = [str(i) for i in range(config.num_classes)]
        self.mean: list[float] = [0.0] * config.in_channels
        self.std: list[float] = [1.0] * config.in_channels

    def read_data(self, data: Any) -> None:
        # what inference needs to preprocess images and name classes
        self.class_names, self.mean, self.std = list(data.class_names), list(data.mean), list(data.std)

    def inference_state(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "mean": self.mean, "std": self.std}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        self.class_names = list(state.get("class_names", self.class_names))
        self.mean, self.std = list(state.get("mean", self.mean)), list(state.get("std", self.std))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.model(images)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.check_finite(loss)
        self.log("train_loss", loss, prog_bar=True)
        if labels.ndim == 1:
            self.log("train_acc", (logits.argmax(-1) == labels).float().mean(), prog_bar=True)
        return loss

    def _evaluate(self, batch: Batch, split: str, accuracy: MulticlassAccuracy) -> None:
        images, labels = batch
        logits = self.model(images)
        self.log(f"{split}_loss", F.cross_entropy(logits, labels), prog_bar=split == "val")
        accuracy(logits, labels)
        self.log(f"{split}_acc", accuracy, prog_bar=split == "val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        """(B, num_classes) class probabilities."""
        return torch.softmax(self.model(batch[0]), dim=-1)


class ViTModule(ImageClassifierModule):
    """Vision Transformer (``anyformer vit``)."""

    task_name = "vit"

    def __init__(self, config: ViTConfig, optim: OptimConfig | None = None, label_smoothing: float = 0.0) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
        """
        super().__init__(config, ViT(config), optim, label_smoothing)


class ImageCNNModule(ImageClassifierModule):
    """CNN baseline on the same images (``anyformer vision-cnn``)."""

    task_name = "vision-cnn"

    def __init__(self, config: ImageCNNConfig, optim: OptimConfig | None = None, label_smoothing: float = 0.0) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
        """
        super().__init__(config, ImageCNN(config), optim, label_smoothing)
