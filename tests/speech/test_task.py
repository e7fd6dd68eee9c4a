"""End to end: fit on the synthetic digits, checkpoint, then classify audio files from the
checkpoint alone (no config), plus every experiment YAML through the real CLI."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio
from PIL import Image

from anyformer.core.cli.classify import main as classify_main
from anyformer.core.cli.main import main as cli_main
from anyformer.core.config import TransformerConfig
from anyformer.core.train.checkpoint import load_task, read_checkpoint
from anyformer.speech.audio import AudioError, fit_duration
from anyformer.speech.classify import classify_audio, classify_audio_files, cls_attention
from anyformer.speech.cnn import SpeechCNNConfig
from anyformer.speech.data import SpeechDataModule
from anyformer.speech.speech import SpeechConfig
from anyformer.speech.speech_task import SpeechCNNModule, SpeechModule
from anyformer.speech.synth import DIGIT_WORDS

EXPERIMENTS = sorted(Path("experiments/speech").glob("*.yaml"))
RATE = 8000


def fit_and_save(module: pl.LightningModule, data: SpeechDataModule, path: Path) -> Path:
    trainer = pl.Trainer(
        max_steps=3, limit_val_batches=1, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def data() -> SpeechDataModule:
    return SpeechDataModule(source="synthetic", synthetic_per_class=10, batch_size=8)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny speech transformer after three steps, and its checkpoint."""
    pl.seed_everything(0)
    transformer = TransformerConfig(dim=32, n_layers=2, n_heads=4, mlp_ratio=2.0, position="none")
    config = SpeechConfig(
        num_classes=data.num_classes, spectrogram=data.spectrogram_config, patch_size=(64, 8), patch_stride=(64, 4),
        transformer=transformer,
    )  # fmt: skip
    module = SpeechModule(config, label_smoothing=0.1)
    initial = {k: v.clone() for k, v in module.state_dict().items()}
    ckpt = fit_and_save(module, data, tmp_path_factory.mktemp("speech") / "speech.ckpt")
    return module.eval(), ckpt, initial


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Audio files of every awkward kind; ``tone`` is band-limited (< 2 kHz), so resampling keeps it."""
    folder = tmp_path_factory.mktemp("clips")
    t = np.arange(RATE) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1300 * t) * (t > 0.4)).astype(np.float32)
    t16 = np.arange(2 * RATE) / (2 * RATE)
    tone16 = (0.3 * np.sin(2 * np.pi * 440 * t16) + 0.2 * np.sin(2 * np.pi * 1300 * t16) * (t16 > 0.4)).astype(
        np.float32
    )
    rng = np.random.default_rng(0)
    files = {
        "tone": (tone, RATE),
        "stereo": (np.stack([tone, tone], axis=1), RATE),
        "tone_16k_stereo": (np.stack([tone16, tone16], axis=1), 2 * RATE),
        "short": ((0.2 * rng.standard_normal(RATE * 3 // 10)).astype(np.float32), RATE),
        "long": ((0.2 * rng.standard_normal(RATE * 5 // 2)).astype(np.float32), RATE),
        "silent": (np.zeros(RATE, dtype=np.float32), RATE),
        "cd_rate": ((0.2 * rng.standard_normal(44100)).astype(np.float32), 44100),
    }
    paths = {}
    for name, (samples, rate) in files.items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], samples, rate)
    paths["corrupt"] = folder / "corrupt.wav"
    paths["corrupt"].write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage, not audio")
    paths["text"] = folder / "notes.txt"
    paths["text"].write_text("not audio\n")
    return paths


def probabilities(module, wave: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return module.model(wave[None]).softmax(dim=-1)[0]


def as_dict(labels: list[tuple[str, float]]) -> dict[str, float]:
    return dict(labels)


def test_fit_trains_and_the_checkpoint_carries_config_front_end_and_labels(trained, data):
    module, ckpt, initial = trained
    name = "model.vit.tokenizer.proj.weight"
    assert not torch.equal(initial[name], module.state_dict()[name])
    meta = read_checkpoint(ckpt)["anyformer"]
    assert meta["task"] == "speech" and meta["inference"]["class_names"] == list(DIGIT_WORDS)
    spectrogram = meta["config"]["spectrogram"]
    assert spectrogram["normalize"] and spectrogram["mean"] == pytest.approx(data.spectrogram_config.mean)

    restored = load_task(ckpt, tasks=("speech",))  # the checkpoint alone, no config
    assert restored.config == module.config and restored.class_names == list(DIGIT_WORDS)
    waves = next(iter(data.val_dataloader()))["waveform"]
    with torch.no_grad():
        torch.testing.assert_close(restored(waves), module(waves))


def test_validation_and_test_log_the_unsmoothed_loss_and_the_accuracy_of_the_split(trained, data):
    module, _, _ = trained  # trained with label_smoothing=0.1, which evaluation must not apply
    batches = list(data.val_dataloader())
    with torch.no_grad():
        logits = torch.cat([module(batch["waveform"]) for batch in batches])
    labels = torch.cat([batch["label"] for batch in batches])
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (val,) = trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    assert val["val_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-5)
    assert val["val_acc"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    (test,) = trainer.test(module, dataloaders=data.val_dataloader(), verbose=False)
    assert test == {"test_loss": val["val_loss"], "test_acc": val["val_acc"]}


def test_classify_fits_each_clip_to_the_window_like_validation(trained, clips):
    module, ckpt, _ = trained
    restored = load_task(ckpt)
    n = module.config.spectrogram.n_samples
    for name, length in (("short", RATE * 3 // 10), ("long", RATE * 5 // 2)):
        wave = torch.from_numpy(sf.read(clips[name], dtype="float32")[0])
        assert wave.shape == (length,)
        (labels,) = classify_audio(restored, [clips[name]], top_k=10)
        expected = probabilities(module, fit_duration(wave, n, "center"))  # centred pad / middle crop
        got = as_dict(labels)
        assert [name for name, _ in labels] == [DIGIT_WORDS[i] for i in expected.argsort(descending=True).tolist()]
        for index, word in enumerate(DIGIT_WORDS):
            assert got[word] == pytest.approx(expected[index].item(), abs=1e-5)


def test_channels_and_sample_rates_do_not_change_the_answer(trained, clips):
    module, _, _ = trained
    mono, stereo, resampled, cd_rate = classify_audio(
        module, [clips["tone"], clips["stereo"], clips["tone_16k_stereo"], clips["cd_rate"]], top_k=10
    )
    for word, prob in mono:
        assert as_dict(stereo)[word] == pytest.approx(prob, abs=1e-5)  # identical channels average to the same
        assert as_dict(resampled)[word] == pytest.approx(prob, abs=0.02)  # same tone recorded at 16 kHz
    assert sum(p for _, p in cd_rate) == pytest.approx(1.0, abs=1e-5)


def test_silent_clip_gives_finite_probabilities(trained, clips):
    module, _, _ = trained
    (labels,) = classify_audio(module, [clips["silent"]], top_k=3)
    probs = [p for _, p in labels]
    assert len(labels) == 3 and all(np.isfinite(probs)) and probs == sorted(probs, reverse=True)


def test_bad_files_are_named_and_exit_2_while_good_ones_are_classified(trained, clips, capsys):
    module, ckpt, _ = trained
    for bad in ("corrupt", "text"):
        with pytest.raises(AudioError, match=clips[bad].name):
            classify_audio(module, [clips["tone"], clips[bad]])
    args = argparse.Namespace(ckpt=str(ckpt), inputs=[str(clips["corrupt"]), str(clips["tone"])], top_k=2)
    assert classify_audio_files(args) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and str(clips["corrupt"]) in err and err.startswith("anyformer classify: error:")
    assert str(clips["tone"]) in out and len(out.strip().splitlines()) == 3  # the path and two labels

    # The same through `anyformer classify`, which dispatches on the checkpoint's task.
    assert classify_main(["--ckpt", str(ckpt), str(clips["tone"])]) == 0
    assert str(clips["tone"]) in capsys.readouterr().out
    assert classify_main(["--ckpt", str(clips["text"]), str(clips["tone"])]) == 2  # not a checkpoint
    assert classify_main(["--ckpt", str(ckpt), str(clips["tone"]), "--top-k", "0"]) == 2


def test_attention_map_png_and_cls_attention(trained, clips, tmp_path, capsys):
    module, ckpt, _ = trained
    wave = fit_duration(torch.from_numpy(sf.read(clips["tone"], dtype="float32")[0]), RATE)
    spec, heat, logits = cls_attention(module.model, wave)
    assert spec.shape == heat.shape == (64, 101)
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    torch.testing.assert_close(logits.softmax(-1), probabilities(module, wave))
    # full-height patches: attention varies along time only
    torch.testing.assert_close(heat, heat[:1].expand_as(heat))

    out = tmp_path / "map.png"
    args = argparse.Namespace(ckpt=str(ckpt), inputs=[str(clips["tone"])], top_k=1, attention_map=str(out))
    assert classify_audio_files(args) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (800, 400)
    assert f"attention map: {out}" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind

    several = argparse.Namespace(
        ckpt=str(ckpt), inputs=[str(clips["tone"]), str(clips["silent"])], top_k=1, attention_map=str(out)
    )
    assert classify_audio_files(several) == 0
    assert (tmp_path / "map_tone.png").is_file() and (tmp_path / "map_silent.png").is_file()


def test_cnn_baseline_fits_and_classifies_but_has_no_attention_map(data, clips, tmp_path, capsys):
    pl.seed_everything(0)
    config = SpeechCNNConfig(num_classes=data.num_classes, spectrogram=data.spectrogram_config, channels=[4, 8])
    ckpt = fit_and_save(SpeechCNNModule(config), data, tmp_path / "cnn.ckpt")
    restored = load_task(ckpt, tasks=("speech-cnn",))
    (labels,) = classify_audio(restored, [clips["tone"]], top_k=10)
    assert sorted(name for name, _ in labels) == sorted(DIGIT_WORDS)
    args = argparse.Namespace(ckpt=str(ckpt), inputs=[str(clips["tone"])], top_k=1, attention_map="x.png")
    assert classify_audio_files(args) == 2
    assert "needs a 'speech' (transformer) checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("config", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_experiment_configs_parse(config, capsys):
    task = "speech-cnn" if config.stem.startswith("cnn") else "speech"
    with pytest.raises(SystemExit) as exit_info:
        cli_main([task, "fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    sources = ("fsdd", "synthetic", "speechcommands", "speechcommands12")
    assert any(f"source: {source}\n" in printed for source in sources)


def test_synthetic_config_runs_through_the_cli(tmp_path, monkeypatch):
    config = Path("experiments/speech/speech_synthetic.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    code = cli_main([
        "speech", "fit", "--config", str(config), "--trainer.fast_dev_run=true",
        "--data.synthetic_per_class=10", "--trainer.enable_progress_bar=false",
    ])  # fmt: skip
    assert code == 0


def test_the_same_clip_at_three_rates_gets_the_same_label_through_the_cli(trained, data, tmp_path, capsys):
    """``anyformer classify`` on one recording saved at 8, 16 and 44.1 kHz (mono, stereo, mono), longer
    than the window and with silence around the word: each is resampled to the model's rate and placed
    as validation clips are, so the label and its probability agree."""
    _, ckpt, _ = trained
    clips, parts = data._load()
    word = clips.waves[parts["test"][0]]  # a test digit at 8 kHz
    recording = torch.cat([torch.zeros(3000), word, torch.zeros(5000)])  # any length: 1 s + silence
    paths = []
    for rate, channels in ((8000, 1), (16000, 2), (44100, 1)):
        wave = torchaudio.functional.resample(recording, 8000, rate) if rate != 8000 else recording
        samples = wave.numpy() if channels == 1 else np.stack([wave.numpy()] * 2, axis=1)
        paths.append(tmp_path / f"clip_{rate}.wav")
        sf.write(paths[-1], samples, rate, subtype="FLOAT")
    assert classify_main(["--ckpt", str(ckpt), *map(str, paths), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    answers = [lines[lines.index(str(path)) + 1].split() for path in paths]  # ["prob", "label"] each
    assert len({label for _, label in answers}) == 1, answers
    probs = [float(prob) for prob, _ in answers]
    assert max(probs) - min(probs) < 0.02, answers  # only the resampling's rounding differs
