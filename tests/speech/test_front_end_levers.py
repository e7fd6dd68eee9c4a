"""The front-end levers: PCEN, per-utterance CMVN, deltas and energy centring, each against an
independent reference, plus the leave-one-speaker-out validation speaker and the eSpeak voices."""

import dataclasses

import pytest
import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from anyformer.speech.audio import energy_centroid, fit_duration
from anyformer.speech.data import ClipDataset, SpeechDataModule, split_indices
from anyformer.speech.features import LogMelSpectrogram, SpectrogramConfig, pcen, pcen_smooth, utterance_cmvn
from anyformer.speech.sources import ClipSet
from anyformer.speech.synth import DIGIT_WORDS


def test_pcen_matches_the_recursion_written_out():
    energy = torch.rand(2, 3, 50, generator=torch.Generator().manual_seed(0)) * 100
    s, alpha, delta, r, eps = 0.2, 0.98, 2.0, 0.5, 1e-6
    smoothed = torch.empty_like(energy)
    smoothed[..., 0] = energy[..., 0]  # the steady state for a constant first frame
    for t in range(1, energy.shape[-1]):
        smoothed[..., t] = (1 - s) * smoothed[..., t - 1] + s * energy[..., t]
    expected = (energy / (eps + smoothed) ** alpha + delta) ** r - delta**r
    torch.testing.assert_close(pcen(energy, s, alpha, delta, r, eps), expected)
    # librosa's coefficient for a 0.4 s time constant at 8 kHz, hop 80 (T = 40 frames).
    assert pcen_smooth(0.4, 8000, 80) == pytest.approx(((1 + 4 * 40**2) ** 0.5 - 1) / (2 * 40**2))


def test_cmvn_matches_torchaudios_sliding_window_over_the_whole_clip():
    features = torch.randn(3, 20, 101, generator=torch.Generator().manual_seed(0)) * 3 + 1
    reference = AT.SlidingWindowCmn(cmn_window=1000, min_cmn_window=1000, center=True, norm_vars=True)
    expected = reference(features.transpose(-1, -2)).transpose(-1, -2)  # torchaudio wants (..., time, freq)
    torch.testing.assert_close(utterance_cmvn(features), expected, atol=1e-4, rtol=1e-4)
    out = utterance_cmvn(features)
    torch.testing.assert_close(out.mean(-1), torch.zeros(3, 20), atol=1e-5, rtol=0)


def test_cepstra_match_torchaudios_mfcc():
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    config = SpectrogramConfig(n_cepstra=20)
    reference = AT.MFCC(
        sample_rate=8000, n_mfcc=20, log_mels=True, melkwargs={"n_fft": 256, "hop_length": 80, "n_mels": 64}
    )  # log_mels: the natural log of the mel power plus 1e-6, our log_eps
    ours = LogMelSpectrogram(config)(wave)
    assert ours.shape == (2, config.n_features, config.n_frames) == (2, 20, 101)
    torch.testing.assert_close(ours, reference(wave), atol=1e-4, rtol=1e-4)
    with_deltas = LogMelSpectrogram(dataclasses.replace(config, deltas=1, utterance_norm="cmvn"))(wave)
    assert with_deltas.shape == (2, 40, 101)
    torch.testing.assert_close(with_deltas[:, :20], utterance_cmvn(ours))  # CMVN applies to the cepstra
    # The DCT is rebuilt from the config, not saved: a checkpoint's keys do not depend on n_cepstra.
    assert LogMelSpectrogram(config).state_dict().keys() == LogMelSpectrogram(SpectrogramConfig()).state_dict().keys()
    with pytest.raises(ValueError, match=r"n_cepstra must be in \[0, n_mels=64\]"):
        SpectrogramConfig(n_cepstra=65)


