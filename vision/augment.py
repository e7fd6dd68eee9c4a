"""Batched training augmentation on image tensors: random crop, horizontal flip, random erasing,
then MixUp / CutMix, applied to a whole (B, C, H, W) batch at once on its device.

Why batched: MNIST-sized datasets sit in memory as one uint8 tensor, and a per-image
``torchvision.transforms.v2`` pipeline in DataLoader workers spends more time in Python per
image than the model spends on it, on the same two cores the model trains on. One crop, one flip
and one erasing of the whole batch are a few tensor ops (the ``GPU-style`` augmentation of DeiT's
and timm's loaders); ``ImageDataModule(batch_augment=True)`` runs them in its
``on_after_batch_transfer`` hook, on the device the model runs on.

Each op draws its randomness per image from ``generator`` (``None``: torch's global generator,
seeded by ``seed_everything``), and matches its ``torchvision.transforms.v2`` counterpart:
``RandomCrop(size, padding, fill)``, ``RandomHorizontalFlip()``, ``RandomErasing(p, scale,
ratio, value=0)`` (after normalization, 0 is the mean pixel), except that an erasing box too big for
the image is clipped to it instead of drawn again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Mix = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _uniform(n: int, low: float, high: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """(n,) floats uniform in [low, high), drawn on the CPU (so a CPU generator serves any device)."""
    values = torch.rand(n, generator=generator) * (high - low) + low
    return values.to(like.device)


def crop_at(images: Tensor, offsets: Tensor, padding: int, fill: Sequence[float]) -> Tensor:
    """Pad each side by ``padding`` with the per-channel ``fill`` and cut each image back to its size
    at its own (top, left) offset.

    Args:
        images: (B, C, H, W).
        offsets: (B, 2) long, each in [0, 2 * padding].

    Returns:
        (B, C, H, W): image b is ``padded[b, :, top:top + H, left:left + W]``.
    """
    b, c, h, w = images.shape
    fill_t = torch.as_tensor(fill, dtype=images.dtype, device=images.device).reshape(1, c, 1, 1)
    # Pad with zeros, then add the fill where the padding is: F.pad takes one constant for all channels.
    padded = F.pad(images - fill_t, (padding,) * 4) + fill_t  # (B, C, H + 2p, W + 2p)
    offsets = offsets.to(images.device)
    rows = offsets[:, :1] + torch.arange(h, device=images.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=images.device)  # (B, W)
    batch = torch.arange(b, device=images.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def random_crop(
    images: Tensor, padding: int, fill: Sequence[float], generator: torch.Generator | None = None
) -> Tensor:
    """``v2.RandomCrop(size, padding, fill)`` per image of a (B, C, H, W) batch."""
    if padding == 0:
        return images
    offsets = torch.randint(0, 2 * padding + 1, (len(images), 2), generator=generator)
    return crop_at(images, offsets, padding, fill)


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``v2.RandomHorizontalFlip()`` per image: each image mirrored left-right with probability 1/2."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def erase_boxes(
    images: Tensor, p: float, scale: tuple[float, float], ratio: tuple[float, float], generator: torch.Generator | None
) -> Tensor:
    """The (B, H, W) boolean boxes ``random_erasing`` sets to 0 (all False for the images left alone)."""
    b, _, h, w = images.shape
    area = _uniform(b, *scale, images, generator) * (h * w)
    log_ratio = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), images, generator).exp()  # log-uniform, as v2
    box_h = (area * log_ratio).sqrt().round().clamp(1, h).long()
    box_w = (area / log_ratio).sqrt().round().clamp(1, w).long()
    top = (_uniform(b, 0, 1, images, generator) * (h - box_h + 1)).long()  # uniform over the valid positions
    left = (_uniform(b, 0, 1, images, generator) * (w - box_w + 1)).long()
    erase = _uniform(b, 0, 1, images, generator) < p
    rows = torch.arange(h, device=images.device)[None]  # (1, H)
    cols = torch.arange(w, device=images.device)[None]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_h)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + box_w)[:, None])  # (B, W)
    return in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (B, H, W)


def random_erasing(
    images: Tensor,
    p: float,
    scale: tuple[float, float] = (0.02, 0.33),
    ratio: tuple[float, float] = (0.3, 3.3),
    generator: torch.Generator | None = None,
) -> Tensor:
    """``v2.RandomErasing(p, scale, ratio, value=0)`` per image: with probability ``p`` a box of
    ``scale`` of the area and aspect ``ratio`` (height / width, log-uniform) is set to 0 in every channel."""
    if p == 0:
        return images
    boxes = erase_boxes(images, p, scale, ratio, generator)
    return images.masked_fill(boxes[:, None], 0.0)


class BatchAugment:
    """Crop, flip, erase, then mix a normalized training batch.

    Args:
        crop_padding: ``random_crop`` padding (0: no crop).
        fill: per-channel value of the padding: the normalized black pixel, ``-mean / std``, so a
            crop pads as ``v2.RandomCrop`` does before normalization.
        flip: ``random_flip``.
        erasing: ``random_erasing`` probability (0: off).
        mix: a batch transform (images, labels) -> (images, soft labels), e.g. ``v2.MixUp``; None: off.
        generator: the random source (None: torch's global generator).
    """

    def __init__(
        self,
        crop_padding: int = 0,
        fill: Sequence[float] = (0.0,),
        flip: bool = False,
        erasing: float = 0.0,
        mix: Mix | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if crop_padding < 0 or not 0.0 <= erasing <= 1.0:
            raise ValueError(f"BatchAugment: crop_padding >= 0 and erasing in [0, 1], got {crop_padding}, {erasing}")
        self.crop_padding, self.fill, self.flip, self.erasing = crop_padding, list(fill), flip, erasing
        self.mix, self.generator = mix, generator

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C, H, W) normalized images, (B,) labels -> augmented images, labels ((B, classes) when mixed)."""
        images = random_crop(images, self.crop_padding, self.fill, self.generator)
        if self.flip:
            images = random_flip(images, self.generator)
        images = random_erasing(images, self.erasing, generator=self.generator)
        if self.mix is not None:
            images, labels = self.mix(images, labels)
        return images, labels
