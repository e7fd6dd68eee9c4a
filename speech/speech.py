"""Audio Spectrogram Transformer: the core ViT over a log-mel spectrogram image (Gong et al. 2021).

    waveform (B, samples) -> SpeechFrontEnd -> (B, F, T) log-mel -> (B, 1, F, T) image -> core ViT -> logits

The front end lives in the model, so a checkpoint carries the spectrogram settings (and the
normalization measured on the training set) and inference needs nothing but audio files. Patches
may overlap (AST: 16x16 every 10) and the spectrogram is zero-padded at its high-frequency and
late-time edges so the patch grid covers every band and frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.config import TransformerConfig
from anyformer.core.vit import ViT, ViTConfig, check_patch_fields
from anyformer.speech.augment import SpecAugmentConfig
from anyformer.speech.features import SpectrogramConfig
from anyformer.speech.front_end import SpeechFrontEnd


def _speech_transformer() -> TransformerConfig:
    return TransformerConfig(dim=128, n_layers=4, n_heads=4, position="none")


@dataclass
class SpeechConfig:
    """A spoken-word classifier over log-mel spectrogram patches."""

    num_classes: int = 10
    """Number of classes; linked from the data module by the CLI."""
    spectrogram: SpectrogramConfig = field(default_factory=SpectrogramConfig)
    """Front end (rate, mels, clip length, normalization); linked from the data module by the CLI."""
    patch_size: int | tuple[int, int] = 16
    """(mel bands, frames) of one patch, or one int for a square patch."""
    patch_stride: int | tuple[int, int] | None = None
    """Step between patches, (bands, frames) or one int; smaller than the patch = overlap; None = patch_size."""
    pool: str = "cls"
    """Clip summary the head reads: ``cls`` ([CLS] token) or ``mean`` (mean of the patch tokens)."""
    position: str = "learned"
    """2-D patch positions: ``learned`` (one vector per (frequency, time) cell), ``sinusoidal`` or ``none``."""
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """Frequency and time masking of training spectrograms (identity in eval mode)."""
    transformer: TransformerConfig = field(default_factory=_speech_transformer)
    """The encoder stack; ``position`` must be ``none`` (the tokenizer adds 2-D positions)."""

    def __post_init__(self) -> None:
        check_patch_fields(self, "SpeechConfig")

    @property
    def spectrogram_size(self) -> tuple[int, int]:
        """(F, T): mel bands and frames of one clip."""
        return self.spectrogram.n_features, self.spectrogram.n_frames

    @property
    def vit(self) -> ViTConfig:
        """The core ViT over the (1, F, T) spectrogram image, zero-padded at its edges as the patches need."""
        return ViTConfig(
            image_size=self.spectrogram_size, patch_size=self.patch_size, patch_stride=self.patch_stride, pad=True,
            in_channels=1, num_classes=self.num_classes, pool=self.pool, position=self.position,
            transformer=self.transformer,
        )  # fmt: skip


class SpeechTransformer(nn.Module):
    """Waveforms (B, samples) -> class logits (B, num_classes): ``front_end`` then the core ``vit``."""

    def __init__(self, cfg: SpeechConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.front_end = SpeechFrontEnd(cfg.spectrogram, cfg.spec_augment)
        self.vit = ViT(cfg.vit)

    def spectrogram(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, F, T) log-mel features; SpecAugment-masked in training mode."""
        return self.front_end(waves)

    def image(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, 1, F, T): the spectrogram as the one-channel image ``vit`` reads."""
        return self.spectrogram(waves)[:, None]

    def forward(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, num_classes) logits."""
        return self.vit(self.image(waves))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
