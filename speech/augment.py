"""Training-time augmentation of voices (speed, pitch, VTLP), waveforms (time shift, gain,
reverberation, white or coloured noise) and spectrograms (SpecAugment).

All modules behave like dropout: they act in training mode and are the identity after
``.eval()``. Waveform randomness comes from an explicit ``torch.Generator`` when one is given.
The signal processing is torchaudio's (``speed``, ``phase_vocoder``, ``resample``, ``gain``,
``fftconvolve``, ``add_noise``) and torch's STFT.
torchaudio's masking transforms take no generator, so SpecAugment draws from torch's global
generator (seeded by ``lightning.seed_everything``).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
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
    noise_beta_max: float = 0.0
    """Noise colour: the spectrum falls as 1/f^beta, beta drawn in [0, this] (0 = white only, 2 = up to brown)."""
    gain_db: float = 0.0
    """Largest gain change in dB, either direction (0 = off)."""
    reverb_p: float = 0.0
    """Probability that a clip is convolved with a simulated room impulse response."""
    rt60_min_s: float = 0.1
    """Shortest reverberation time of the simulated rooms, in seconds."""
    rt60_max_s: float = 0.6
    """Longest reverberation time of the simulated rooms, in seconds."""

    def __post_init__(self) -> None:
        if self.max_shift_s < 0:
            raise ValueError(f"WaveAugmentConfig.max_shift_s must be >= 0, got {self.max_shift_s!r}")
        if not 0 <= self.noise_p <= 1:
            raise ValueError(f"WaveAugmentConfig.noise_p must be in [0, 1], got {self.noise_p!r}")
        if self.snr_db_min > self.snr_db_max:
            raise ValueError(
                f"WaveAugmentConfig needs snr_db_min <= snr_db_max, got {self.snr_db_min!r} > {self.snr_db_max!r}"
            )
        if self.noise_beta_max < 0 or self.gain_db < 0:
            raise ValueError("WaveAugmentConfig.noise_beta_max and gain_db must be >= 0")
        if not 0 <= self.reverb_p <= 1:
            raise ValueError(f"WaveAugmentConfig.reverb_p must be in [0, 1], got {self.reverb_p!r}")
        if not 0 < self.rt60_min_s <= self.rt60_max_s:
            raise ValueError(
                f"WaveAugmentConfig needs 0 < rt60_min_s <= rt60_max_s, got {self.rt60_min_s!r}, {self.rt60_max_s!r}"
            )


class WaveAugment(nn.Module):
    """Random time shift, gain, room reverberation, then white or coloured noise at a random SNR, per waveform.

    Gain, reverberation and colour draw from the generator only when they are switched on, so a
    config without them replays the random stream of the time-shift-and-noise recipe exactly.
    """

    def __init__(self, config: WaveAugmentConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = sample_rate
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
        if cfg.gain_db > 0:
            wave = wave * 10 ** (uniform(-cfg.gain_db, cfg.gain_db)[..., None] / 20)  # AF.gain's formula, per clip
        if cfg.reverb_p > 0:
            chosen, rt60_s = uniform(0.0, 1.0) < cfg.reverb_p, uniform(cfg.rt60_min_s, cfg.rt60_max_s)
            wave = self._reverberate(wave, chosen, rt60_s, generator)
        noisy = uniform(0.0, 1.0) < cfg.noise_p
        snr_db = uniform(cfg.snr_db_min, cfg.snr_db_max)
        if cfg.noise_beta_max > 0:
            betas = uniform(0.0, cfg.noise_beta_max).reshape(-1).tolist()
            noise = torch.stack([colored_noise(wave.shape[-1], b, generator) for b in betas]).reshape(wave.shape)
            mixed = AF.add_noise(wave, noise.to(wave), snr_db)
            # AF.add_noise divides by the signal's energy: a silent clip stays silent, as with add_noise.
            mixed = torch.where(wave.square().sum(-1, keepdim=True) > 0, mixed, wave)
            return torch.where(noisy[..., None], mixed, wave)
        return torch.where(noisy[..., None], add_noise(wave, snr_db, generator), wave)

    def _reverberate(
        self, wave: torch.Tensor, chosen: torch.Tensor, rt60_s: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Convolve the ``chosen`` clips with a simulated room; each keeps its length and RMS."""
        rows = wave.reshape(-1, wave.shape[-1])
        out = []
        for row, on, rt60 in zip(rows, chosen.reshape(-1).tolist(), rt60_s.reshape(-1).tolist()):
            if not on:
                out.append(row)
                continue
            rir = room_impulse_response(self.sample_rate, rt60, generator).to(row)
            wet = AF.fftconvolve(row, rir)[: row.shape[-1]]
            scale = row.square().mean().sqrt() / wet.square().mean().sqrt().clamp_min(1e-12)
            out.append(wet * scale)
        return torch.stack(out).reshape(wave.shape)


