"""Reading audio files into mono float waveforms at the model's sample rate.

Audio is read with ``soundfile`` (libsndfile): ``torchaudio.load`` needs ``torchcodec`` since
torchaudio 2.9, which this project does not install.
"""

from __future__ import annotations

import numbers
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.functional as AF

from anyformer.core.cli.errors import UsageError

FIT_MODES = ("center", "random", "energy")
ENERGY_FRAME = 80
"""Samples per frame of the energy centroid (10 ms at 8 kHz)."""


class AudioError(UsageError):
    """A file that cannot be used as an audio clip; the message names the file."""


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """Read an audio file as a mono waveform at ``sample_rate``.

    Channels are averaged to mono and the signal is resampled when the file's rate differs.

    Args:
        path: Any format libsndfile reads (wav, flac, ogg, ...).
        sample_rate: Rate of the returned waveform, in Hz.

    Returns:
        Waveform of shape (T,), float32, nominally in [-1, 1].

    Raises:
        AudioError: The file is missing, is not audio, is corrupt, holds no samples, or holds
            NaN/inf samples.
        ValueError: ``sample_rate`` is not a positive whole number of Hz.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Integral) or sample_rate <= 0:
        raise ValueError(f"load_audio sample_rate must be a positive int (Hz), got {sample_rate!r}")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty (0 bytes); expected audio")
    try:
        data, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (T, channels)
    except sf.SoundFileError as error:
        raise AudioError(
            f"{path}: not readable as audio; expected WAV, FLAC, OGG or another format libsndfile reads ({error})"
        ) from error
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio samples; expected at least one")
    wave = torch.from_numpy(data).mean(dim=1)  # (T,)
    if not torch.isfinite(wave).all():
        raise AudioError(f"{path}: the file holds NaN or infinite samples; expected finite audio")
    if file_rate != sample_rate:
        wave = AF.resample(wave, orig_freq=file_rate, new_freq=sample_rate)
    return wave.contiguous()


def fit_duration(
    wave: torch.Tensor,
    n_samples: int,
    mode: str = "center",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Crop or zero-pad a waveform to exactly ``n_samples``.

    Args:
        wave: Waveform of shape (T,).
        n_samples: Length of the result.
        mode: ``center`` keeps the middle of a long clip and centres a short one; ``random``
            picks the crop start or the padding offset uniformly (training-time jitter);
            ``energy`` centres the window on the clip's energy centroid (the word rather than
            the silence around it), as far as the clip's ends allow.
        generator: Source of randomness for ``random``; torch's global generator when None.

    Returns:
        Waveform of shape (n_samples,).
    """
    if mode not in FIT_MODES:
        raise ValueError(f"fit_duration mode={mode!r} is not one of {list(FIT_MODES)}")
    if n_samples <= 0:
        raise ValueError(f"fit_duration n_samples must be > 0, got {n_samples}")
    length = wave.shape[-1]
    slack = abs(length - n_samples)
    if mode == "center":
        offset = slack // 2
    elif mode == "energy":
        offset = _energy_offset(wave, n_samples)
    else:
        offset = int(torch.randint(0, slack + 1, (), generator=generator))
    if length >= n_samples:
        return wave[offset : offset + n_samples]
    return torch.nn.functional.pad(wave, (offset, slack - offset))


def energy_centroid(wave: torch.Tensor, frame: int = ENERGY_FRAME) -> float:
    """The sample at the centre of a clip's energy: sum(t * e_t) / sum(e_t) over frames of ``frame`` samples.

    A silent clip's centroid is its middle.
    """
    length = wave.shape[-1]
    padded = torch.nn.functional.pad(wave, (0, -length % frame))
    energy = padded.reshape(-1, frame).double().square().sum(-1)  # (frames,)
    total = float(energy.sum())
    if total == 0:
        return (length - 1) / 2
    centres = torch.arange(len(energy), dtype=torch.float64) * frame + (frame - 1) / 2
    return min(float((centres * energy).sum()) / total, length - 1)


def _energy_offset(wave: torch.Tensor, n_samples: int) -> int:
    """Crop start (long clip) or left padding (short clip) that puts the energy centroid mid-window."""
    length = wave.shape[-1]
    centroid = energy_centroid(wave)
    if length >= n_samples:
        return int(min(max(round(centroid - n_samples / 2), 0), length - n_samples))
    return int(min(max(round(n_samples / 2 - centroid), 0), n_samples - length))
