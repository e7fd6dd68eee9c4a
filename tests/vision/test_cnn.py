"""The CNN image baseline: shapes for gray/RGB and odd sizes, configs that mirror the ViT's data,
then a tiny fit and test on digits through `anyformer vision-cnn` and classify from the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from anyformer.core.cli.classify import main as classify
from anyformer.core.cli.main import main
from anyformer.core.train.base import OptimConfig, dataclass_from_dict
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.cnn import ImageCNN, ImageCNNConfig
from anyformer.vision.data import ImageDataModule
from anyformer.vision.vit_task import ImageCNNModule
from tests.helpers import read_metrics

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "experiments" / "vision").glob("cnn_*.yaml"))
DIGITS = REPO / "experiments" / "vision" / "cnn_digits.yaml"
FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.mark.parametrize(
    ("channels", "size"), [(1, (28, 28)), (3, (32, 32)), (1, (7, 9)), (3, (5, 3)), (1, (1, 1))], ids=str
)
def test_gray_rgb_and_odd_sizes_give_logits_and_a_rounded_up_grid(channels, size):
    cfg = ImageCNNConfig(image_size=28, in_channels=channels, num_classes=4, channels=[4, 8, 16])
    model = ImageCNN(cfg).eval()
    images = torch.randn(2, channels, *size)
    with torch.no_grad():
        grid = model.blocks(images)
        logits = model(images)
    height, width = size
    assert grid.shape == (2, 16, math.ceil(height / 8), math.ceil(width / 8))  # three blocks, pooling rounds up
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, model.head(grid.mean(dim=(2, 3))))


def test_eval_logits_of_an_image_do_not_depend_on_its_batch():
    torch.manual_seed(0)
    model = ImageCNN(ImageCNNConfig(in_channels=3, num_classes=5, channels=[4, 8]))
    model(torch.randn(8, 3, 12, 12) * 3 + 1)  # training mode: moves the batch-norm running statistics
    model.eval()
    images = torch.randn(4, 3, 12, 12)
    with torch.no_grad():
        alone = torch.cat([model(image[None]) for image in images])
        torch.testing.assert_close(model(images), alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"channels": []}, r"ImageCNNConfig.channels must be a non-empty list of ints >= 1"),
        ({"in_channels": 0}, r"ImageCNNConfig.in_channels must be >= 1"),
        ({"image_size": (0, 4)}, r"ImageCNNConfig.image_size must be >= 1"),
        ({"dropout": 1.0}, r"ImageCNNConfig.dropout must be in \[0, 1\)"),
    ],
)
def test_bad_config_names_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        ImageCNNConfig(**overrides)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_config_mirrors_its_vit_data_and_builds(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("#") and f"anyformer vision-cnn fit --config experiments/vision/{path.name}" in text
    assert "Results:" in text or "no figure of ours" in text  # where its figure appears (tests/test_figures.py)
    cfg = yaml.safe_load(text)
    twin = path.with_name(path.name.replace("cnn_", "vit_", 1))
    if twin.exists():  # a baseline; a teacher (cnn_teacher_*) has its own recipe and budget share
        vit = yaml.safe_load(twin.read_text())
        assert cfg["data"] == vit["data"] and cfg["seed_everything"] == vit["seed_everything"]
        assert cfg["trainer"]["max_epochs"] == vit["trainer"]["max_epochs"]
        assert cfg["trainer"].get("max_time") == vit["trainer"].get("max_time")
    data = ImageDataModule(**cfg["data"])  # constructing reads no file
    sizes = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size}
    config = dataclass_from_dict(ImageCNNConfig, cfg["model"]["config"] | sizes)
    module = ImageCNNModule(
        config, dataclass_from_dict(OptimConfig, cfg["model"]["optim"]), cfg["model"]["label_smoothing"]
    )
    assert module(torch.randn(2, data.in_channels, data.image_size, data.image_size)).shape == (2, data.num_classes)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three epochs (60 steps) of the digits config, then its test, through the CLI in a temporary folder."""
    workdir = tmp_path_factory.mktemp("cnn_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        assert main(["vision-cnn", "fit", "--config", str(DIGITS), "--trainer.max_epochs=3", *FAST]) == 0
        checkpoint = "runs/cnn_digits/checkpoints/last.ckpt"
        assert main(["vision-cnn", "test", "--config", str(DIGITS), f"--ckpt_path={checkpoint}", *FAST]) == 0
    return workdir / "runs" / "cnn_digits"


def test_fit_logs_the_vit_columns_and_learns(run: Path) -> None:
    metrics = read_metrics(run / "metrics.csv")
    assert len(metrics["val_acc"]) == len(metrics["val_loss"]) == 3
    assert metrics["val_acc"][-1] > 0.8 and metrics["val_loss"][-1] < metrics["val_loss"][0]
    assert "train_acc" in metrics


def test_logged_test_acc_is_the_checkpoint_accuracy_on_the_test_split(run: Path) -> None:
    module = load_task(run / "checkpoints" / "last.ckpt", tasks=("vision-cnn",))
    assert (module.config.image_size, module.config.in_channels, module.class_names) == (8, 1, list("0123456789"))
    data = ImageDataModule(source="digits", batch_size=64)
    with torch.no_grad():
        correct = sum((module(images).argmax(-1) == labels).sum().item() for images, labels in data.test_dataloader())
    logged = read_metrics(run / "test" / "metrics.csv")["test_acc"]
    assert logged == [pytest.approx(correct / 360, abs=1e-6)]


def test_classify_reads_a_png_as_the_test_split_does(run: Path, tmp_path: Path, capsys) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    module = load_task(ckpt, tasks=("vision-cnn",))
    data = ImageDataModule(source="digits")
    data.setup()
    image, _ = data.datasets["test"][0]  # (1, 8, 8) normalized
    png = tmp_path / "digit.png"
    Image.fromarray(data.datasets["test"].images[0, 0].numpy()).save(png)  # the same uint8 pixels, lossless
    assert classify(["--ckpt", ckpt, str(png), "--top-k", "10"]) == 0
    printed = {line.split()[1]: float(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]}
    with torch.no_grad():
        expected = module(image[None]).softmax(-1)[0]
    assert printed == {name: pytest.approx(p, abs=1e-4) for name, p in zip(module.class_names, expected.tolist())}


def test_classify_takes_any_size_rgb_and_refuses_an_attention_map(run: Path, tmp_path: Path, capsys) -> None:
    ckpt = str(run / "checkpoints" / "last.ckpt")
    odd = tmp_path / "odd.png"
    Image.new("RGB", (9, 13), (200, 10, 10)).save(odd)  # converted to gray; kept at 13x9
    assert classify(["--ckpt", ckpt, "--keep-size", str(odd), "--top-k", "3"]) == 0
    probs = [float(line.split()[0]) for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    assert classify(["--ckpt", ckpt, str(odd), "--attention-map", str(tmp_path / "map.png")]) == 2
    assert "--attention-map needs a 'vit' checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "map.png").exists()