@dataclass
class VoiceAugmentConfig:
    """Perturbations that change the voice of a whole clip, before it is cropped (all off by default)."""

    speed: float = 0.0
    """Largest relative speed change: factors drawn in [1 - speed, 1 + speed], in steps of 0.01 (0 = off)."""
    speed_p: float = 1.0
    """Probability that a clip's speed changes (when ``speed`` > 0)."""
    pitch: float = 0.0
    """Largest relative frequency change of the pitch shift (duration kept), in steps of 1/40 (0 = off)."""
    pitch_p: float = 0.5
    """Probability that a clip's pitch is shifted (when ``pitch`` > 0)."""
    vtlp: float = 0.0
    """Largest deviation of the VTLP warp factor from 1 (Jaitly & Hinton use 0.1; 0 = off)."""
    vtlp_p: float = 0.5
    """Probability that a clip is warped (when ``vtlp`` > 0)."""

    def __post_init__(self) -> None:
        for name in ("speed", "pitch", "vtlp"):
            if not 0 <= getattr(self, name) < 0.5:
                raise ValueError(f"VoiceAugmentConfig.{name} must be in [0, 0.5), got {getattr(self, name)!r}")
            if not 0 <= getattr(self, f"{name}_p") <= 1:
                raise ValueError(f"VoiceAugmentConfig.{name}_p must be in [0, 1], got {getattr(self, f'{name}_p')!r}")

    @property
    def active(self) -> bool:
        """Whether any perturbation is switched on."""
        return self.speed > 0 or self.pitch > 0 or self.vtlp > 0


