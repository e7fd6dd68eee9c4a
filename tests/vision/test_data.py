"""Image data: sizes known before setup, seeded disjoint splits, normalization, augmentation, sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anyformer.vision.data import DIGITS_TEST_SIZE, ImageDataModule
from tests.helpers import data_path


@pytest.fixture(scope="module")
def digits() -> ImageDataModule:
    data = ImageDataModule(source="digits", batch_size=32)
    data.setup("fit")
    return data


def test_sizes_are_known_before_setup() -> None:
    data = ImageDataModule(source="cifar10", root="/nonexistent")  # nothing is read or downloaded yet
    assert (data.num_classes, data.in_channels, data.image_size) == (10, 3, 32)
    assert data.class_names[0] == "airplane" and len(data.mean) == len(data.std) == 3
    fashion = ImageDataModule(source="fashion_mnist", image_size=32, channels=3)
    assert (fashion.in_channels, fashion.image_size, fashion.class_names[9]) == (3, 32, "Ankle boot")
    assert len(fashion.mean) == 3


def test_digits_splits_are_disjoint_seeded_and_fixed_for_test(digits: ImageDataModule) -> None:
    train, val, test = digits.datasets["train"], digits.datasets["val"], digits.datasets["test"]
    assert len(test) == DIGITS_TEST_SIZE
    assert len(train) + len(val) == 1797 - DIGITS_TEST_SIZE
    assert len(val) == round(0.1 * (1797 - DIGITS_TEST_SIZE))
    assert not set(train.indices) & set(val.indices)
    again = ImageDataModule(source="digits", seed=digits.hparams.seed)
    again.setup()
    assert again.datasets["val"].indices == val.indices
    other = ImageDataModule(source="digits", seed=1)
    other.setup()
    assert other.datasets["val"].indices != val.indices
    assert torch.equal(other.datasets["test"].images, test.images)  # test split independent of the seed


def test_digits_batches_are_normalized_images_and_long_labels(digits: ImageDataModule) -> None:
    images, labels = next(iter(digits.val_dataloader()))
    assert images.shape == (32, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (32,) and labels.dtype == torch.long
    everything = torch.cat([x for x, _ in digits.val_dataloader()])
    assert abs(everything.mean().item()) < 0.15 and abs(everything.std().item() - 1) < 0.15
    # the pixel a sample stores, scaled to [0, 1] and normalized, is what the loader returns
    raw = digits.datasets["val"].dataset.images[digits.datasets["val"].indices[0]].float() / 255
    torch.testing.assert_close(images[0], (raw - digits.mean[0]) / digits.std[0])


def test_random_crop_shifts_content_without_changing_shape() -> None:
    data = ImageDataModule(source="digits", random_crop_padding=2, batch_size=64)
    data.setup()
    plain = data.datasets["val"].dataset.transform
    augmented = data.datasets["train"].dataset.transform
    torch.manual_seed(0)
    image = data.datasets["train"].dataset.images[0]
    outputs = {tuple(augmented(image).flatten().tolist()) for _ in range(20)}
    assert len(outputs) > 1  # random
    assert augmented(image).shape == plain(image).shape == (1, 8, 8)


def test_mixup_gives_soft_labels_that_sum_to_one() -> None:
    data = ImageDataModule(source="digits", mixup_alpha=0.8, cutmix_alpha=1.0, batch_size=16)
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (16, 1, 8, 8)
    assert labels.shape == (16, 10) and labels.dtype == torch.float32
    torch.testing.assert_close(labels.sum(-1), torch.ones(16))


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="source='svhn' is not one of"):
        ImageDataModule(source="svhn")
    with pytest.raises(ValueError, match="val_fraction"):
        ImageDataModule(val_fraction=1.5)
    with pytest.raises(ValueError, match="needs `root`"):
        ImageDataModule(source="imagefolder")


def _write_folder(root: Path, classes: list[str], per_class: int) -> None:
    rng = np.random.default_rng(0)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 50, (10, 14, 3)) + 200 * label
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


def test_imagefolder_with_a_seeded_split(tmp_path: Path) -> None:
    _write_folder(tmp_path, ["cat", "dog"], per_class=5)
    data = ImageDataModule(source="imagefolder", root=str(tmp_path), image_size=8, channels=1, batch_size=4)
    assert (data.class_names, data.num_classes, data.in_channels, data.image_size) == (["cat", "dog"], 2, 1, 8)
    data.setup()
    assert len(data.datasets["train"]) + len(data.datasets["val"]) == 10
    assert data.datasets["test"] is data.datasets["val"]
    images, labels = next(iter(data.train_dataloader()))
    assert images.shape == (4, 1, 8, 8) and set(labels.tolist()) <= {0, 1}


def test_imagefolder_with_train_val_test_folders(tmp_path: Path) -> None:
    for split in ("train", "val", "test"):
        _write_folder(tmp_path / split, ["a", "b", "c"], per_class=2)
    data = ImageDataModule(source="imagefolder", root=str(tmp_path), image_size=16, batch_size=3)
    data.setup()
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [6, 6, 6]
    images, _ = next(iter(data.test_dataloader()))
    assert images.shape == (3, 3, 16, 16)


@pytest.mark.parametrize(("source", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_torchvision_sources_from_anyformer_data(source: str, folder: str) -> None:
    torchvision = data_path(f"torchvision/{folder}/raw").parents[1]
    data = ImageDataModule(source=source, download=False, batch_size=8)
    assert data.data_folder() == torchvision  # found through $ANYFORMER_DATA
    data.setup()
    assert [len(data.datasets[s]) for s in ("train", "val", "test")] == [54_000, 6_000, 10_000]
    images, labels = next(iter(data.test_dataloader()))
    assert images.shape == (8, 1, 28, 28) and labels.dtype == torch.long
    assert 0 <= labels.min() and labels.max() < 10
