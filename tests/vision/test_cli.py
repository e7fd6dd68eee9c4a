"""End to end through `anyformer`: every vision YAML parses, digits trains, its checkpoint classifies PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from anyformer.core.cli.classify import main as classify
from anyformer.core.cli.main import main
from anyformer.core.train.base import OptimConfig, dataclass_from_dict
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.data import ImageDataModule
from anyformer.vision.vit import ViTConfig
from anyformer.vision.vit_task import ViTModule
from tests.vision.timm_files import tiny_timm_folder

CONFIGS = sorted(Path("experiments/vision").resolve().glob("vit_*.yaml"))  # cnn_*: tests/vision/test_cnn.py
DIGITS = next(path for path in CONFIGS if path.stem == "vit_digits")
FAST = ["--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_starts_with_its_command_and_builds(path: Path, tmp_path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#") and f"anyformer vit fit --config experiments/vision/{path.name}" in text
    assert "Results:" in text or "no figure of ours" in text  # where its figure appears (tests/test_figures.py)
    cfg = yaml.safe_load(text)
    data = ImageDataModule(**cfg["data"])  # constructing reads no file
    model_cfg = cfg["model"].get("config", {}) | {
        "num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size,
    }  # fmt: skip
    model_cfg["transformer"] = {"position": "none", **model_cfg.get("transformer", {})}
    config = dataclass_from_dict(ViTConfig, model_cfg)
    init_from = None  # timm:<hub name> -> a tiny local timm model of the same layout (no download)
    if cfg["model"].get("init_from"):
        init_from = f"timm:{tiny_timm_folder(tmp_path / 'timm', img_size=32, patch_size=16)}"
    optim = dataclass_from_dict(OptimConfig, cfg["model"]["optim"])
    module = ViTModule(config, optim, cfg["model"]["label_smoothing"], init_from=init_from)
    images = torch.randn(2, data.in_channels, data.image_size, data.image_size)
    assert module(images).shape == (2, data.num_classes)


@pytest.fixture(scope="module")
def digits_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training steps of the digits config through the CLI, run in a temporary folder."""
    workdir = tmp_path_factory.mktemp("vit_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        args = [
            "vit",
            "fit",
            "--config",
            str(DIGITS),
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=1",
            "--trainer.val_check_interval=2",
        ]
        assert main([*args, *FAST]) == 0
    checkpoint = workdir / "runs" / "vit_digits" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return checkpoint


def test_fast_dev_run_of_the_digits_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["vit", "fit", "--config", str(DIGITS), "--trainer.fast_dev_run=true", *FAST]) == 0


def test_checkpoint_holds_config_classes_and_normalization(digits_checkpoint: Path) -> None:
    module = load_task(digits_checkpoint, tasks=("vit",))
    cfg = module.model.cfg
    assert (cfg.image_size, cfg.in_channels, cfg.num_classes, cfg.patch_size) == (8, 1, 10, 2)
    assert module.class_names == [str(i) for i in range(10)]
    assert len(module.mean) == len(module.std) == 1 and module.std[0] > 0


def _digit_png(path: Path, size: int = 8, mode: str = "L") -> Path:
    pixels = np.zeros((size, size), dtype=np.uint8)
    pixels[1:-1, size // 2 - 1 : size // 2 + 1] = 255  # a vertical bar, like a 1
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def test_classify_prints_top_k_and_writes_an_attention_map(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = _digit_png(tmp_path / "one.png", size=32, mode="RGB")  # resized and converted to 8x8 gray
    out = tmp_path / "map.png"
    code = classify(["--ckpt", str(digits_checkpoint), str(image), "--top-k", "3", "--attention-map", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(image)
    probs = [float(line.split()[0]) for line in lines[1:4]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert all(line.split()[1] in {str(i) for i in range(10)} for line in lines[1:4])
    with Image.open(out) as written:
        assert written.mode == "RGB" and min(written.size) >= 224


def test_classify_names_a_corrupt_file_and_exits_2(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = _digit_png(tmp_path / "good.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(good.read_bytes()[:40])  # a PNG header with its data cut off
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    code = classify(["--ckpt", str(digits_checkpoint), str(corrupt), str(good), str(text)])
    assert code == 2
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert str(corrupt) in errors[0] and str(text) in errors[1]
    assert str(good) in captured.out  # the readable file is still classified


def test_classify_keep_size_rejects_a_size_the_patches_do_not_tile(
    digits_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = _digit_png(tmp_path / "odd.png", size=9)
    assert classify(["--ckpt", str(digits_checkpoint), "--keep-size", str(odd)]) == 2
    assert f"{odd}: image size 9x9 (HxW) is not divisible by the patch size 2" in capsys.readouterr().err
    big = _digit_png(tmp_path / "big.png", size=16)  # 8 x 8 patches: positions are resampled
    assert classify(["--ckpt", str(digits_checkpoint), "--keep-size", str(big), "--top-k", "1"]) == 0


def test_classify_rejects_missing_and_foreign_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = _digit_png(tmp_path / "x.png")
    assert classify(["--ckpt", str(tmp_path / "none.ckpt"), str(image)]) == 2
    assert "does not exist" in capsys.readouterr().err
    foreign = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {}, "anyformer": {"task": "gpt", "config": {}, "optim": {}, "inference": {}}}, foreign)
    assert classify(["--ckpt", str(foreign), str(image)]) == 2
    handled = "['bert-classify', 'speech', 'speech-cnn', 'text-bow', 'vision-cnn', 'vit']"
    assert f"is a 'gpt' checkpoint; classify handles {handled}" in capsys.readouterr().err
