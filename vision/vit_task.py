"""``anyformer vit`` (Vision Transformer) and ``anyformer vision-cnn`` (CNN baseline): image
classification with cross-entropy; accuracy on val and test.

Both read ``(images, labels)`` batches from ``anyformer.vision.data`` and differ only in the network, so
they share ``ImageClassifierModule``; each network has its own config dataclass, hence two tasks.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from torch import Tensor, nn

from anyformer.core.train.base import OptimConfig
from anyformer.core.train.classifier import ClassifierModule
from anyformer.vision.cnn import ImageCNN, ImageCNNConfig
from anyformer.vision.timm import expected_normalization, pretrained_vit
from anyformer.vision.vit import ViT, ViTConfig

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]


class ImageClassifierModule(ClassifierModule):
    """Image classification on ``(images, labels)`` batches; checkpoints carry the normalization.

    Subclasses build ``model`` (images (B, C, H, W) -> logits (B, num_classes)) from their config,
    which has ``num_classes``, ``in_channels`` and ``image_size``.
    """

    data_links: ClassVar[dict[str, str]] = {
        "num_classes": "config.num_classes",
        "in_channels": "config.in_channels",
        "image_size": "config.image_size",
    }

    def __init__(self, config: Any, model: nn.Module, optim: OptimConfig | None, label_smoothing: float) -> None:
        super().__init__(config, model, optim, label_smoothing)
        self.mean: list[float] = [0.0] * config.in_channels
        self.std: list[float] = [1.0] * config.in_channels

    def read_data(self, data: Any) -> None:
        super().read_data(data)
        self.mean, self.std = list(data.mean), list(data.std)  # inference preprocesses images with these

    def inference_state(self) -> dict[str, Any]:
        return super().inference_state() | {"mean": self.mean, "std": self.std}

    def load_inference_state(self, state: dict[str, Any]) -> None:
        super().load_inference_state(state)
        self.mean, self.std = list(state.get("mean", self.mean)), list(state.get("std", self.std))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.model(images)

    def batch_logits(self, batch: Batch) -> Tensor:
        return self.model(batch[0])

    def batch_labels(self, batch: Batch) -> Tensor:
        return batch[1]


class ViTModule(ImageClassifierModule):
    """Vision Transformer (``anyformer vit``).

    With ``init_from`` (``timm:<name>``, ``timm:<name>@<weights file>`` or ``timm:<folder>``, see
    ``anyformer.vision.timm``) the network is a timm ViT's: its architecture replaces ``config``'s
    (bar the data-linked image size, channels and classes, and the dropouts), its weights are
    resampled / adapted to the data, and the classifier starts fresh when the classes differ.
    Images stay normalized by the data module (``data.mean`` / ``data.std``); a warning names the
    statistics the timm weights were trained with when they differ.
    """

    task_name = "vit"
    # The timm weights seed the network once; a trained checkpoint carries them and its saved config
    # is the timm architecture, so rebuilding it (load_from_checkpoint) never reads init_from again.
    hparams_ignore: ClassVar[tuple[str, ...]] = ("init_from",)

    def __init__(
        self,
        config: ViTConfig,
        optim: OptimConfig | None = None,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
    ) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
            init_from: timm weights to start from: ``timm:<name>`` (downloaded by timm),
                ``timm:<name>@<.safetensors/.pth/.bin file>`` or ``timm:<folder>`` (timm's
                ``config.json`` + ``model.safetensors``, as ``anyformer export`` writes); None trains
                from scratch.
        """
        pretrained = None if init_from is None else pretrained_vit(init_from, config)
        if pretrained is not None:
            # save_hyperparameters reads this frame's arguments: the saved config is the timm architecture.
            config = pretrained.model.cfg
        super().__init__(config, ViT(config) if pretrained is None else pretrained.model, optim, label_smoothing)
        self.init_from = init_from
        self.timm_normalization = None
        if pretrained is not None:
            self.timm_normalization = expected_normalization(pretrained, config.in_channels)

    def read_data(self, data: Any) -> None:
        super().read_data(data)
        if self.timm_normalization is None:
            return
        mean, std = self.timm_normalization
        if any(abs(a - b) > 1e-4 for a, b in zip(mean + std, self.mean + self.std)):
            logger.warning(
                "init_from=%s: the timm weights were trained on images normalized with mean=%s std=%s, the data "
                "normalizes with mean=%s std=%s (set data.mean / data.std to match for the closest start)",
                self.init_from, mean, std, self.mean, self.std,
            )  # fmt: skip


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
