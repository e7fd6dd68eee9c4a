"""``anyformer vit`` (Vision Transformer) and ``anyformer vision-cnn`` (CNN baseline): image
classification with cross-entropy; accuracy on val and test.

Both read ``(images, labels)`` batches from ``anyformer.vision.data`` and differ only in the network, so
they share ``ImageClassifierModule``; each network has its own config dataclass, hence two tasks.

A ViT built with ``distill=True`` trains as DeiT's distilled ViT (Touvron et al. 2021) with hard
distillation from a frozen ``teacher`` checkpoint (``vision-cnn`` or ``vit``, trained on the same data):
``(1 - alpha) * CE(class head, labels) + alpha * CE(distillation head, argmax teacher(images))``, alpha 1/2.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.cli.errors import UsageError
from anyformer.core.train.base import OptimConfig
from anyformer.core.train.checkpoint import load_task
from anyformer.core.train.classifier import ClassifierModule
from anyformer.vision.cnn import ImageCNN, ImageCNNConfig
from anyformer.vision.timm import expected_normalization, pretrained_vit
from anyformer.vision.vit import ViT, ViTConfig

logger = logging.getLogger(__name__)

Batch = tuple[Tensor, Tensor]
TEACHER_TASKS = ("vision-cnn", "vit")
DISTILL_ALPHA = 0.5
"""Weight of the distillation head's loss: DeiT's hard distillation weighs both heads equally."""


def hard_distillation_loss(
    logits: Tensor, dist_logits: Tensor, labels: Tensor, teacher_logits: Tensor, label_smoothing: float = 0.0
) -> Tensor:
    """DeiT's hard-distillation objective.

    Args:
        logits: (B, K) of the class head.
        dist_logits: (B, K) of the distillation head.
        labels: (B,) class indices or (B, K) class probabilities (mixup / cutmix).
        teacher_logits: (B, K) of the teacher on the same images; only its argmax is used.
        label_smoothing: applied to the class head's target only, as DeiT does.

    Returns:
        ``(1 - a) * CE(logits, labels) + a * CE(dist_logits, argmax teacher_logits)``, a = ``DISTILL_ALPHA``.
    """
    base = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    distill = F.cross_entropy(dist_logits, teacher_logits.argmax(dim=-1))
    return (1 - DISTILL_ALPHA) * base + DISTILL_ALPHA * distill


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
    # The teacher only trains: a distilled checkpoint classifies without it.
    hparams_ignore: ClassVar[tuple[str, ...]] = ("init_from", "teacher")

    def __init__(
        self,
        config: ViTConfig,
        optim: OptimConfig | None = None,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
        teacher: str | None = None,
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
            teacher: a ``vision-cnn`` or ``vit`` checkpoint trained on the same data, the frozen teacher
                of a ``config.distill`` ViT (hard distillation, DeiT); read when fitting starts.
        """
        pretrained = None if init_from is None else pretrained_vit(init_from, config)
        if pretrained is not None:
            # save_hyperparameters reads this frame's arguments: the saved config is the timm architecture.
            config = pretrained.model.cfg
        super().__init__(config, ViT(config) if pretrained is None else pretrained.model, optim, label_smoothing)
        self.init_from = init_from
        if teacher is not None and not self.config.distill:
            raise ValueError("ViTModule.teacher needs config.distill=True: the teacher trains the distillation head")
        self.teacher_path = teacher
        # The teacher is not a submodule: kept out of the state dict (checkpoints stay the student's
        # alone), of the optimizer, and of Lightning's train() calls (it stays in eval mode).
        self.teacher: nn.Module | None
        object.__setattr__(self, "teacher", None)
        self.timm_normalization = None
        if pretrained is not None:
            self.timm_normalization = expected_normalization(pretrained, config.in_channels)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if self.config.distill:
            object.__setattr__(self, "teacher", self.load_teacher().to(self.device))

    def load_teacher(self) -> nn.Module:
        """The frozen teacher network (eval mode, no gradients) from ``teacher``.

        Raises:
            UsageError: no teacher given for a distilled ViT, or one trained on other classes or
                other normalization than this data.
        """
        if self.teacher_path is None:
            raise UsageError("model.config.distill=true needs model.teacher: a vision-cnn or vit checkpoint to learn")
        module = load_task(self.teacher_path, tasks=TEACHER_TASKS)
        mismatch = []
        if list(module.class_names) != list(self.class_names):
            mismatch.append(f"classes {module.class_names} != {self.class_names}")
        for name in ("mean", "std"):  # the teacher sees the student's normalized images
            theirs, ours = getattr(module, name), getattr(self, name)
            if len(theirs) != len(ours) or any(abs(a - b) > 1e-6 for a, b in zip(theirs, ours)):
                mismatch.append(f"{name} {theirs} != {ours}")
        if mismatch:
            raise UsageError(f"teacher {self.teacher_path} was trained on other data: {'; '.join(mismatch)}")
        teacher = module.model.eval()
        teacher.requires_grad_(False)
        return teacher

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if not self.config.distill:
            return super().training_step(batch, batch_idx)
        images, labels = batch
        if self.teacher is None:  # fit hooks ran elsewhere (a bare training_step call): load it now
            object.__setattr__(self, "teacher", self.load_teacher().to(images.device))
        logits, dist_logits = self.model.forward_heads(self.model.forward_features(images))
        with torch.no_grad():
            teacher_logits = self.teacher(images)  # the same augmented (and mixed) images, as DeiT
        loss = hard_distillation_loss(logits, dist_logits, labels, teacher_logits, self.label_smoothing)
        self.check_finite(loss)
        size = len(images)
        self.log("train_loss", loss, prog_bar=True, batch_size=size)
        if labels.ndim == 1:
            accuracy = (((logits + dist_logits) / 2).argmax(-1) == labels).float().mean()  # the inference logits
            self.log("train_acc", accuracy, prog_bar=True, batch_size=size)
            agree = (dist_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
            self.log("train_teacher_agree", agree, batch_size=size)
        return loss

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