def test_front_end_options_shapes_and_gain_invariance():
    wave = torch.randn(2, 8000, generator=torch.Generator().manual_seed(0))
    base = SpectrogramConfig()
    for deltas in (0, 1, 2):
        cfg = dataclasses.replace(base, deltas=deltas)
        out = LogMelSpectrogram(cfg)(wave)
        assert out.shape == (2, 64 * (1 + deltas), 101) == (2, cfg.n_features, cfg.n_frames)
        if deltas:
            static = out[:, :64]
            torch.testing.assert_close(out[:, 64:128], AF.compute_deltas(static))
    # Per-utterance CMVN of log-mel removes a gain (a constant added to every log band).
    cmvn = LogMelSpectrogram(dataclasses.replace(base, utterance_norm="cmvn", log_eps=1e-12))
    torch.testing.assert_close(cmvn(wave), cmvn(wave * 4.0), atol=1e-3, rtol=1e-3)
    pcen_out = LogMelSpectrogram(dataclasses.replace(base, compression="pcen"))(wave)
    assert pcen_out.shape == (2, 64, 101) and torch.isfinite(pcen_out).all() and (pcen_out >= 0).all()
    for bad in ({"compression": "cube"}, {"utterance_norm": "cmn"}, {"deltas": 3}, {"crop": "left"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SpectrogramConfig(**bad)


def test_energy_crop_centres_the_word():
    wave = torch.zeros(20000)
    wave[14000:15000] = torch.randn(1000, generator=torch.Generator().manual_seed(0))  # the "word", late
    assert energy_centroid(wave) == pytest.approx(14500, abs=40)
    loud = fit_duration(wave, 8000, "energy").nonzero().flatten()
    assert (loud.min() + loud.max()) / 2 == pytest.approx(4000, abs=60)  # mid-window
    assert not fit_duration(wave, 8000, "center").any()  # the middle crop (6000-14000) misses the word
    edge = torch.zeros(12000)
    edge[11000:] = 1.0  # too near the end to centre: the window stops at the clip's end
    assert torch.equal(fit_duration(edge, 8000, "energy"), edge[4000:])
    short = torch.zeros(3000)
    short[:500] = 1.0  # a short clip's word at its start: padded on the left so the word sits mid-window
    placed = fit_duration(short, 8000, "energy")
    assert placed.shape == (8000,) and placed.sum() == 500 and 3749 <= int(placed.nonzero().min()) <= 3750
    assert torch.equal(fit_duration(torch.zeros(3000), 8000, "energy"), torch.zeros(8000))


def clip_set(speakers=("a", "b", "c", "d", "e"), per_speaker=4) -> ClipSet:
    n = len(speakers) * per_speaker
    return ClipSet(
        [torch.randn(3000 + i, generator=torch.Generator().manual_seed(i)) for i in range(n)],
        [i % 10 for i in range(n)],
        [speakers[i // per_speaker] for i in range(n)], ["train"] * n, list(DIGIT_WORDS),
    )  # fmt: skip


def test_leave_one_speaker_out_can_validate_on_another_unseen_speaker():
    clips = clip_set()
    parts = split_indices(clips, "speaker", "b", 0.1, 0, val_speaker="next")
    speakers = {part: {clips.speakers[i] for i in idx} for part, idx in parts.items()}
    assert speakers == {"train": {"a", "d", "e"}, "val": {"c"}, "test": {"b"}}
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(20))
    wrapped = split_indices(clips, "speaker", "e", 0.1, 0, val_speaker="next")  # rotates round to the first
    assert {clips.speakers[i] for i in wrapped["val"]} == {"a"}
    named = split_indices(clips, "speaker", "b", 0.1, 0, val_speaker="a")
    assert {clips.speakers[i] for i in named["val"]} == {"a"}
    for bad in ("b", "zed"):
        with pytest.raises(ValueError, match="val_speaker"):
            split_indices(clips, "speaker", "b", 0.1, 0, val_speaker=bad)
    with pytest.raises(ValueError, match="val_speaker needs split='speaker'"):
        SpeechDataModule(source="fsdd", val_speaker="next")


def test_synthetic_voices_join_training_only(monkeypatch):
    from anyformer.speech import data as data_module

    extra = ClipSet(
        [torch.ones(50)] * 20, [i % 10 for i in range(20)], ["m1"] * 10 + ["f2"] * 10, ["train"] * 10 + ["test"] * 10,
        list(DIGIT_WORDS),
    )  # fmt: skip
    monkeypatch.setattr(data_module, "load_source", lambda *args, **kwargs: clip_set())
    monkeypatch.setattr(data_module, "load_synthetic", lambda n, seed, rate: extra)
    data = SpeechDataModule(source="fsdd", split="speaker", test_speaker="a", val_speaker="next", synthetic_voices=2)
    clips, parts = data._load()
    assert len(clips.waves) == 40 and parts["val"] == list(range(4, 8)) and parts["test"] == list(range(4))
    added = [i for i in parts["train"] if i >= 20]
    assert added == list(range(20, 40)) and {clips.speakers[i] for i in added} == {"espeak-m1", "espeak-f2"}


def test_clip_dataset_energy_crop_and_voice_augment_are_seeded():
    from anyformer.speech.augment import VoiceAugment, VoiceAugmentConfig, WaveAugment, WaveAugmentConfig

    clips = clip_set()
    voice = VoiceAugment(VoiceAugmentConfig(speed=0.1, pitch=0.1), 8000)
    train = ClipDataset(clips, range(20), 2000, WaveAugment(WaveAugmentConfig(), 8000), "energy", voice)
    waves = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)  # the training loader seeds torch's generator per item
        waves.append(train[5]["waveform"])
    assert (
        waves[0].shape == (2000,)
        and waves[0].any()
        and torch.equal(waves[0], waves[1])
        and not torch.equal(waves[0], waves[2])
    )
    evaluation = ClipDataset(clips, range(20), 2000, crop="energy")
    assert torch.equal(evaluation[5]["waveform"], fit_duration(clips.waves[5], 2000, "energy"))


def test_classify_places_a_file_as_the_checkpoint_was_validated(tmp_path):
    """``anyformer classify`` reads the window placement from the checkpoint's spectrogram config."""
    import types

    import soundfile as sf

    from anyformer.speech.classify import load_clip

    wave = torch.zeros(20000)
    wave[14000:15000] = 0.5 * torch.randn(1000, generator=torch.Generator().manual_seed(0))
    sf.write(tmp_path / "late_word.wav", wave.numpy(), 8000, subtype="FLOAT")
    for crop in ("center", "energy"):
        module = types.SimpleNamespace(config=types.SimpleNamespace(spectrogram=SpectrogramConfig(crop=crop)))
        torch.testing.assert_close(load_clip(tmp_path / "late_word.wav", module), fit_duration(wave, 8000, crop))
