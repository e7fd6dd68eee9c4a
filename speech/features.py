"""Log-mel spectrogram front end: waveform (B, T) -> features (B, n_features, frames).

    mel power -> log (or PCEN) -> cepstra (optional: MFCC) -> per-utterance mean/variance normalisation (optional)
    -> deltas stacked under the static bands (optional) -> standardisation with training-set statistics

The speech transformer reads the features as a (1, n_features, frames) image and cuts it into patches
(``anyformer.speech.speech``). ``n_features = (n_cepstra or n_mels) * (1 + deltas)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT
from torch import nn

COMPRESSIONS = ("log", "pcen")
UTTERANCE_NORMS = ("none", "cmvn")
CROPS = ("center", "energy")


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
    compression: str = "log"
    """``log`` (log mel power) or ``pcen`` (per-channel energy normalisation, Wang et al. 2017)."""
    utterance_norm: str = "none"
    """``cmvn``: each band standardised over the frames of its own clip (cepstral mean and variance
    normalisation, on log-mel bands); ``none``."""
    deltas: int = 0
    """Orders of delta features stacked under the static bands (0, 1 or 2; torchaudio's ``compute_deltas``)."""
    crop: str = "center"
    """How a clip is placed in the window: ``center`` (middle of the clip), ``energy`` (the window
    centred on the clip's energy centroid: the word, not the silence around it)."""
    pcen_time_constant_s: float = 0.4
    """PCEN's smoother time constant, in seconds (librosa's default)."""
    n_cepstra: int = 0
    """0: the features are the (log) mel bands. > 0: the first ``n_cepstra`` coefficients of their
    orthonormal DCT-II, the mel-frequency cepstrum (MFCC, as torchaudio's ``MFCC`` with
    ``log_mels=True``): the low coefficients keep the spectral envelope (the vocal tract shaping the
    word) and drop the fine structure of the voice's pitch harmonics, which differ between speakers."""

    def __post_init__(self) -> None:
        for name, allowed in (("compression", COMPRESSIONS), ("utterance_norm", UTTERANCE_NORMS), ("crop", CROPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"SpectrogramConfig.{name}={getattr(self, name)!r} is not one of {list(allowed)}")
        if not 0 <= self.n_cepstra <= self.n_mels:
            raise ValueError(
                f"SpectrogramConfig.n_cepstra must be in [0, n_mels={self.n_mels}], got {self.n_cepstra!r}"
            )
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"SpectrogramConfig.deltas must be 0, 1 or 2, got {self.deltas!r}")
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
    def n_features(self) -> int:
        """Rows of the feature image: the mel bands (or cepstra), then the same count per delta order."""
        return (self.n_cepstra or self.n_mels) * (1 + self.deltas)

    @property
    def n_frames(self) -> int:
        """Frames per clip: frames are centred on multiples of ``hop_length``."""
        return 1 + self.n_samples // self.hop_length


def pcen(
    energy: torch.Tensor, smooth: float, alpha: float = 0.98, delta: float = 2.0, r: float = 0.5, eps: float = 1e-6
) -> torch.Tensor:
    """Per-channel energy normalisation (Wang et al. 2017; librosa's defaults).

    ``M[t] = (1 - s) M[t-1] + s E[t]`` (a one-pole low-pass along time, torchaudio's ``lfilter``,
    started in its steady state for ``E[0]``), then ``(E / (eps + M)^alpha + delta)^r - delta^r``.

    Args:
        energy: Non-negative filterbank energies (..., n_mels, frames).
        smooth: The smoother's coefficient ``s`` in (0, 1].

    Returns:
        PCEN features, same shape.
    """
    first = energy[..., :1]
    # The filter has unit gain at DC, so filtering E - E[0] and adding E[0] back is the same filter
    # with its state initialised to a constant E[0] input (librosa's lfilter_zi start).
    smoothed = (
        AF.lfilter(
            energy - first,
            torch.tensor([1.0, -(1.0 - smooth)], dtype=energy.dtype, device=energy.device),
            torch.tensor([smooth, 0.0], dtype=energy.dtype, device=energy.device),
            clamp=False,
        )
        + first
    )
    return (energy / (eps + smoothed) ** alpha + delta) ** r - delta**r


def pcen_smooth(time_constant_s: float, sample_rate: int, hop_length: int) -> float:
    """The PCEN smoother coefficient for a time constant (librosa's formula)."""
    frames = time_constant_s * sample_rate / hop_length
    return ((1 + 4 * frames**2) ** 0.5 - 1) / (2 * frames**2)


def utterance_cmvn(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each band standardised over its own frames: (x - mean_t) / std_t, per clip (..., n_bands, frames)."""
    mean = features.mean(dim=-1, keepdim=True)
    std = features.std(dim=-1, unbiased=False, keepdim=True)
    return (features - mean) / (std + eps)


class LogMelSpectrogram(nn.Module):
    """Natural log (or PCEN) of a power mel spectrogram, then the optional normalisations and deltas.

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
        # (n_mels, n_cepstra): features (..., n_mels, frames) -> cepstra by dct.T @ features.
        dct = AF.create_dct(config.n_cepstra, config.n_mels, norm="ortho") if config.n_cepstra else None
        self.register_buffer("dct", dct, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute features.

        Args:
            wave: Waveform (B, T) or (T,).

        Returns:
            Features (B, n_features, frames) or (n_features, frames), float32, with
            frames = 1 + T // hop_length.
        """
        cfg = self.config
        # Mel energies of quiet bands are far below bf16/fp16 resolution, so stay in float32.
        spec = self.mel(wave.float())  # (B, n_mels, frames)
        if cfg.compression == "pcen":
            # PCEN expects magnitudes on an integer-audio scale (librosa: S * 2**31 for float audio).
            smooth = pcen_smooth(cfg.pcen_time_constant_s, cfg.sample_rate, cfg.hop_length)
            spec = pcen(spec.sqrt() * 2**31, smooth)
        else:
            spec = torch.log(spec + cfg.log_eps)
        if self.dct is not None:
            spec = (spec.transpose(-1, -2) @ self.dct).transpose(-1, -2)  # (B, n_cepstra, frames)
        if cfg.utterance_norm == "cmvn":
            spec = utterance_cmvn(spec)
        if cfg.deltas:
            orders = [spec]
            for _ in range(cfg.deltas):
                orders.append(AF.compute_deltas(orders[-1]))
            spec = torch.cat(orders, dim=-2)  # (B, n_mels * (1 + deltas), frames)
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
