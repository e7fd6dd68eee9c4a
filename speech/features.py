"""Log-mel spectrogram front end: waveform (B, T) -> features (B, n_mels, frames).

The speech transformer reads the spectrogram as a (1, n_mels, frames) image and cuts it into patches
(``anyformer.speech.speech``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torchaudio.transforms as AT
from torch import nn


@dataclass
class SpectrogramConfig:
    """How a waveform becomes a log-mel spectrogram."""

    sample_rate: int = 8000
    """Waveform sample rate in Hz."""
    n_fft: int = 256
    """FFT size and Hann window length, in samples (32 ms at 8 kHz)."""
    hop_length: int = 80
    """Samples between frames (10 ms at 8 kHz)."""
    n_mels: int = 64
    """Mel bands: the feature size of each frame."""
    f_min: float = 0.0
    """Lowest mel filter edge in Hz."""
    f_max: float | None = None
    """Highest mel filter edge in Hz; None means the Nyquist frequency."""
    duration_s: float = 1.0
    """Clip length in seconds; every clip is cropped or padded to it."""
    log_eps: float = 1e-6
    """Added to mel energies before the log, so silence stays finite."""
    normalize: bool = False
    """Standardize features with ``mean`` and ``std`` (see ``fit_normalization``)."""
    mean: float = 0.0
    """Mean of the log-mel features over the training set."""
    std: float = 1.0
    """Standard deviation of the log-mel features over the training set."""

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels", "duration_s", "log_eps", "std"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SpectrogramConfig.{name} must be > 0, got {getattr(self, name)!r}")
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= nyquist:
            raise ValueError(
                f"SpectrogramConfig needs 0 <= f_min < f_max <= sample_rate / 2 = {nyquist}, "
                f"got f_min={self.f_min!r}, f_max={self.f_max!r}"
            )

    @property
    def n_samples(self) -> int:
        """Samples per clip."""
        return round(self.duration_s * self.sample_rate)

    @property
    def n_frames(self) -> int:
        """Frames per clip: frames are centred on multiples of ``hop_length``."""
        return 1 + self.n_samples // self.hop_length


class LogMelSpectrogram(nn.Module):
    """Natural log of a power mel spectrogram, optionally standardized.

    Hann window of ``n_fft`` samples, centred frames with reflect padding, HTK mel scale,
    unnormalized triangular filters (torchaudio's ``MelSpectrogram`` defaults).
    """

    def __init__(self, config: SpectrogramConfig) -> None:
        super().__init__()
        self.config = config
        self.mel = AT.MelSpectrogram(
            sample_rate=config.sample_rate,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            f_min=config.f_min,
            f_max=config.f_max,
            n_mels=config.n_mels,
            power=2.0,
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute features.

        Args:
            wave: Waveform (B, T) or (T,).

        Returns:
            Log-mel features (B, n_mels, frames) or (n_mels, frames), float32, with
            frames = 1 + T // hop_length.
        """
        # Mel energies of quiet bands are far below bf16/fp16 resolution, so stay in float32.
        spec = self.mel(wave.float())  # (B, n_mels, frames)
        spec = torch.log(spec + self.config.log_eps)
        if self.config.normalize:
            spec = (spec - self.config.mean) / self.config.std
        return spec


@torch.no_grad()
def fit_normalization(config: SpectrogramConfig, waves: torch.Tensor, batch_size: int = 256) -> SpectrogramConfig:
    """Measure the mean and std of the log-mel features of a set of clips.

    Args:
        config: Front end to measure; its own normalization settings are ignored.
        waves: Training clips (N, T), already fitted to the clip length.
        batch_size: Clips per feature computation, to bound memory.

    Returns:
        A copy of ``config`` with ``normalize=True`` and the measured ``mean`` and ``std``.
    """
    if waves.ndim != 2 or waves.shape[0] == 0:
        raise ValueError(f"fit_normalization expects waves of shape (N, T) with N > 0, got {tuple(waves.shape)}")
    front_end = LogMelSpectrogram(dataclasses.replace(config, normalize=False))
    total = total_sq = 0.0
    count = 0
    for batch in waves.split(batch_size):
        spec = front_end(batch).double()
        total += spec.sum().item()
        total_sq += spec.square().sum().item()
        count += spec.numel()
    mean = total / count
    std = max(total_sq / count - mean**2, 0.0) ** 0.5
    # A constant input (all silence) has std 0; keep the transform invertible.
    return dataclasses.replace(config, normalize=True, mean=mean, std=std if std > 0 else 1.0)
