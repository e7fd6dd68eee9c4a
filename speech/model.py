"""Audio Spectrogram Transformer: waveform -> log-mel -> patch tokens -> core Encoder -> [CLS] head.

The front end lives in the model, so a checkpoint carries the spectrogram settings (and the
normalization measured on the training set) and inference needs nothing but audio files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.attention import AttentionMaps
from anyformer.core.config import TransformerConfig
from anyformer.core.init import init_weights
from anyformer.core.linear import Linear
from anyformer.core.stack import Encoder
from anyformer.speech.augment import SpecAugmentConfig
from anyformer.speech.features import SpectrogramConfig
from anyformer.speech.front_end import SpeechFrontEnd
from anyformer.speech.tokenizer import SpectrogramTokenizer, patch_grid, to_pair

POOLS = ("cls", "mean")


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
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    """Frequency and time masking of training spectrograms (identity in eval mode)."""
    transformer: TransformerConfig = field(default_factory=_speech_transformer)
    """The encoder stack; ``position`` must be ``none`` (the tokenizer adds 2-D positions)."""

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"SpeechConfig.num_classes must be >= 1, got {self.num_classes!r}")
        if self.pool not in POOLS:
            raise ValueError(f"SpeechConfig.pool={self.pool!r} is not one of {list(POOLS)}")
        if self.transformer.position != "none":
            raise ValueError(
                f"SpeechConfig.transformer.position={self.transformer.position!r} must be 'none': "
                "the spectrogram tokenizer adds learned 2-D positions itself"
            )
        self.patch_size = to_pair(self.patch_size, "SpeechConfig.patch_size")
        if self.patch_stride is not None:
            self.patch_stride = to_pair(self.patch_stride, "SpeechConfig.patch_stride")

    @property
    def spectrogram_size(self) -> tuple[int, int]:
        """(F, T): mel bands and frames of one clip."""
        return self.spectrogram.n_mels, self.spectrogram.n_frames

    @property
    def grid_size(self) -> tuple[int, int]:
        """(Gf, Gt) patches along frequency and time."""
        stride = self.patch_size if self.patch_stride is None else self.patch_stride
        return patch_grid(self.spectrogram_size, self.patch_size, stride)[0]  # type: ignore[arg-type]

    @property
    def num_patches(self) -> int:
        """N = Gf * Gt tokens besides [CLS]."""
        return math.prod(self.grid_size)


class SpeechTransformer(nn.Module):
    """Waveforms (B, samples) -> class logits (B, num_classes)."""

    def __init__(self, cfg: SpeechConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dim = cfg.transformer.dim
        self.front_end = SpeechFrontEnd(cfg.spectrogram, cfg.spec_augment)
        self.tokenizer = SpectrogramTokenizer(cfg.spectrogram_size, cfg.patch_size, cfg.patch_stride, dim)
        self.encoder = Encoder(cfg.transformer)
        self.head = Linear(dim, cfg.num_classes)
        init_weights(self.encoder, cfg.transformer.n_layers)
        init_weights(self.head, cfg.transformer.n_layers)

    def spectrogram(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, F, T) log-mel features; SpecAugment-masked in training mode."""
        return self.front_end(waves)

    def forward_features(self, spec: Tensor, *, maps: AttentionMaps | None = None) -> Tensor:
        """Contextual tokens after the final norm.

        Args:
            spec: (B, F, T) log-mel spectrogram from ``spectrogram``.
            maps: if given, each layer's (B, H, 1+N, 1+N) attention probabilities are appended.

        Returns:
            (B, 1 + N, D), [CLS] first. No mask: every token may attend to every token.
        """
        return self.encoder(self.tokenizer(spec), maps=maps)

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, 1 + N, D) features -> (B, num_classes) logits."""
        pooled = features[:, 0] if self.cfg.pool == "cls" else features[:, 1:].mean(dim=1)
        return self.head(pooled)

    def forward(self, waves: Tensor) -> Tensor:
        """(B, samples) waveforms -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(self.spectrogram(waves)))

    def no_weight_decay(self) -> set[str]:
        """Parameters kept out of weight decay besides norms and biases: [CLS] and positions."""
        return {"tokenizer.cls_token", "tokenizer.pos_embed"}

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
