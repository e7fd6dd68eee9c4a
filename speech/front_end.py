"""The input stage every speech model shares: waveform clips -> log-mel spectrogram -> SpecAugment.

It lives in the model, so a checkpoint carries the spectrogram settings (and the normalization
measured on the training set) and inference needs nothing but audio files.
"""

from __future__ import annotations

import torch
from torch import Tensor

from anyformer.speech.augment import SpecAugment, SpecAugmentConfig
from anyformer.speech.features import LogMelSpectrogram, SpectrogramConfig


class SpeechFrontEnd(LogMelSpectrogram):
    """(B, samples) waveforms of the configured clip length -> (B, F, T) log-mel features,
    SpecAugment-masked in training mode (the identity after ``.eval()``).

    A ``LogMelSpectrogram`` subclass rather than a wrapper so the weights' names
    (``front_end.mel.*``) stay those of checkpoints written before it existed.
    """

    def __init__(self, spectrogram: SpectrogramConfig, spec_augment: SpecAugmentConfig) -> None:
        super().__init__(spectrogram)
        self.spec_augment = SpecAugment(spec_augment)

    def forward(self, waves: Tensor) -> Tensor:
        n_samples = self.config.n_samples
        if waves.ndim != 2 or waves.shape[1] != n_samples:
            raise ValueError(
                f"expected waveforms of shape (B, {n_samples}) ({self.config.duration_s} s at "
                f"{self.config.sample_rate} Hz; see anyformer.speech.audio.fit_duration), got {tuple(waves.shape)}"
            )
        # A NaN/inf sample gives a NaN spectrogram and silently NaN logits; only bad input has one.
        # Skipped while compiling or exporting (a data-dependent branch stops torch.export).
        if not torch.compiler.is_compiling() and not torch.isfinite(waves).all():
            bad = int((~torch.isfinite(waves)).any(1).sum())
            raise ValueError(f"{bad} of {waves.shape[0]} waveforms hold NaN or infinite samples; expected finite audio")
        return self.spec_augment(super().forward(waves))
