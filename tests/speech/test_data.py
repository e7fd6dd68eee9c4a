from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from anyformer.speech import synth
from anyformer.speech.augment import WaveAugment, WaveAugmentConfig
from anyformer.speech.data import ClipDataset, SpeechDataModule, split_indices
from anyformer.speech.sources import ClipSet
from tests.helpers import SHARED_DATA

needs_fsdd = pytest.mark.skipif(
    not (SHARED_DATA and Path(SHARED_DATA, "fsdd", "recordings").is_dir()),
    reason="FSDD recordings not found in $ANYFORMER_DATA/fsdd/recordings ($ANYFORMER_DATA unset or without FSDD)",
)


@pytest.fixture(scope="module")
def fsdd() -> SpeechDataModule:
    data = SpeechDataModule(source="fsdd", batch_size=16)
    data.setup("fit")
    return data


def speakers_of(data: SpeechDataModule, part: str) -> set[str]:
    clips, parts = data._load()
    return {clips.speakers[i] for i in parts[part]}


@needs_fsdd
def test_fsdd_official_split_sizes(fsdd):
    sizes = {part: len(dataset) for part, dataset in fsdd.datasets.items()}
    assert sizes == {"train": 2025, "val": 225, "test": 250}
    clips, parts = fsdd._load()
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(2500))
    assert Counter(clips.labels[i] for i in parts["test"]) == {digit: 25 for digit in range(10)}
    assert speakers_of(fsdd, "test") == {"george", "jackson", "lucas", "nicolas", "theo"}
    assert fsdd.num_classes == 10 and fsdd.class_names[0] == "zero" and fsdd.class_names[9] == "nine"


@needs_fsdd
def test_fsdd_batches_and_front_end(fsdd):
    batch = next(iter(fsdd.train_dataloader()))
    assert batch["waveform"].shape == (16, 8000) and batch["waveform"].dtype == torch.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == torch.long

    first, second = (next(iter(fsdd.val_dataloader())) for _ in range(2))
    assert torch.equal(first["waveform"], second["waveform"])  # no augmentation outside training

    config = fsdd.spectrogram_config
    assert config.normalize and config.n_samples == 8000 and config.std > 0


@needs_fsdd
def test_fsdd_speaker_split_holds_one_speaker_out(fsdd):
    clips, _ = fsdd._load()
    parts = split_indices(clips, "speaker", "theo", val_fraction=0.1, seed=0)
    assert {part: len(indices) for part, indices in parts.items()} == {"train": 1800, "val": 200, "test": 500}
    speakers = {part: {clips.speakers[i] for i in indices} for part, indices in parts.items()}
    assert speakers["test"] == {"theo"} and "theo" not in speakers["train"] | speakers["val"]
    assert sorted(parts["train"] + parts["val"] + parts["test"]) == list(range(2500))

    with pytest.raises(ValueError, match="george"):  # the message lists the valid speakers
        split_indices(clips, "speaker", "nobody", val_fraction=0.1, seed=0)


def test_folder_source_reads_labels_from_sub_folders_and_prefixes(tmp_path):
    tone = (0.1 * np.sin(np.arange(2000) / 5)).astype(np.float32)
    by_folder, by_prefix = tmp_path / "by_folder", tmp_path / "by_prefix"
    by_prefix.mkdir()
    for label in ("no", "yes"):
        (by_folder / label).mkdir(parents=True)
        for speaker in ("ann", "bob", "cat", "dan", "eve"):
            sf.write(by_folder / label / f"{speaker}_0.wav", tone, 16000)
            sf.write(by_prefix / f"{label}_{speaker}_0.wav", tone, 16000)

    for root in (by_folder, by_prefix):
        data = SpeechDataModule(source="folder", root=str(root), split="speaker", test_speaker="bob", batch_size=4)
        data.setup("fit")
        assert data.class_names == ["no", "yes"]
        clips, parts = data._load()
        assert len(clips.waves) == 10
        assert Counter(clips.labels) == {0: 5, 1: 5}
        assert {clips.speakers[i] for i in parts["test"]} == {"bob"}
        batch = next(iter(data.test_dataloader()))
        assert batch["waveform"].shape[1] == 8000  # resampled to 8 kHz and padded to 1 s


