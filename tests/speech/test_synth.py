from collections import Counter

import pytest
import torch

from anyformer.speech import synth
from anyformer.speech.espeak import EspeakError, Utterance, render
from anyformer.speech.synth import DIGIT_WORDS, plan_digits, synthesize_digits


def test_synthetic_set_is_deterministic_for_a_seed_and_balanced():
    waves, labels = synthesize_digits(3, seed=7, cache=False)
    again, labels_again = synthesize_digits(3, seed=7, cache=False)
    assert labels == labels_again
    assert all(torch.equal(a, b) for a, b in zip(waves, again))
    assert Counter(labels) == {digit: 3 for digit in range(10)}

    other, _ = synthesize_digits(3, seed=8, cache=False)
    assert not all(a.shape == b.shape and torch.equal(a, b) for a, b in zip(waves, other))


def test_synthetic_clips_are_plausible_speech():
    waves, labels = synthesize_digits(2, seed=0, cache=False)
    plan = plan_digits(2, seed=0)
    assert labels == [clip.label for clip in plan]
    assert [clip.utterance.text for clip in plan[:10]] == list(DIGIT_WORDS)
    for wave, clip in zip(waves, plan):
        assert wave.dtype == torch.float32 and wave.ndim == 1
        assert 0.15 < wave.numel() / 8000 < 1.0  # seconds
        assert torch.isfinite(wave).all()
        # The peak is scaled to the recipe's level before noise, so it stays close to it.
        assert wave.abs().max().item() == pytest.approx(clip.peak, rel=0.15)


def test_synthetic_set_is_cached_atomically(tmp_path, monkeypatch):
    waves, labels = synthesize_digits(1, seed=3, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())  # no temporary file left behind
    assert len(files) == 1 and files[0].name.startswith("speech_synth_") and files[0].suffix == ".pt"

    def no_synthesis(utterances):
        raise AssertionError("the cached set should have been read")

    monkeypatch.setattr(synth, "render", no_synthesis)
    cached, cached_labels = synthesize_digits(1, seed=3, cache_dir=tmp_path)
    assert cached_labels == labels and all(torch.equal(a, b) for a, b in zip(waves, cached))
    assert synth._cache_key(1, 3, 8000) != synth._cache_key(1, 3, 16000)


def test_unknown_voice_is_reported():
    with pytest.raises(EspeakError, match="no voice 'xx-nowhere'"):
        render([Utterance("one", voice="xx-nowhere")])
