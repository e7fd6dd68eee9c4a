"""Training-time augmentation of waveforms (noise, time shift) and spectrograms (SpecAugment).

Both modules behave like dropout: they act in training mode and are the identity after
``.eval()``. Waveform randomness comes from an explicit ``torch.Generator`` when one is given.
torchaudio's masking transforms take no generator, so SpecAugment draws from torch's global
generator (seeded by ``lightning.seed_everything``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchaudio.transforms as AT
from torch import nn


def add_noise(wave: torch.Tensor, snr_db: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add white Gaussian noise at a given signal-to-noise ratio.

    Args:
        wave: Waveform (..., T).
        snr_db: Signal-to-noise ratio in dB, broadcastable to ``wave.shape[:-1]``.
        generator: Source of the noise; torch's global generator when None.

    Returns:
        Noisy waveform (..., T). A silent clip stays silent (its signal power is 0).
    """
    signal_power = wave.square().mean(dim=-1, keepdim=True)  # (..., 1)
    noise_std = (signal_power / 10 ** (snr_db[..., None] / 10)).sqrt()
    noise = torch.randn(wave.shape, generator=generator, device=wave.device, dtype=wave.dtype)
    return wave + noise_std * noise


def time_shift(wave: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Delay (positive shift) or advance (negative) waveforms, filling with zeros.

    Unlike ``torch.roll`` nothing wraps around: the end of a word never reappears at the start.

    Args:
        wave: Waveform (..., T).
        shift: Integer shift in samples per waveform, shape ``wave.shape[:-1]``.

    Returns:
        Shifted waveform (..., T).
    """
    length = wave.shape[-1]
    source = torch.arange(length, device=wave.device) - shift[..., None]  # (..., T)
    inside = (source >= 0) & (source < length)
    return wave.gather(-1, source.clamp(0, length - 1)) * inside


@dataclass
class WaveAugmentConfig:
    """Random waveform perturbations applied to training clips."""

    max_shift_s: float = 0.1
    """Largest time shift in seconds, either direction."""
    noise_p: float = 0.5
    """Probability that a clip receives white noise."""
    snr_db_min: float = 10.0
    """Lowest signal-to-noise ratio of the added noise, in dB."""
    snr_db_max: float = 40.0
    """Highest signal-to-noise ratio of the added noise, in dB."""

    def __post_init__(self) -> None:
        if self.max_shift_s < 0:
            raise ValueError(f"WaveAugmentConfig.max_shift_s must be >= 0, got {self.max_shift_s!r}")
        if not 0 <= self.noise_p <= 1:
            raise ValueError(f"WaveAugmentConfig.noise_p must be in [0, 1], got {self.noise_p!r}")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(
                f"WaveAugmentConfig needs snr_db_min <= snr_db_max, got {self.snr_db_min!r} > {self.snr_db_max!r}"
            )


class WaveAugment(nn.Module):
    """Random time shift, then white noise at a random SNR, per waveform."""

    def __init__(self, config: WaveAugmentConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.max_shift = round(config.max_shift_s * sample_rate)

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment waveforms.

        Args:
            wave: Waveform (B, T) or (T,).
            generator: Source of randomness; torch's global generator when None.

        Returns:
            Augmented waveform, same shape.
        """
        if not self.training:
            return wave
        batch_shape = wave.shape[:-1]
        cfg = self.config

        def uniform(low: float, high: float) -> torch.Tensor:
            sample = torch.rand(batch_shape, generator=generator, device=wave.device)
            return low + (high - low) * sample

        shift = torch.randint(-self.max_shift, self.max_shift + 1, batch_shape, generator=generator, device=wave.device)
        wave = time_shift(wave, shift)
        noisy = uniform(0.0, 1.0) < cfg.noise_p
        snr_db = uniform(cfg.snr_db_min, cfg.snr_db_max)
        return torch.where(noisy[..., None], add_noise(wave, snr_db, generator), wave)


@dataclass
class SpecAugmentConfig:
    """SpecAugment masking (Park et al., 2019) without time warping."""

    n_freq_masks: int = 2
    """Frequency masks per spectrogram."""
    freq_mask_param: int = 8
    """Widest frequency mask, in mel bands."""
    n_time_masks: int = 2
    """Time masks per spectrogram."""
    time_mask_param: int = 10
    """Longest time mask, in frames."""

    def __post_init__(self) -> None:
        for name in ("n_freq_masks", "freq_mask_param", "n_time_masks", "time_mask_param"):
            if getattr(self, name) < 0:
                raise ValueError(f"SpecAugmentConfig.{name} must be >= 0, got {getattr(self, name)!r}")


class SpecAugment(nn.Module):
    """Frequency and time masking with a separate random mask for every spectrogram."""

    def __init__(self, config: SpecAugmentConfig) -> None:
        super().__init__()
        self.config = config
        freq = [AT.FrequencyMasking(config.freq_mask_param, iid_masks=True) for _ in range(config.n_freq_masks)]
        time = [AT.TimeMasking(config.time_mask_param, iid_masks=True) for _ in range(config.n_time_masks)]
        self.masks = nn.ModuleList(freq + time)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """Mask spectrograms.

        Args:
            spec: Spectrogram (B, n_mels, frames) or (n_mels, frames).

        Returns:
            Masked spectrogram, same shape. Masked cells take the batch mean, which is 0 for a
            normalized spectrogram and a neutral level otherwise.
        """
        if not self.training or len(self.masks) == 0:
            return spec
        batched = spec if spec.ndim == 3 else spec.unsqueeze(0)  # (B, n_mels, frames)
        # A 0-dim tensor mask value keeps the masking free of host-device syncs.
        fill = batched.mean().detach()
        for mask in self.masks:
            batched = mask(batched, fill)
        return batched if spec.ndim == 3 else batched.squeeze(0)
