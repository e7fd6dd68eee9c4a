"""``anyformer speech`` (spectrogram transformer) and ``anyformer speech-cnn`` (CNN baseline):
spoken-word classification with cross-entropy; accuracy on val and test.

Both read ``{"waveform": (B, samples), "label": (B,)}`` batches from ``anyformer.speech.data`` and differ
only in the network, so they share ``SpeechClassifierModule``. They are two tasks rather than
one task with a ``backbone`` switch because each network has its own config dataclass: a switch
would leave the transformer's fields (patches, stack) meaningless for the CNN and vice versa.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import Tensor

from anyformer.core.train.base import OptimConfig
from anyformer.core.train.classifier import ClassifierModule
from anyformer.speech.cnn import SpeechCNN, SpeechCNNConfig
from anyformer.speech.speech import SpeechConfig, SpeechTransformer

Batch = dict[str, Tensor]


class SpeechClassifierModule(ClassifierModule):
    """Spoken-word classification on ``{"waveform", "label"}`` batches; subclasses build ``model``.

    The spectrogram settings (and normalization) travel in the config: the model needs them to be built.
    """

    data_links: ClassVar[dict[str, str]] = {
        "num_classes": "config.num_classes",
        "spectrogram_config": "config.spectrogram",
    }

    def forward(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, num_classes) logits."""
        return self.model(waves)

    def batch_logits(self, batch: Batch) -> Tensor:
        return self.model(batch["waveform"])

    def batch_labels(self, batch: Batch) -> Tensor:
        return batch["label"]


OLD_VIT_KEYS = re.compile(r"^model\.(tokenizer|encoder|head)\.")
"""Weights of checkpoints written before the speech transformer became the core ViT over a
spectrogram image: ``model.tokenizer.*`` is now ``model.vit.tokenizer.*``, and so on."""


def upgrade_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A ``SpeechModule`` state dict of any version, with the weight names of this one."""
    return {OLD_VIT_KEYS.sub(r"model.vit.\1.", name): value for name, value in state_dict.items()}


class SpeechModule(SpeechClassifierModule):
    """Spectrogram-patch transformer (``anyformer speech``).

    Loads the state dicts of older checkpoints too (:func:`upgrade_state_dict`); their config
    dicts need no change (``position`` is new and defaults to their learned positions).
    """

    task_name = "speech"

    def __init__(self, config: SpeechConfig, optim: OptimConfig | None = None, label_smoothing: float = 0.0) -> None:
        """
        Args:
            config: the model.
            optim: optimizer and schedule.
            label_smoothing: mass spread uniformly over all classes in the cross-entropy target.
        """
        super().__init__(config, SpeechTransformer(config), optim, label_smoothing)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        return super().load_state_dict(upgrade_state_dict(state_dict), strict=strict, assign=assign)


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
