import dataclasses
import math

import pytest
import torch
import torchaudio.functional as AF

from anyformer.speech.features import LogMelSpectrogram, SpectrogramConfig, fit_normalization


def chirps_with_noise(batch: int, n_samples: int, rate: int) -> torch.Tensor:
    """Chirps plus noise, different per example.

    The noise keeps every mel band well above float32 FFT rounding: a band 60 dB below the
    loudest one carries ~1e-4 of log error in float32 alone.
    """
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(n_samples, dtype=torch.float64) / rate
    chirps = [torch.sin(2 * math.pi * (100 * (b + 1) + 1500 * t) * t) for b in range(batch)]
    noise = 0.1 * torch.randn(batch, n_samples, generator=generator, dtype=torch.float64)
    return (0.5 * torch.stack(chirps) + noise).float()  # (B, T)


def reference_log_mel(wave: torch.Tensor, config: SpectrogramConfig) -> torch.Tensor:
    """torch.stft + torchaudio's mel filter bank + log, in float64."""
    window = torch.hann_window(config.n_fft, dtype=torch.float64)
    stft = torch.stft(
        wave.double(),
        config.n_fft,
        hop_length=config.hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )  # (B, n_fft // 2 + 1, frames)
    power = stft.abs() ** 2
    banks = AF.melscale_fbanks(
        n_freqs=config.n_fft // 2 + 1,
        f_min=config.f_min,
        f_max=config.f_max or config.sample_rate / 2,
        n_mels=config.n_mels,
        sample_rate=config.sample_rate,
        norm=None,
        mel_scale="htk",
    ).double()  # (n_freqs, n_mels)
    mel = torch.einsum("bft,fm->bmt", power, banks)
    return torch.log(mel + config.log_eps)


@pytest.mark.parametrize(
    "config",
    [
        SpectrogramConfig(),
        SpectrogramConfig(sample_rate=16000, n_fft=400, hop_length=160, n_mels=40, f_min=50.0, f_max=7000.0),
    ],
)
def test_log_mel_matches_an_independent_computation(config):
    wave = chirps_with_noise(3, config.n_samples, config.sample_rate)
    features = LogMelSpectrogram(config)(wave)
    assert features.shape == (3, config.n_mels, config.n_frames)
    reference = reference_log_mel(wave, config)
    assert reference.shape == features.shape
    torch.testing.assert_close(features.double(), reference, atol=1e-4, rtol=0)


def test_unbatched_input_gives_the_batched_result():
    config = SpectrogramConfig()
    front_end = LogMelSpectrogram(config)
    wave = chirps_with_noise(2, config.n_samples, config.sample_rate)
    single = front_end(wave[1])
    assert single.shape == (config.n_mels, config.n_frames)
    torch.testing.assert_close(single, front_end(wave)[1])


def test_normalization_standardizes_the_measured_clips():
    config = SpectrogramConfig()
    wave = chirps_with_noise(4, config.n_samples, config.sample_rate)
    wave[3] = 0  # a silent clip in the set must not break the statistics
    fitted = fit_normalization(config, wave, batch_size=3)
    assert fitted.normalize and not config.normalize
    raw = LogMelSpectrogram(config)(wave)
    assert fitted.mean == pytest.approx(raw.double().mean().item(), rel=1e-6)
    assert fitted.std == pytest.approx(raw.double().std(unbiased=False).item(), rel=1e-5)
    normalized = LogMelSpectrogram(fitted)(wave)
    assert normalized.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert normalized.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)

    silent = fit_normalization(config, torch.zeros(2, config.n_samples))
    assert silent.std == 1.0 and math.isfinite(silent.mean)


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="n_mels"):
        SpectrogramConfig(n_mels=0)
    with pytest.raises(ValueError, match="f_max"):
        SpectrogramConfig(f_max=5000.0)  # above the 4 kHz Nyquist of 8 kHz audio
    config = SpectrogramConfig(duration_s=0.5)
    assert (config.n_samples, config.n_frames) == (4000, 51)
    assert dataclasses.replace(config, hop_length=100).n_frames == 41