def test_speechcommands_source_uses_the_official_lists(tmp_path):
    # An already extracted archive in miniature: torchaudio then skips the download.
    archive = tmp_path / "SpeechCommands" / "speech_commands_v0.02"
    tone = np.zeros(16000, np.float32)
    for word in ("go", "stop"):
        (archive / word).mkdir(parents=True)
        for speaker in ("a1", "b2", "c3", "d4"):
            sf.write(archive / word / f"{speaker}_nohash_0.wav", tone, 16000)
    (archive / "validation_list.txt").write_text("go/b2_nohash_0.wav\nstop/b2_nohash_0.wav\n")
    (archive / "testing_list.txt").write_text("go/c3_nohash_0.wav\nstop/c3_nohash_0.wav\n")

    data = SpeechDataModule(source="speechcommands", root=str(tmp_path), batch_size=2)
    data.setup("fit")
    assert data.class_names == ["go", "stop"]
    assert {part: len(dataset) for part, dataset in data.datasets.items()} == {"train": 4, "val": 2, "test": 2}
    assert speakers_of(data, "val") == {"b2"} and speakers_of(data, "test") == {"c3"}
    batch = next(iter(data.val_dataloader()))
    assert batch["waveform"].shape == (2, 8000)  # read with soundfile, resampled to 8 kHz


def test_synthetic_source_is_the_offline_default(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "CACHE_DIR", tmp_path)
    data = SpeechDataModule(synthetic_per_class=10, batch_size=8)
    data.setup("fit")
    assert data.num_classes == 10 and data.class_names[3] == "three"
    assert {part: len(dataset) for part, dataset in data.datasets.items()} == {"train": 81, "val": 9, "test": 10}
    batch = next(iter(data.train_dataloader()))
    assert batch["waveform"].shape == (8, 8000) and batch["label"].dtype == torch.long
    assert list(tmp_path.glob("speech_synth_*.pt"))


def test_training_batches_are_reproducible_for_a_seed(tmp_path, monkeypatch):
    monkeypatch.setattr(synth, "CACHE_DIR", tmp_path)

    def first_batch(seed: int) -> dict[str, torch.Tensor]:
        data = SpeechDataModule(synthetic_per_class=5, batch_size=8, seed=seed)
        return next(iter(data.train_dataloader()))

    a, b, c = first_batch(1), first_batch(1), first_batch(2)
    assert torch.equal(a["waveform"], b["waveform"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["waveform"], c["waveform"])


def test_dataloader_workers_draw_different_reproducible_augmentations():
    # Identical clips: any difference between items comes from the augmentation streams.
    clips = ClipSet([torch.ones(800)] * 4, [0] * 4, ["a"] * 4, ["train"] * 4, ["one"])
    augment = WaveAugment(WaveAugmentConfig(max_shift_s=0.0, noise_p=1.0), sample_rate=8000)
    dataset = ClipDataset(clips, range(4), n_samples=800, augment=augment)

    def waves() -> list[torch.Tensor]:
        loader = torch.utils.data.DataLoader(dataset, num_workers=2, generator=torch.Generator().manual_seed(0))
        return [batch["waveform"] for batch in loader]  # items 0, 2 from worker 0; 1, 3 from worker 1

    first, second = waves(), waves()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], first[1])


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="source"):
        SpeechDataModule(source="radio")
    with pytest.raises(ValueError, match="test_speaker"):
        SpeechDataModule(split="speaker")
    with pytest.raises(ValueError, match="val_fraction"):
        SpeechDataModule(val_fraction=1.0)
