"""Batched augmentation (anyformer.vision.augment) against torchvision's per-image transforms, and
its place in the data module: training batches only, after the transfer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from anyformer.vision.augment import BatchAugment, crop_at, erase_boxes, random_crop, random_erasing, random_flip
from anyformer.vision.data import ImageDataModule


def test_crop_at_matches_torchvision_pad_and_crop_per_image() -> None:
    torch.manual_seed(0)
    images = torch.randn(5, 3, 7, 9)
    fill = [-1.0, 0.5, 2.0]
    offsets = torch.tensor([[0, 0], [4, 4], [1, 3], [4, 0], [2, 2]])
    out = crop_at(images, offsets, 2, fill)
    for image, (top, left), cropped in zip(images, offsets.tolist(), out):
        padded = TF.pad(image, [2], fill=fill)  # (C, H + 4, W + 4), each channel padded with its fill
        torch.testing.assert_close(cropped, TF.crop(padded, top, left, 7, 9))
    torch.testing.assert_close(out[4], images[4])  # the centred offset is the image itself


def test_random_crop_draws_every_offset_and_keeps_the_size() -> None:
    images = torch.arange(16.0).reshape(1, 1, 4, 4).expand(400, 1, 4, 4)
    out = random_crop(images, 1, [0.0], torch.Generator().manual_seed(0))
    assert out.shape == images.shape
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) == 9  # (2p + 1)^2 offsets, all drawn
    assert random_crop(images, 0, [0.0]) is images


def test_random_flip_mirrors_about_half_of_the_images() -> None:
    images = torch.randn(1000, 1, 3, 5)
    out = random_flip(images, torch.Generator().manual_seed(0))
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert bool((flipped | kept).all()) and 400 < int(flipped.sum()) < 600


def test_random_erasing_zeroes_one_box_of_the_drawn_size() -> None:
    images = torch.randn(500, 2, 28, 28) + 10  # no pixel is 0 before erasing
    generator = torch.Generator().manual_seed(0)
    out = random_erasing(images, p=1.0, generator=generator)
    for image, erased in zip(images, out):
        zero = erased == 0
        assert torch.equal(zero[0], zero[1])  # the same box in every channel
        rows, cols = zero[0].any(1).nonzero().flatten(), zero[0].any(0).nonzero().flatten()
        box = zero[0][rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert bool(box.all()) and int(zero[0].sum()) == box.numel()  # one filled rectangle
        assert 0.01 <= box.numel() / 28**2 <= 0.34  # scale (0.02, 0.33), rounded to whole pixels
        torch.testing.assert_close(erased[~zero], image[~zero])
    half = erase_boxes(images, 0.5, (0.02, 0.33), (0.3, 3.3), torch.Generator().manual_seed(1))
    assert 200 < int(half.flatten(1).any(1).sum()) < 300
    assert random_erasing(images, p=0.0) is images


def test_batch_augment_mixes_labels_into_probabilities() -> None:
    augment = BatchAugment(2, [0.0], flip=True, erasing=0.25, mix=v2.MixUp(alpha=1.0, num_classes=4))
    images, labels = augment(torch.randn(8, 1, 6, 6), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    assert images.shape == (8, 1, 6, 6) and labels.shape == (8, 4)
    torch.testing.assert_close(labels.sum(-1), torch.ones(8))
    with pytest.raises(ValueError, match="erasing in"):
        BatchAugment(erasing=1.5)


def fit_at(batch_idx: int, epoch: int = 0) -> SimpleNamespace:
    """The trainer attributes the data module reads while fitting batch ``batch_idx`` of ``epoch``."""
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=batch_idx))
    return SimpleNamespace(training=True, current_epoch=epoch, global_rank=0, fit_loop=loop)


def test_data_module_augments_training_batches_only_after_the_transfer() -> None:
    data = ImageDataModule(
        source="digits", batch_size=32, batch_augment=True, random_crop_padding=1, random_erasing=1.0, mixup_alpha=0.5
    )
    data.setup()
    # No per-image crop or erasing in the loader, and no mixing collate: the hook does them.
    assert not any(isinstance(op, (v2.RandomCrop, v2.RandomErasing)) for op in data.train_transform().transforms)
    images, labels = next(iter(data.train_dataloader()))
    assert labels.shape == (32,)
    data.trainer = SimpleNamespace(training=False)
    assert data.on_after_batch_transfer((images, labels), 0)[0] is images
    data.trainer = fit_at(batch_idx=3)
    state = torch.get_rng_state()
    augmented, mixed = data.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(torch.get_rng_state(), state)  # drawn from the batch's place, not the global stream
    assert augmented.shape == images.shape and mixed.shape == (32, 10)
    assert not torch.equal(augmented, images)
    # A function of the place (seed, epoch, batch): a resumed fit replays it; the next batch differs.
    torch.testing.assert_close(data.on_after_batch_transfer((images, labels), 0)[0], augmented, rtol=0, atol=0)
    data.trainer = fit_at(batch_idx=4)
    assert not torch.equal(data.on_after_batch_transfer((images, labels), 0)[0], augmented)
    black = torch.full_like(images[:1], -data.mean[0] / data.std[0])  # the padding is the normalized black pixel
    assert data.batch_augment().fill == pytest.approx([float(black[0, 0, 0, 0])])


def test_per_image_erasing_runs_in_the_loader_without_batch_augment() -> None:
    data = ImageDataModule(source="digits", random_erasing=0.5)
    assert isinstance(data.train_transform().transforms[-1], v2.RandomErasing)
    with pytest.raises(ValueError, match="random_erasing must be a probability"):
        ImageDataModule(source="digits", random_erasing=2.0)
