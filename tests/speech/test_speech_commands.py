"""The Speech Commands sources (35 words and the 12-class keyword task) on a small generated folder
laid out like the real one, and both configs trained a few steps on it through the CLI."""

from collections import Counter
from pathlib import Path

import pytest
import torch

from anyformer.speech.sources import KWS_WORDS, SILENCE, UNKNOWN, load_source
from tests.helpers import read_metrics, run_cli
from tests.speech.speech_commands_fixture import EXTRA_WORDS, make_speech_commands

CONFIGS = {
    "speech_commands": Path("experiments/speech/speech_commands.yaml").resolve(),
    "kws_speech_commands": Path("experiments/speech/kws_speech_commands.yaml").resolve(),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_speech_commands(tmp_path_factory.mktemp("speech_commands"))


def test_35_word_source_follows_the_official_lists(folder):
    clips = load_source("speechcommands", root=folder, sample_rate=16000, seed=0, synthetic_per_class=0)
    words = sorted((*KWS_WORDS, *EXTRA_WORDS))
    assert clips.class_names == words
    parts = Counter(zip(clips.official, clips.speakers))
    # 13 words x 2 takes per speaker: s1 is the validation list, s2 the testing list, s0 and s3 train.
    assert parts == {("val", "s1"): 26, ("test", "s2"): 26, ("train", "s0"): 26, ("train", "s3"): 26}
    wave = clips.waves[0]
    assert wave.ndim == 1 and wave.dtype == torch.float32 and wave.shape[0] in (16000, 11200)
    assert "_background_noise_" not in {clips.class_names[label] for label in clips.labels}


def test_keyword_task_has_ten_words_unknown_and_silence_in_every_part(folder):
    clips = load_source("speechcommands12", root=folder, sample_rate=16000, seed=0, synthetic_per_class=0)
    assert clips.class_names == [*KWS_WORDS, UNKNOWN, SILENCE]
    for part, n_known in (("train", 40), ("val", 20), ("test", 20)):
        counts = Counter(clips.class_names[label] for label, p in zip(clips.labels, clips.official) if p == part)
        assert sum(counts[word] for word in KWS_WORDS) == n_known
        # 10% of the keyword clips each (rounded up), drawn from the 3 non-keywords' clips and the noise files.
        assert counts[UNKNOWN] == counts[SILENCE] == -(-n_known // 10)
    silence = [i for i, label in enumerate(clips.labels) if clips.class_names[label] == SILENCE]
    windows = [clips.waves[i] for i in silence]
    assert all(w.shape == (16000,) for w in windows)  # one-second windows of the 2-3 s noise recordings
    assert len({float(w.abs().sum()) for w in windows}) == len(windows)  # different windows and levels
    again = load_source("speechcommands12", root=folder, sample_rate=16000, seed=0, synthetic_per_class=0)
    assert again.labels == clips.labels and torch.equal(again.waves[silence[0]], windows[0])  # seeded


def test_keyword_task_needs_the_background_noise(tmp_path):
    root = make_speech_commands(tmp_path, words=("yes", "bed"), speakers=3, takes=1)
    for path in (root / "SpeechCommands/speech_commands_v0.02/_background_noise_").iterdir():
        path.unlink()
    with pytest.raises(FileNotFoundError, match="_background_noise_"):
        load_source("speechcommands12", root=root, sample_rate=16000, seed=0, synthetic_per_class=0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_trains_a_few_steps_on_the_generated_folder(name, folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ANYFORMER_OFFLINE", "1")  # never the 2.3 GB download
    argv = [
        "speech", "fit", "--config", str(CONFIGS[name]), f"--data.root={folder}", "--run-name", name,
        "--trainer.max_steps=3", "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1",
        "--trainer.log_every_n_steps=1",
        "--data.batch_size=8", "--data.num_workers=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--model.config.transformer.dim=48",
        "--model.config.transformer.n_layers=1",
    ]  # fmt: skip
    run_cli(tmp_path, argv)
    metrics = read_metrics(next((tmp_path / "runs" / name).rglob("metrics.csv")))
    assert len(metrics["train_loss"]) >= 1 and len(metrics["val_acc"]) == 1


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_header_states_the_published_reference(name):
    header = CONFIGS[name].read_text(encoding="utf-8").split("\nseed_everything")[0]
    reference = [line for line in header.splitlines() if line.startswith("# reference:")]
    assert reference and "%" in reference[0], f"{name}: no '# reference:' line with the published accuracy"
    assert "not a run made here" in header
