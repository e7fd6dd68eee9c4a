import math

import numpy as np
import pytest
import soundfile as sf
import torch

from anyformer.speech.audio import AudioError, fit_duration, load_audio
from anyformer.speech.features import LogMelSpectrogram, SpectrogramConfig

RATE = 8000


def sine(seconds: float, freq: float, rate: int = RATE, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * math.pi * freq * t)).astype(np.float32)


def write(path, data, rate=RATE, subtype="PCM_16"):
    sf.write(path, data, rate, subtype=subtype)
    return path


def test_short_clip_is_read_exactly_and_centred_by_padding(tmp_path):
    data = sine(0.3, 440)
    wave = load_audio(write(tmp_path / "short.wav", data), RATE)
    assert wave.dtype == torch.float32 and wave.shape == (2400,)
    torch.testing.assert_close(wave, torch.from_numpy(data), atol=1 / 32768, rtol=0)

    fitted = fit_duration(wave, RATE)
    assert fitted.shape == (RATE,)
    offset = (RATE - 2400) // 2
    assert torch.equal(fitted[offset : offset + 2400], wave)
    assert fitted[:offset].abs().sum() == 0 and fitted[offset + 2400 :].abs().sum() == 0


def test_long_clip_is_cropped_to_its_middle(tmp_path):
    wave = load_audio(write(tmp_path / "long.wav", sine(2.5, 300)), RATE)
    assert wave.shape == (20000,)
    assert torch.equal(fit_duration(wave, RATE), wave[6000:14000])


def test_random_fit_is_seeded_and_stays_inside_the_clip():
    wave = torch.arange(100, dtype=torch.float32)
    crops = [fit_duration(wave, 10, "random", torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(crops[0], crops[1])
    start = int(crops[0][0])
    assert torch.equal(crops[0], wave[start : start + 10])

    padded = fit_duration(wave[:4] + 1, 10, "random", torch.Generator().manual_seed(3))
    assert padded.shape == (10,) and padded.sum() == (wave[:4] + 1).sum()
    with pytest.raises(ValueError, match="mode"):
        fit_duration(wave, 10, "left")


def test_stereo_is_mixed_to_the_mean_of_its_channels(tmp_path):
    left, right = sine(0.5, 440), sine(0.5, 1000, amplitude=0.25)
    wave = load_audio(write(tmp_path / "stereo.wav", np.stack([left, right], axis=1)), RATE)
    torch.testing.assert_close(wave, torch.from_numpy((left + right) / 2), atol=1 / 32768, rtol=0)


def test_other_sample_rate_is_resampled(tmp_path):
    wave = load_audio(write(tmp_path / "16k.wav", sine(1.0, 440, rate=16000), rate=16000), RATE)
    assert wave.shape == (RATE,)
    spectrum = torch.fft.rfft(wave[1000:-1000]).abs()  # away from the filter's edge effects
    peak_hz = spectrum.argmax().item() * RATE / (RATE - 2000)
    assert abs(peak_hz - 440) < 2


def test_silent_clip_gives_finite_features(tmp_path):
    wave = load_audio(write(tmp_path / "silence.wav", np.zeros(4000, np.float32)), RATE)
    assert wave.abs().sum() == 0
    config = SpectrogramConfig()
    spec = LogMelSpectrogram(config)(fit_duration(wave, config.n_samples))
    assert torch.isfinite(spec).all()
    torch.testing.assert_close(spec, torch.full_like(spec, math.log(config.log_eps)))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("corrupt.wav", "truncated", "not readable as audio"),
        ("notes.wav", b"this is a text file, not audio\n" * 20, "not readable as audio"),
        ("empty.wav", b"", "empty"),
        ("header_only.wav", "header", "no audio samples"),
    ],
)
def test_unusable_files_raise_audio_error_naming_the_file(tmp_path, name, content, message):
    good = (write(tmp_path / "good.wav", sine(0.2, 440))).read_bytes()
    content = {"truncated": good[:20], "header": good[:44]}.get(content, content)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AudioError, match=message) as error:
        load_audio(path, RATE)
    assert str(path) in str(error.value)
    assert isinstance(error.value, ValueError)


def test_missing_and_non_finite_files_raise_audio_error(tmp_path):
    with pytest.raises(AudioError, match="no such audio file") as error:
        load_audio(tmp_path / "missing.wav", RATE)
    assert "missing.wav" in str(error.value)

    data = sine(0.1, 440)
    data[10] = np.nan
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN or infinite") as error:
        load_audio(path, RATE)
    assert str(path) in str(error.value)
