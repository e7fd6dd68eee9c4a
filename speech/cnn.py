"""Small CNN baseline on the same log-mel input as ``anyformer.speech.speech``: the yardstick the speech
transformer is compared with (task ``speech-cnn``).

Blocks of conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool, then a global average over frequency
and time, dropout and a linear head (the usual keyword-spotting CNN).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.baselines import conv_block
from anyformer.speech.augment import SpecAugmentConfig
from anyformer.speech.features import SpectrogramConfig
from anyformer.speech.front_end import SpeechFrontEnd


@dataclass
class SpeechCNNConfig:
    """A convolutional spoken-word classifier."""

    num_classes: int = 10
    """Number of classes; linked from the data module by the CLI."""
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    """Front end (rate, mels, clip length, normalization); linked from the data module by the CLI."""
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    """Output channels of each conv block; every block halves frequency and time."""
    dropout: float = 0.1
    """Dropout before the linear head."""
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """Frequency and time masking of training spectrograms (identity in eval mode)."""

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"SpeechCNNConfig.num_classes must be >= 1, got {self.num_classes!r}")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"SpeechCNNConfig.channels must be a non-empty list of ints >= 1, got {self.channels!r}")
        smallest = min(self.spectrogram.n_features, self.spectrogram.n_frames)
        if 2 ** len(self.channels) > smallest:
            raise ValueError(
                f"SpeechCNNConfig.channels has {len(self.channels)} blocks, each halving the spectrogram, but its "
                f"smaller side is {smallest}; use at most {smallest.bit_length() - 1} blocks"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"SpeechCNNConfig.dropout must be in [0, 1), got {self.dropout!r}")


class SpeechCNN(nn.Module):
    """Waveforms (B, samples) -> class logits (B, num_classes)."""

    def __init__(self, cfg: SpeechCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.front_end = SpeechFrontEnd(cfg.spectrogram, cfg.spec_augment)
        widths = [1, *cfg.channels]
        self.blocks = nn.Sequential(*(conv_block(a, b) for a, b in itertools.pairwise(widths)))
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(widths[-1], cfg.num_classes)

    def spectrogram(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, F, T) log-mel features; SpecAugment-masked in training mode."""
        return self.front_end(waves)

    def forward_features(self, spec: Tensor) -> Tensor:
        """(B, F, T) log-mel spectrogram -> (B, C) pooled features."""
        x = self.blocks(spec.unsqueeze(1))  # (B, C, F / 2^k, T / 2^k)
        return x.mean(dim=(2, 3))  # (B, C)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, C) features -> (B, num_classes) logits."""
        return self.head(self.dropout(features))

    def forward(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(self.spectrogram(waves)))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
