"""Damaged input files, one data source at a time: each fails before training with one line naming the
file (and line or key) and what was expected, or, where skipping is the documented choice (a few
unreadable clips among many), is skipped with a logged count.

The one-line CLI cases that need no training data (a tokenizer file of another kind, a ``.npz`` with
missing keys or mismatched lengths, a corrupt PNG given to ``anyformer classify``, a YAML with an
unknown key) are rows of ``tests/test_bad_inputs.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from anyformer.speech import sources
from anyformer.speech.audio import AudioError
from tests.helpers import run_cli
from tests.reliability.tiny_gpt import fit_args, write_corpus

RATE = 8000


def _one_error_line(capsys: pytest.CaptureFixture[str], prog: str, quiet: bool = True) -> str:
    """The one error line on stderr; ``quiet``: nothing on stdout either (the fit never started)."""
    out, err = capsys.readouterr()
    assert out == "" or not quiet, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _clips(folder: Path, good: int) -> dict[str, Path]:
    """``good`` FSDD-named clips (``{digit}_{speaker}_{index}.wav``), then four damaged ones."""
    folder.mkdir(parents=True)
    tone = (0.1 * np.sin(np.arange(400) / 3)).astype(np.float32)
    for n in range(good):
        sf.write(folder / f"{n % 10}_spk{n % 3}_{n // 10}.wav", tone, RATE)
    bad = {name: folder / f"{digit}_spk0_9.wav" for digit, name in enumerate(("truncated", "text", "empty", "silent"))}
    bad["truncated"].write_bytes((folder / "0_spk0_0.wav").read_bytes()[:30])  # cut inside the header
    bad["text"].write_text("not audio at all\n")
    bad["empty"].write_bytes(b"")  # zero-length clip
    sf.write(bad["silent"], np.zeros(0, np.float32), RATE)  # a valid WAV holding no samples
    return bad


@pytest.mark.parametrize("source", ["fsdd", "folder"])
def test_a_few_unreadable_clips_are_skipped_with_a_count(source, tmp_path, monkeypatch, caplog) -> None:
    bad = _clips(tmp_path / "clips", good=40)
    monkeypatch.setattr(sources, "resolve", lambda name, root: root)  # FSDD's checksums are tested elsewhere
    caplog.set_level(logging.WARNING)
    clips = sources.load_source(source, root=tmp_path / "clips", sample_rate=RATE, seed=0, synthetic_per_class=1)
    assert len(clips.waves) == len(clips.labels) == len(clips.speakers) == len(clips.official) == 40
    assert "Skipped 4 unreadable clips of 44" in caplog.text
    assert str(bad["truncated"]) in caplog.text or str(bad["text"]) in caplog.text


def test_mostly_unreadable_clips_fail_before_training_with_one_line(tmp_path, capsys) -> None:
    bad = _clips(tmp_path / "clips", good=4)
    run_cli(tmp_path, ["speech", "fit", "--data.source", "folder", "--data.root", str(tmp_path / "clips")], expect=2)
    line = _one_error_line(capsys, "anyformer speech")
    assert "4 of 8 clips are unreadable" in line and str(bad["truncated"]) in line
    assert not (tmp_path / "runs").exists()


def _tables(folder: Path) -> dict[str, Path]:
    tables = {
        "train": "sentence\tlabel\na fine film\t1\na dull film\t0\nsharp and funny\t1\n",
        "no_label": "sentence\nfine\n",
        "bad_label": "sentence\tlabel\nok\t1\nhmm\tpositive\n",
    }
    paths = {}
    for name, text in tables.items():
        paths[name] = folder / f"{name}.tsv"
        paths[name].write_text(text)
    return paths


def test_tsv_with_a_missing_column_fails_before_training_naming_file_and_column(tmp_path, capsys) -> None:
    tables = _tables(tmp_path)
    args = ["bert-classify", "fit", "--data.source", "files", "--data.train_path", str(tables["train"]),
            "--data.val_path", str(tables["no_label"]), "--data.vocab_size", "300"]  # fmt: skip
    run_cli(tmp_path, args, expect=2)
    line = _one_error_line(capsys, "anyformer bert-classify")
    assert f"{tables['no_label']} has no column 'label'" in line


def test_tsv_with_a_bad_label_names_file_and_line(tmp_path) -> None:
    from anyformer.text.classification_data import TextClassificationDataModule

    tables = _tables(tmp_path)
    data = TextClassificationDataModule(
        source="files", train_path=str(tables["train"]), val_path=str(tables["bad_label"]), vocab_size=300
    )
    with pytest.raises(ValueError) as raised:
        data.setup("fit")
    message = str(raised.value)
    assert "\n" not in message and f"{tables['bad_label']}:3" in message and "'positive'" in message


def test_imagefolder_with_a_corrupt_png_fails_at_setup_or_skips_it(tmp_path, caplog) -> None:
    from anyformer.vision.data import ImageDataModule

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        for n in range(4):
            Image.fromarray(np.full((8, 8, 3), 30 * n, np.uint8)).save(tmp_path / label / f"{n}.png")
    corrupt = tmp_path / "cat" / "corrupt.png"
    corrupt.write_bytes((tmp_path / "cat" / "0.png").read_bytes()[:40])
    data = ImageDataModule(source="imagefolder", root=str(tmp_path), image_size=8, batch_size=2)
    caplog.set_level(logging.WARNING)
    try:
        data.setup("fit")
    except ValueError as error:  # either: refused at setup, naming the file
        assert str(corrupt) in str(error) and "\n" not in str(error)
        return
    for loader in (data.train_dataloader(), data.val_dataloader()):  # or: skipped, counted
        for _ in loader:
            pass
    assert "1" in caplog.text and "corrupt.png" in caplog.text


def test_trainer_options_lightning_rejects_are_one_line_exit_2(tmp_path, capsys) -> None:
    """val_check_interval beyond the epoch: Lightning's MisconfigurationException at fit start."""
    corpus = write_corpus(tmp_path)
    overrides = {"trainer.val_check_interval": 1000, "trainer.check_val_every_n_epoch": 1, "trainer.max_steps": 2}
    args = fit_args("too_far", corpus, overrides)
    run_cli(tmp_path, args, expect=2)
    line = _one_error_line(capsys, "anyformer gpt", quiet=False)  # the model summary came before the check
    assert "`val_check_interval` (1000) must be less than or equal to the number of the training batches (15)" in line
    assert not list((tmp_path / "runs").rglob("*.ckpt")), "no training happened"


def test_a_real_training_error_keeps_its_traceback(tmp_path, monkeypatch) -> None:
    """Only configuration errors become one line: a ValueError raised while training propagates."""
    from anyformer.text.gpt.gpt_task import GPTModule

    def broken(self, batch, batch_idx):
        raise ValueError("a bug in training_step")

    monkeypatch.setattr(GPTModule, "training_step", broken)
    with pytest.raises(ValueError, match="a bug in training_step") as raised:
        run_cli(tmp_path, fit_args("buggy", write_corpus(tmp_path), {"trainer.max_steps": 2}))
    assert type(raised.value) is ValueError, "not turned into a usage error"


def test_audio_error_is_one_line_naming_the_file(tmp_path) -> None:
    bad = _clips(tmp_path / "clips", good=1)
    for path in bad.values():
        with pytest.raises(AudioError) as raised:
            sources.load_audio(path, RATE)
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)
