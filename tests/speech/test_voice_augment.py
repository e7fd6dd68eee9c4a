"""The voice and channel perturbations: formula checks against the signal they should produce,
seeded determinism, identity in eval mode, shapes."""

import math

import pytest
import torch
import torchaudio.functional as AF

from anyformer.speech.augment import (
    VoiceAugment,
    VoiceAugmentConfig,
    WaveAugment,
    WaveAugmentConfig,
    colored_noise,
    pitch_shift,
    room_impulse_response,
    speed_perturb,
    vtlp,
    vtlp_warp,
)

RATE = 8000


def tone(freq: float, seconds: float = 0.5) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(round(seconds * RATE)) / RATE)


def peak_hz(wave: torch.Tensor) -> float:
    """Frequency of the largest bin of a Hann-windowed spectrum, refined by the centroid of its neighbours."""
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave), periodic=False)).abs()
    k = int(spectrum.argmax())
    near = spectrum[k - 1 : k + 2]
    return float((near * torch.arange(k - 1, k + 2)).sum() / near.sum()) * RATE / len(wave)


def test_speed_perturbation_scales_tempo_and_frequency_together():
    wave = tone(500.0)
    fast = speed_perturb(wave, RATE, 1.1)
    assert fast.shape == (math.ceil(len(wave) / 1.1),)  # resample rounds up
    assert peak_hz(fast) == pytest.approx(550.0, abs=5)
    slow = speed_perturb(wave, RATE, 0.9)
    assert slow.shape == (math.ceil(len(wave) / 0.9),) and peak_hz(slow) == pytest.approx(450.0, abs=5)
    assert speed_perturb(wave, RATE, 1.0) is wave


def test_pitch_shift_scales_frequency_and_keeps_the_duration():
    wave = tone(500.0)
    for factor in (1.1, 0.9):
        shifted = pitch_shift(wave, RATE, factor)
        assert shifted.shape == wave.shape
        assert peak_hz(shifted[500:-500]) == pytest.approx(500.0 * factor, abs=8)
    # The factor snaps to 1/40 steps, so the resampling rates share a divisor of RATE / 40.
    torch.testing.assert_close(pitch_shift(wave, RATE, 1.11), pitch_shift(wave, RATE, 1.1))


def test_vtlp_warp_is_jaitly_hintons_piecewise_line():
    nyquist, boundary = 4000.0, 3200.0
    freqs = torch.linspace(0, nyquist, 401)
    for alpha in (0.9, 1.1):
        warped = vtlp_warp(freqs, alpha, nyquist, boundary)
        knee = boundary * min(alpha, 1) / alpha
        below = freqs <= knee
        torch.testing.assert_close(warped[below], alpha * freqs[below])
        assert float(warped[0]) == 0.0 and float(warped[-1]) == pytest.approx(nyquist)
        assert (warped.diff() > 0).all()  # monotonic: invertible
        at_knee = vtlp_warp(torch.tensor([knee - 1e-3, knee + 1e-3]), alpha, nyquist, boundary)
        assert float(at_knee[1] - at_knee[0]) == pytest.approx(0.0, abs=0.01)  # continuous


def test_vtlp_moves_a_tone_by_alpha_and_keeps_the_duration():
    wave = tone(1000.0)
    warped = vtlp(wave, RATE, 1.1)
    assert warped.shape == wave.shape
    assert peak_hz(warped[500:-500]) == pytest.approx(1100.0, abs=15)
    assert vtlp(wave, RATE, 1.0) is wave


def test_room_impulse_response_decays_60_db_in_rt60():
    rt60 = 0.4
    rir = room_impulse_response(RATE, rt60, torch.Generator().manual_seed(0))
    assert rir.shape == (round(rt60 * RATE) + 1,) and rir[0] == 1.0
    # Schroeder backward integration of the tail: its slope is -60 dB per rt60.
    energy = rir[1:].double().square().flip(0).cumsum(0).flip(0)
    decay_db = 10 * torch.log10(energy / energy[0])
    t = torch.arange(len(decay_db)) / RATE
    fit = (t < 0.5 * rt60) & (t > 0.05 * rt60)  # the straight part, before the truncation bends it
    slope = torch.linalg.lstsq(torch.stack([t[fit], torch.ones(int(fit.sum()))], 1).double(), decay_db[fit, None])
    assert float(slope.solution[0]) == pytest.approx(-60 / rt60, rel=0.1)
    again = room_impulse_response(RATE, rt60, torch.Generator().manual_seed(0))
    assert torch.equal(rir, again)


