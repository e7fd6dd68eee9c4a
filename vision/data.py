"""Image classification data: digits (offline default), MNIST, Fashion-MNIST, CIFAR-10 or an ImageFolder.

Batches are ``(images, labels)``: images (B, C, H, W) float32, normalized with the source's
per-channel mean/std; labels (B,) long, or (B, num_classes) float class probabilities for
training batches when mixup/cutmix is on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, default_collate
from torchvision import datasets, tv_tensors
from torchvision.transforms import v2

from anyformer.core.data import fetch, resolve
from anyformer.core.train.data_order import ShuffledBatches, batch_loader, mix_seed, placement, seeded
from anyformer.vision.augment import BatchAugment

DIGITS = [str(i) for i in range(10)]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SourceInfo:
    """What is known about a source before any file is read."""

    channels: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


# Means/stds of the training images (pixels scaled to [0, 1]).
SOURCES: dict[str, SourceInfo] = {
    # scikit-learn's 8x8 digits (values 0..16, stored here as uint8 0..255), kept at 8x8.
    "digits": SourceInfo(1, 8, (0.3053,), (0.3759,), tuple(DIGITS)),
    "mnist": SourceInfo(1, 28, (0.1307,), (0.3081,), tuple(DIGITS)),
    "fashion_mnist": SourceInfo(1, 28, (0.2860,), (0.3530,), tuple(FASHION_CLASSES)),
    "cifar10": SourceInfo(3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), tuple(CIFAR10_CLASSES)),
    "imagefolder": SourceInfo(3, 0, IMAGENET_MEAN, IMAGENET_STD, ()),
}
TORCHVISION = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "cifar10": datasets.CIFAR10}
DIGITS_TEST_SIZE = 360
BATCH_AUGMENT_STREAM = 7
"""Tag of the batched augmentation's seeds, apart from the loader's item and batch seeds."""
"""Digits has no official test split: a fixed stratified 360 images (20%), the same for every seed."""


class TensorImages(Dataset[tuple[Tensor, int]]):
    """In-memory uint8 images (N, C, H, W) and labels (N,), each item passed through ``transform``."""

    def __init__(self, images: Tensor, labels: Tensor, transform: v2.Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.transform(tv_tensors.Image(self.images[index])), int(self.labels[index])


def verify_images(folder: Path) -> None:
    """Check every image of an ImageFolder-style ``folder`` before training: each file is read once
    and its structure checked (PIL's ``verify``: chunks and checksums, no decoding).

    Raises:
        ValueError: one line naming the first unreadable file and what was expected.
    """
    from PIL import Image

    for path, _ in datasets.ImageFolder(str(folder), loader=lambda path: path).samples:
        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as err:  # PIL raises many types for a damaged file
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(
                f"{path} is not a readable image ({reason}); expected a whole image file, remove or replace it"
            ) from None


class MixCollate:
    """Collates a batch, then applies MixUp or CutMix (chosen at random per batch) to it."""

    def __init__(self, transform: v2.Transform) -> None:
        self.transform = transform

    def __call__(self, items: list[tuple[Tensor, int]]) -> tuple[Tensor, Tensor]:
        return self.transform(*default_collate(items))


def load_digits_tensors() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled digits as uint8 (N, 1, 8, 8): (train images, labels, test images, labels)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8)[:, None]  # (N, 1, 8, 8)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=DIGITS_TEST_SIZE, stratify=digits.target, random_state=0
    )
    return images[train_idx], labels[train_idx], images[test_idx], labels[test_idx]


class ImageDataModule(pl.LightningDataModule):
    """Image classification with a seeded train/val split and the official test split.

    ``num_classes``, ``in_channels``, ``image_size``, ``class_names``, ``mean`` and ``std`` work right
    after construction (no file is read for the built-in sources), so the CLI can size the model.

    Sources: ``digits`` (scikit-learn's 1,797 8x8 digits, bundled, offline; a fixed stratified 360
    are the test split), ``mnist`` and ``fashion_mnist`` (torchvision, 28x28), ``cifar10`` (32x32
    RGB) and ``imagefolder`` (``root`` holds one folder per class, or ``train/`` [+ ``val/``] [+ ``test/``]
    such folders; a missing val is carved from train, a missing test is the val set).

    The torchvision sources are the datasets of the same names of :mod:`anyformer.core.data`:
    read from ``root``, else ``$ANYFORMER_DATA``, else the user cache, else downloaded by
    torchvision into that cache (``download``); their pinned files are verified.

    Args:
        source: One of ``digits``, ``mnist``, ``fashion_mnist``, ``cifar10``, ``imagefolder``.
        root: For a torchvision source, the folder to hand torchvision (holding ``MNIST/``,
            ``FashionMNIST/``, ``cifar-10-batches-py/``), first in the data lookup order; None:
            ``$ANYFORMER_DATA``, the user cache, then a download. For ``imagefolder``, the image
            folder (required).
        image_size: Side images are resized to; None keeps the source's size (required for imagefolder).
        channels: 1 (grayscale) or 3 (RGB) to convert to; None keeps the source's channels.
        mean: Per-channel mean to normalize with, one value per channel after ``channels``; None: the
            source's statistics. Set it (and ``std``) to a pretrained model's, e.g. 0.5 for timm's
            AugReg ViTs, when fine-tuning it (``model.init_from``); checkpoints carry what was used.
        std: Per-channel standard deviation, as ``mean``.
        batch_size: Images per batch.
        val_fraction: Share of the training images held out for validation (seeded).
        random_crop_padding: Pad by this many pixels and crop back at random (0: off).
        horizontal_flip: Random horizontal flips (for CIFAR-like photos, not for digits).
        rand_augment: Apply RandAugment to training images.
        mixup_alpha: MixUp's Beta(alpha, alpha) (0: off); soft labels in training batches.
        cutmix_alpha: CutMix's Beta(alpha, alpha) (0: off); with both on, one is chosen per batch.
        random_erasing: Probability of erasing a random box of each training image (0: off).
        batch_augment: Apply the random crop, flip, erasing and MixUp/CutMix to whole training
            batches on their device (``anyformer.vision.augment``) instead of per image in the
            loader; RandAugment stays per image.
        download: Allow downloading a missing torchvision dataset (into ``root`` or the user cache).
        num_workers: DataLoader worker processes.
        seed: Seed of the train/val split, and of the training order and augmentations (epoch ``e``'s
            are functions of ``(seed, e)``, :mod:`anyformer.core.train.data_order`, so a resumed fit replays them).
    """

    def __init__(
        self,
        source: str = "digits",
        root: str | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        random_crop_padding: int = 0,
        horizontal_flip: bool = False,
        rand_augment: bool = False,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        random_erasing: float = 0.0,
        batch_augment: bool = False,
        download: bool = True,
        num_workers: int = 0,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"ImageDataModule.source={source!r} is not one of {sorted(SOURCES)}")
        if source == "imagefolder" and (root is None or image_size is None):
            raise ValueError("ImageDataModule.source='imagefolder' needs `root` (the folder) and `image_size`")
        if channels not in (None, 1, 3):
            raise ValueError(f"ImageDataModule.channels must be 1, 3 or None, got {channels!r}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"ImageDataModule.val_fraction must be in (0, 1), got {val_fraction!r}")
        for name, value in [("batch_size", batch_size), ("image_size", image_size or 1)]:
            if value < 1:
                raise ValueError(f"ImageDataModule.{name} must be >= 1, got {value!r}")
        if min(random_crop_padding, mixup_alpha, cutmix_alpha, num_workers) < 0:
            raise ValueError("ImageDataModule.random_crop_padding, mixup_alpha, cutmix_alpha, num_workers must be >= 0")
        if not 0.0 <= random_erasing <= 1.0:
            raise ValueError(f"ImageDataModule.random_erasing must be a probability in [0, 1], got {random_erasing!r}")
        self.save_hyperparameters()
        info = SOURCES[source]
        self.root = None if root is None else Path(root)
        self._data_folder: Path | None = None
        self.in_channels = channels or info.channels
        self.image_size = image_size or info.size
        if source == "imagefolder":
            self.class_names = datasets.folder.find_classes(self._folder("train"))[0]
        else:
            self.class_names = list(info.class_names)
        self.num_classes = len(self.class_names)
        self.mean, self.std = self._stats(info)
        for name, given in (("mean", mean), ("std", std)):
            if given is None:
                continue
            if len(given) != self.in_channels or (name == "std" and min(given) <= 0):
                raise ValueError(
                    f"ImageDataModule.{name} must hold {self.in_channels} value(s), one per channel"
                    f"{', each > 0' if name == 'std' else ''}; got {list(given)!r}"
                )
            setattr(self, name, [float(v) for v in given])
        self.datasets: dict[str, Dataset] = {}
        self._batch_augment: BatchAugment | None = None

    def data_folder(self) -> Path:
        """The folder of a torchvision source, found (or made, downloading) by :mod:`anyformer.core.data`.

        Raises:
            DataUnavailableError: it is absent and ``download`` is off, offline or failed (a ValueError).
        """
        if self._data_folder is None:
            source = self.hparams.source
            if self.hparams.download:  # fetch runs torchvision's download when the dataset is absent
                self._data_folder = fetch(source, self.root, progress=False)
            else:
                self._data_folder = resolve(source, self.root, download=False)
        return self._data_folder

    def _stats(self, info: SourceInfo) -> tuple[list[float], list[float]]:
        """Per-channel mean/std after the channel conversion."""
        if self.in_channels == info.channels:
            return list(info.mean), list(info.std)
        if self.in_channels == 3:  # grayscale repeated into RGB
            return list(info.mean) * 3, list(info.std) * 3
        return [sum(info.mean) / 3], [sum(info.std) / 3]  # RGB to gray: a rough average

    def _folder(self, split: str) -> Path | None:
        """root/<split> if it is a folder; for ``train``, root itself when it has no train/ folder."""
        assert self.root is not None  # imagefolder requires root
        path = self.root / split
        if path.is_dir():
            return path
        if split != "train":
            return None
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        return self.root

    # -- transforms ---------------------------------------------------------------------
    def _convert(self) -> list[v2.Transform]:
        """To a tensor image with the wanted channels and size (shared by training and inference)."""
        ops: list[v2.Transform] = [v2.ToImage()]
        if self.in_channels != SOURCES[self.hparams.source].channels or self.hparams.source == "imagefolder":
            ops.append(v2.Grayscale(1) if self.in_channels == 1 else v2.RGB())
        if self.image_size != SOURCES[self.hparams.source].size:
            ops.append(v2.Resize((self.image_size, self.image_size), antialias=True))
        return ops

    def _normalize(self) -> list[v2.Transform]:
        return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]

    def train_transform(self) -> v2.Transform:
        hp, ops = self.hparams, self._convert()
        if hp.random_crop_padding and not hp.batch_augment:
            ops.append(v2.RandomCrop(self.image_size, padding=hp.random_crop_padding))
        if hp.horizontal_flip and not hp.batch_augment:
            ops.append(v2.RandomHorizontalFlip())
        if hp.rand_augment:
            ops.append(v2.RandAugment())
        ops += self._normalize()
        if hp.random_erasing and not hp.batch_augment:
            ops.append(v2.RandomErasing(hp.random_erasing, value=0))  # after normalizing: 0 is the mean pixel
        return v2.Compose(ops)

    def batch_augment(self) -> BatchAugment | None:
        """The batched training augmentation (``batch_augment=True``), or None."""
        hp = self.hparams
        if not hp.batch_augment:
            return None
        fill = [-m / s for m, s in zip(self.mean, self.std)]  # a black pixel, normalized: as v2.RandomCrop pads
        mix = self._mix()
        return BatchAugment(
            hp.random_crop_padding, fill, hp.horizontal_flip, hp.random_erasing, None if mix is None else mix.transform
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # Training batches only, on the model's device; validation and test images stay as they are.
        trainer = self.trainer
        if trainer is None or not trainer.training or not self.hparams.batch_augment:
            return batch
        if self._batch_augment is None:
            self._batch_augment = self.batch_augment()
        # Drawn from the batch's place (seed, epoch, batch, rank), as every draw of the loader
        # (anyformer.core.train.data_order): a resumed fit replays it, and dropout's stream is untouched.
        # The loop counts the batch after this hook: batch_idx is then the previous one's (-1 first).
        index = trainer.fit_loop.epoch_loop.batch_idx + 1
        place = (self.hparams.seed, BATCH_AUGMENT_STREAM, trainer.current_epoch, index)
        with seeded(mix_seed(*place, trainer.global_rank)):
            return self._batch_augment(*batch)

    def eval_transform(self) -> v2.Transform:
        return v2.Compose(self._convert() + self._normalize())

    # -- loading ------------------------------------------------------------------------
    def _torchvision(self, train: bool) -> Any:
        """A torchvision dataset, read from :meth:`data_folder` (downloaded there only when absent)."""
        return TORCHVISION[self.hparams.source](str(self.data_folder()), train=train, download=False)

    def _tensors(self, train: bool) -> tuple[Tensor, Tensor]:
        """uint8 (N, C, H, W) images and (N,) labels of a built-in source's train or test split."""
        source = self.hparams.source
        if source == "digits":
            train_x, train_y, test_x, test_y = load_digits_tensors()
            return (train_x, train_y) if train else (test_x, test_y)
        data = self._torchvision(train)
        images = torch.as_tensor(data.data)
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
        return images.contiguous(), torch.as_tensor(data.targets).long()

    def prepare_data(self) -> None:
        if self.hparams.source in TORCHVISION:
            self._torchvision(train=True)
            self._torchvision(train=False)

    def _split(self, n: int) -> tuple[list[int], list[int]]:
        """Seeded (train, val) index lists over n training images."""
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.hparams.seed)).tolist()
        n_val = max(1, round(n * self.hparams.val_fraction))
        return order[n_val:], order[:n_val]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train_tf, eval_tf = self.train_transform(), self.eval_transform()
        if self.hparams.source == "imagefolder":
            self._setup_folder(train_tf, eval_tf)
            return
        images, labels = self._tensors(train=True)
        train_idx, val_idx = self._split(len(labels))
        self.datasets["train"] = Subset(TensorImages(images, labels, train_tf), train_idx)
        self.datasets["val"] = Subset(TensorImages(images, labels, eval_tf), val_idx)
        self.datasets["test"] = TensorImages(*self._tensors(train=False), eval_tf)

    def _setup_folder(self, train_tf: v2.Transform, eval_tf: v2.Transform) -> None:
        train_dir, val_dir, test_dir = self._folder("train"), self._folder("val"), self._folder("test")
        for folder in {train_dir, val_dir, test_dir} - {None}:
            verify_images(folder)
        if val_dir is not None:
            self.datasets["train"] = datasets.ImageFolder(str(train_dir), transform=train_tf)
            self.datasets["val"] = datasets.ImageFolder(str(val_dir), transform=eval_tf)
        else:
            train_idx, val_idx = self._split(len(datasets.ImageFolder(str(train_dir))))
            self.datasets["train"] = Subset(datasets.ImageFolder(str(train_dir), transform=train_tf), train_idx)
            self.datasets["val"] = Subset(datasets.ImageFolder(str(train_dir), transform=eval_tf), val_idx)
        if test_dir is not None:
            self.datasets["test"] = datasets.ImageFolder(str(test_dir), transform=eval_tf)
        else:
            self.datasets["test"] = self.datasets["val"]

    # -- loaders ------------------------------------------------------------------------
    def _mix(self) -> MixCollate | None:
        hp = self.hparams
        kinds = ((v2.MixUp, hp.mixup_alpha), (v2.CutMix, hp.cutmix_alpha))
        mixers = [kind(alpha=alpha, num_classes=self.num_classes) for kind, alpha in kinds if alpha > 0]
        return MixCollate(v2.RandomChoice(mixers)) if mixers else None

    def _loader(self, split: str, shuffle: bool = False, collate: Any = None) -> DataLoader:
        self.setup()
        hp, dataset = self.hparams, self.datasets[split]
        if shuffle:  # epoch e's order and augmentations are functions of (seed, e): a resumed fit replays them
            drop_last = len(dataset) > hp.batch_size
            sampler = ShuffledBatches(len(dataset), hp.batch_size, seed=hp.seed, drop_last=drop_last, **placement(self))
            return batch_loader(dataset, sampler, collate, hp.num_workers)
        return DataLoader(
            dataset,
            batch_size=hp.batch_size,
            num_workers=hp.num_workers,
            persistent_workers=hp.num_workers > 0,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(hp.seed),  # the workers' base seed, not the global generator's
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, collate=None if self.hparams.batch_augment else self._mix())

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
