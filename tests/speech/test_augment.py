import pytest
import torch

from anyformer.speech.augment import (
    SpecAugment,
    SpecAugmentConfig,
    WaveAugment,
    WaveAugmentConfig,
    add_noise,
    time_shift,
)


def test_time_shift_moves_samples_and_fills_with_zeros():
    wave = torch.arange(1.0, 11.0).repeat(2, 1)  # (2, 10)
    shifted = time_shift(wave, torch.tensor([3, -2]))
    assert torch.equal(shifted[0], torch.tensor([0, 0, 0, 1, 2, 3, 4, 5, 6, 7.0]))
    assert torch.equal(shifted[1], torch.tensor([3, 4, 5, 6, 7, 8, 9, 10, 0, 0.0]))
    assert torch.equal(time_shift(wave[0], torch.tensor(0)), wave[0])


def test_add_noise_reaches_the_requested_snr():
    generator = torch.Generator().manual_seed(0)
    wave = torch.randn(3, 200_000, generator=generator) * torch.tensor([[0.1], [1.0], [0.5]])
    snr_db = torch.tensor([0.0, 10.0, 30.0])
    noisy = add_noise(wave, snr_db, torch.Generator().manual_seed(1))
    measured = 10 * torch.log10(wave.square().mean(-1) / (noisy - wave).square().mean(-1))
    torch.testing.assert_close(measured, snr_db, atol=0.05, rtol=0)
    again = add_noise(wave, snr_db, torch.Generator().manual_seed(1))
    assert torch.equal(noisy, again)
    silent = torch.zeros(100)
    assert torch.equal(add_noise(silent, torch.tensor(20.0)), silent)


def test_wave_augment_is_seeded_and_identity_in_eval():
    augment = WaveAugment(WaveAugmentConfig(max_shift_s=0.01, noise_p=1.0), sample_rate=8000)
    wave = torch.randn(4, 8000, generator=torch.Generator().manual_seed(0))
    first = augment(wave, torch.Generator().manual_seed(5))
    second = augment(wave, torch.Generator().manual_seed(5))
    assert first.shape == wave.shape and torch.equal(first, second)
    assert not torch.equal(first, wave)
    assert torch.equal(augment.eval()(wave), wave)
    with pytest.raises(ValueError, match="noise_p"):
        WaveAugmentConfig(noise_p=2.0)


def test_spec_augment_masks_whole_bands_and_frames_per_example():
    torch.manual_seed(0)
    spec = torch.randn(8, 64, 101) + 5.0
    augment = SpecAugment(SpecAugmentConfig(n_freq_masks=1, freq_mask_param=10, n_time_masks=0))
    masked = augment(spec)
    fill = spec.mean()
    band_masked = (masked == fill).all(dim=2)  # (B, n_mels): bands set to the fill everywhere
    assert torch.equal((masked != spec).any(dim=2), band_masked)  # only whole bands change
    assert (band_masked.sum(dim=1) <= 10).all() and band_masked.any()
    assert len({tuple(row.nonzero().flatten().tolist()) for row in band_masked}) > 1  # iid masks

    time_only = SpecAugment(SpecAugmentConfig(n_freq_masks=0, n_time_masks=2, time_mask_param=5))
    masked = time_only(spec[0])  # unbatched
    changed = (masked != spec[0]).any(dim=0)  # (frames,)
    assert torch.equal(changed, (masked == spec[0].mean()).all(dim=0))
    assert changed.sum() <= 10
    assert torch.equal(time_only.eval()(spec), spec)