class VoiceAugment(nn.Module):
    """Speed perturbation, then pitch shift, then VTLP, each with its own probability, per clip (T,).

    The speed change alters the length; the crop to the model's window comes after.
    """

    def __init__(self, config: VoiceAugmentConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.sample_rate = sample_rate

    def forward(self, wave: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Perturb one clip.

        Args:
            wave: Waveform (T,).
            generator: Source of randomness; torch's global generator when None.

        Returns:
            Waveform (T',): T' = T unless the speed changed.
        """
        if not self.training:
            return wave
        cfg = self.config

        def draw(width: float, p: float, step: float) -> float:
            # Two draws whether or not the perturbation applies, so the stream does not depend on the data.
            apply, u = torch.rand(2, generator=generator).tolist()
            return round((1 + width * (2 * u - 1)) / step) * step if apply < p else 1.0

        if cfg.speed > 0:
            wave = speed_perturb(wave, self.sample_rate, draw(cfg.speed, cfg.speed_p, 0.01))
        if cfg.pitch > 0:
            wave = pitch_shift(wave, self.sample_rate, draw(cfg.pitch, cfg.pitch_p, 1 / 40))
        if cfg.vtlp > 0:
            wave = vtlp(wave, self.sample_rate, draw(cfg.vtlp, cfg.vtlp_p, 0.01))
        return wave


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


# ---------------------------------------------------------------------------------------------
# Voice perturbations (speed, pitch, VTLP) act on a whole clip before it is cropped to the window;
# channel perturbations (gain, reverberation, coloured noise) act on the cropped window. Each draws
# only from the generator it is handed, so a data loader seeded per (seed, epoch, worker) replays them.


def speed_perturb(wave: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Play a clip ``factor`` times faster (Ko et al. 2015): tempo and every frequency scale together.

    As torchaudio's ``speed``: a resampling from ``factor * sample_rate`` to ``sample_rate``, with the
    first rate rounded (``speed`` truncates it, so 0.57 * 8000 becomes 4559 Hz, coprime with 8000).
    ``factor`` should be a multiple of 0.01 so the two rates share a large divisor (a cheap filter).

    Args:
        wave: Waveform (T,).
        sample_rate: Its rate, in Hz.
        factor: Speed-up (> 1 shortens the clip and raises every frequency).

    Returns:
        Waveform (round(T / factor),).
    """
    if factor == 1.0:
        return wave
    return _resampler(round(factor * sample_rate), sample_rate)(wave)


def pitch_shift(wave: torch.Tensor, sample_rate: int, factor: float, n_fft: int = 256) -> torch.Tensor:
    """Scale every frequency by ``factor`` and keep the duration (``torchaudio.functional.pitch_shift``'s method).

    The clip is stretched to ``factor`` times its length by torchaudio's phase vocoder, then
    resampled back by the same factor. Formants move with the pitch, so this is also the linear
    form of vocal-tract-length perturbation. torchaudio's own ``pitch_shift`` takes semitones and
    resamples between rates that are often coprime (seconds per clip); here ``factor`` is snapped to
    a multiple of 1/40, so both rates are multiples of ``sample_rate / 40``.

    Args:
        wave: Waveform (T,).
        sample_rate: Its rate, in Hz.
        factor: Frequency multiplier (> 1 raises the voice).
        n_fft: STFT size of the phase vocoder.

    Returns:
        Waveform (T,).
    """
    factor = round(factor * 40) / 40
    if factor == 1.0 or wave.shape[-1] <= n_fft:  # a clip shorter than one STFT window is left as it is
        return wave
    length = wave.shape[-1]
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # (n_fft // 2 + 1, frames)
    phase_advance = torch.linspace(0, torch.pi * hop, spec.shape[-2], device=wave.device)[..., None]
    stretched = AF.phase_vocoder(spec, 1 / factor, phase_advance)  # factor x the frames
    long = torch.istft(stretched, n_fft, hop, window=window, length=round(length * factor))
    out = _resampler(round(sample_rate * factor), sample_rate)(long)
    return _fit_length(out, length)


@functools.lru_cache(maxsize=256)
def _resampler(orig_freq: int, new_freq: int) -> AT.Resample:
    """torchaudio's resampler between two rates, its filter built once (``AF.resample`` rebuilds it per call)."""
    return AT.Resample(orig_freq, new_freq)


def _fit_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """``wave`` cut or zero-padded at its end to ``length`` samples (resampling rounds the length)."""
    if wave.shape[-1] >= length:
        return wave[..., :length]
    return torch.nn.functional.pad(wave, (0, length - wave.shape[-1]))


def vtlp_warp(freqs: torch.Tensor, alpha: float, nyquist: float, boundary: float) -> torch.Tensor:
    """Vocal-tract-length warp of frequencies (Jaitly & Hinton 2013, eq. 1).

    ``f -> alpha * f`` up to ``boundary * min(alpha, 1) / alpha``, then a straight line to the
    Nyquist frequency, so the band edges stay where they are.

    Args:
        freqs: Frequencies in Hz, any shape, within [0, nyquist].
        alpha: Warp factor (> 1 moves formants up, as a shorter vocal tract does).
        nyquist: Half the sample rate, in Hz.
        boundary: Upper edge of the linear part, in Hz (before the ``min(alpha, 1) / alpha`` factor).

    Returns:
        Warped frequencies, same shape.
    """
    knee = boundary * min(alpha, 1.0) / alpha
    upper = nyquist - (nyquist - boundary * min(alpha, 1.0)) / (nyquist - knee) * (nyquist - freqs)
    return torch.where(freqs <= knee, alpha * freqs, upper)


def vtlp(wave: torch.Tensor, sample_rate: int, alpha: float, boundary: float = 0.8, n_fft: int = 256) -> torch.Tensor:
    """Apply the VTLP warp to a clip's short-time spectrum and resynthesize it.

    Each output bin at frequency f takes the magnitude of the input spectrum at ``warp^-1(f)``
    (linear interpolation between bins) and, as in a phase vocoder, the instantaneous frequency of
    the nearest input bin, warped, accumulated frame by frame into its phase; ``torch.istft``
    resynthesizes. The duration is unchanged.

    Args:
        wave: Waveform (T,).
        sample_rate: Its rate, in Hz.
        alpha: Warp factor.
        boundary: Upper edge of the linear part, as a fraction of the Nyquist frequency.
        n_fft: STFT size.

    Returns:
        Waveform (T,).
    """
    if alpha == 1.0 or wave.shape[-1] <= n_fft:  # a clip shorter than one STFT window is left as it is
        return wave
    nyquist = sample_rate / 2
    hop = n_fft // 4
    window = torch.hann_window(n_fft, device=wave.device)
    spec = torch.stft(wave, n_fft, hop, window=window, return_complex=True)  # (n_bins, frames)
    n_bins = spec.shape[0]
    freqs = torch.linspace(0, nyquist, n_bins, device=wave.device)
    # The warp is monotonic: invert it by interpolating the table of (f, warp(f)) the other way.
    warped = vtlp_warp(freqs, alpha, nyquist, boundary * nyquist)
    source = _interp(freqs, warped, freqs) / nyquist * (n_bins - 1)  # fractional input bin of each output bin
    low = source.floor().long().clamp(0, n_bins - 1)
    high = (low + 1).clamp(max=n_bins - 1)
    weight = (source - low)[:, None]
    magnitude = (1 - weight) * spec.abs()[low] + weight * spec.abs()[high]
    nearest = source.round().long().clamp(0, n_bins - 1)
    # Instantaneous frequency of each input bin and frame (Hz): the bin's centre plus the wrapped
    # deviation of its phase advance from the centre's.
    phase = spec.angle()  # (n_bins, frames)
    expected = 2 * torch.pi * freqs[:, None] / sample_rate * hop
    deviation = torch.remainder(phase.diff(dim=1) - expected + torch.pi, 2 * torch.pi) - torch.pi
    inst_hz = freqs[:, None] + deviation * sample_rate / (2 * torch.pi * hop)  # (n_bins, frames - 1)
    advance = 2 * torch.pi * vtlp_warp(inst_hz.clamp(0, nyquist), alpha, nyquist, boundary * nyquist)[nearest]
    advance = advance / sample_rate * hop
    out_phase = torch.cat([phase[nearest, :1], phase[nearest, :1] + advance.cumsum(dim=1)], dim=1)
    return torch.istft(torch.polar(magnitude, out_phase), n_fft, hop, window=window, length=wave.shape[-1])


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` for increasing ``xp``: piecewise-linear f(x) through the points (xp, fp)."""
    index = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[index - 1], xp[index], fp[index - 1], fp[index]
    return f0 + (f1 - f0) * (x - x0) / (x1 - x0)


def room_impulse_response(
    sample_rate: int, rt60_s: float, generator: torch.Generator | None = None, direct_to_reverb_db: float = 0.0
) -> torch.Tensor:
    """A simulated room impulse response: a direct path plus an exponentially decaying diffuse tail.

    The tail is Gaussian noise under the envelope ``exp(-3 ln(10) t / rt60)``, whose energy falls by
    60 dB in ``rt60_s`` seconds (Sabine's reverberation time; the statistical model of Polack 1988);
    it lasts ``rt60_s``.

    Args:
        sample_rate: Rate, in Hz.
        rt60_s: Reverberation time, in seconds.
        generator: Source of the tail's noise.
        direct_to_reverb_db: Energy of the direct path over that of the tail, in dB.

    Returns:
        Impulse response (round(rt60_s * sample_rate) + 1,), with the direct path at sample 0.
    """
    n = max(1, round(rt60_s * sample_rate))
    t = torch.arange(1, n + 1) / sample_rate
    tail = torch.randn(n, generator=generator) * torch.exp(-3 * math.log(10) * t / rt60_s)
    tail = tail / tail.norm().clamp_min(1e-12) * 10 ** (-direct_to_reverb_db / 20)
    return torch.cat([torch.ones(1), tail])


def colored_noise(length: int, beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise whose power spectrum falls as ``1 / f**beta`` (0 white, 1 pink, 2 brown), unit RMS."""
    spectrum = torch.fft.rfft(torch.randn(length, generator=generator))
    freqs = torch.fft.rfftfreq(length)
    spectrum = spectrum * freqs.clamp_min(freqs[1] if length > 1 else 1.0) ** (-beta / 2)
    noise = torch.fft.irfft(spectrum, n=length)
    return noise / noise.square().mean().sqrt().clamp_min(1e-12)