def test_colored_noise_has_the_requested_spectral_slope_and_unit_rms():
    generator = torch.Generator().manual_seed(0)
    for beta in (0.0, 1.0, 2.0):
        noise = torch.stack([colored_noise(8192, beta, generator) for _ in range(32)])
        assert noise.square().mean(-1).sqrt().sub(1).abs().max() < 1e-5
        power = torch.fft.rfft(noise).abs().square().mean(0)
        freqs = torch.fft.rfftfreq(8192)
        band = (freqs > 0.01) & (freqs < 0.4)
        x, y = freqs[band].log10(), power[band].log10()
        slope = float(((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum())
        assert slope == pytest.approx(-beta, abs=0.1)


def test_wave_augment_gain_reverb_and_colored_noise():
    wave = torch.randn(6, RATE, generator=torch.Generator().manual_seed(0))
    gain_only = WaveAugment(WaveAugmentConfig(max_shift_s=0, noise_p=0, gain_db=6), RATE)
    out = gain_only(wave, torch.Generator().manual_seed(1))
    ratio_db = 20 * torch.log10(out.norm(dim=-1) / wave.norm(dim=-1))
    assert (ratio_db.abs() <= 6 + 1e-4).all() and ratio_db.std() > 0.5
    torch.testing.assert_close(out, wave * 10 ** (ratio_db[:, None] / 20))  # a pure gain (AF.gain's formula)
    torch.testing.assert_close(out[0], AF.gain(wave[0], float(ratio_db[0])), rtol=1e-4, atol=1e-6)

    reverb = WaveAugment(WaveAugmentConfig(max_shift_s=0, noise_p=0, reverb_p=1.0), RATE)
    wet = reverb(wave, torch.Generator().manual_seed(1))
    torch.testing.assert_close(wet.square().mean(-1), wave.square().mean(-1))  # loudness kept
    assert not torch.allclose(wet, wave)

    snr = 10.0
    colored = WaveAugmentConfig(max_shift_s=0, noise_p=1.0, snr_db_min=snr, snr_db_max=snr, noise_beta_max=2.0)
    noisy = WaveAugment(colored, RATE)(wave, torch.Generator().manual_seed(1))
    measured = 10 * torch.log10(wave.square().sum(-1) / (noisy - wave).square().sum(-1))
    torch.testing.assert_close(measured, torch.full((6,), snr), atol=1e-3, rtol=0)
    silent = torch.zeros(2, RATE)
    assert torch.equal(WaveAugment(colored, RATE)(silent, torch.Generator().manual_seed(1)), silent)


def test_all_augmentations_are_seeded_and_identity_in_eval():
    config = WaveAugmentConfig(gain_db=6, reverb_p=0.5, noise_beta_max=2.0)
    augment = WaveAugment(config, RATE)
    wave = torch.randn(4, RATE, generator=torch.Generator().manual_seed(0))
    first, second = (augment(wave, torch.Generator().manual_seed(3)) for _ in range(2))
    assert first.shape == wave.shape and torch.equal(first, second)
    assert torch.equal(augment.eval()(wave), wave)

    voice = VoiceAugment(VoiceAugmentConfig(speed=0.15, pitch=0.15, pitch_p=1.0, vtlp=0.1, vtlp_p=1.0), RATE)
    clip = tone(300.0) + 0.5 * tone(1200.0)
    outs = [voice(clip, torch.Generator().manual_seed(seed)) for seed in (0, 0, 1)]
    assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])
    for out in outs:
        assert out.ndim == 1 and round(len(clip) / 1.15) - 1 <= len(out) <= round(len(clip) / 0.85) + 1
    assert voice.eval()(clip) is clip
    assert not VoiceAugmentConfig().active and VoiceAugmentConfig(vtlp=0.1).active


def test_existing_recipe_keeps_its_random_stream():
    """Configs without the new perturbations draw exactly what they drew before (time shift, then noise)."""
    wave = torch.randn(3, RATE, generator=torch.Generator().manual_seed(0))
    out = WaveAugment(WaveAugmentConfig(), RATE)(wave, torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    shift = torch.randint(-800, 801, (3,), generator=generator)
    from anyformer.speech.augment import add_noise, time_shift

    shifted = time_shift(wave, shift)
    noisy = torch.rand(3, generator=generator) < 0.5
    snr = 10 + 30 * torch.rand(3, generator=generator)
    torch.testing.assert_close(out, torch.where(noisy[:, None], add_noise(shifted, snr, generator), shifted))


@pytest.mark.parametrize("bad", [{"speed": 0.6}, {"pitch": -0.1}, {"vtlp_p": 1.5}], ids=["speed", "pitch", "vtlp_p"])
def test_voice_config_rejects_out_of_range_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        VoiceAugmentConfig(**bad)
