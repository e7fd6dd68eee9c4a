"""Lightning data module for spoken-word classification.

Batches are ``{"waveform": (B, T) float32, "label": (B,) int64}`` with T fixed by
``duration_s``. The model computes the spectrogram itself (``anyformer.speech.features``), so it can
apply SpecAugment on the device; this module only perturbs waveforms (random placement in the
window, time shift and noise) for the training split when ``augment`` is on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from anyformer.speech.audio import fit_duration
from anyformer.speech.augment import WaveAugment, WaveAugmentConfig
from anyformer.speech.features import SpectrogramConfig, fit_normalization
from anyformer.speech.sources import SOURCES, ClipSet, load_source

logger = logging.getLogger(__name__)

SPLITS = ("official", "speaker")
NORMALIZATION_CLIPS = 2000
"""Training clips (at most) over which the feature mean and std are measured."""


class ClipDataset(Dataset):
    """Fixed-length clips drawn from a ``ClipSet``, optionally augmented."""

    def __init__(
        self,
        clips: ClipSet,
        indices: Sequence[int],
        n_samples: int,
        augment: WaveAugment | None = None,
        seed: int = 0,
    ) -> None:
        self.clips = clips
        self.indices = list(indices)
        self.n_samples = n_samples
        self.augment = augment
        self.seed = seed
        self._generator: torch.Generator | None = None
        self._generator_seed: int | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.indices[item]
        wave = self.clips.waves[index]
        if self.augment is None:
            wave = fit_duration(wave, self.n_samples, "center")
        else:
            generator = self._worker_generator()
            wave = fit_duration(wave, self.n_samples, "random", generator)
            wave = self.augment(wave, generator)
        return {"waveform": wave, "label": torch.tensor(self.clips.labels[index], dtype=torch.long)}

    def _worker_generator(self) -> torch.Generator:
        # One stream per DataLoader worker process. Worker seeds derive from the loader's own
        # seeded generator, so workers differ from each other and runs are reproducible.
        info = get_worker_info()
        seed = self.seed if info is None else info.seed
        if self._generator is None or self._generator_seed != seed:
            self._generator = torch.Generator().manual_seed(seed)
            self._generator_seed = seed
        return self._generator


def split_indices(
    clips: ClipSet, split: str, test_speaker: str | None, val_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Assign every clip to ``train``, ``val`` or ``test``.

    Args:
        clips: All clips of a source.
        split: ``official``: the source's own test (and validation, if any) set; ``speaker``:
            every clip of ``test_speaker`` is the test set.
        test_speaker: Speaker held out by the ``speaker`` split.
        val_fraction: Share of the non-test clips drawn at random for validation, when the
            source defines no validation set.
        seed: Seed of that draw.

    Returns:
        Sorted clip indices per part.
    """
    if split == "official":
        test = [i for i, part in enumerate(clips.official) if part == "test"]
        val = [i for i, part in enumerate(clips.official) if part == "val"]
        rest = [i for i, part in enumerate(clips.official) if part == "train"]
    elif split == "speaker":
        speakers = sorted(set(clips.speakers))
        if test_speaker not in speakers:
            raise ValueError(f"split='speaker' needs test_speaker, one of {speakers}; got {test_speaker!r}")
        test = [i for i, speaker in enumerate(clips.speakers) if speaker == test_speaker]
        val = []
        rest = [i for i, speaker in enumerate(clips.speakers) if speaker != test_speaker]
    else:
        raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
    if not val:
        order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = round(val_fraction * len(rest))
        val = sorted(rest[i] for i in order[:n_val])
        rest = sorted(rest[i] for i in order[n_val:])
    return {"train": rest, "val": val, "test": test}


class SpeechDataModule(pl.LightningDataModule):
    """Spoken-word clips as fixed-length waveform batches.

    Args:
        source: ``synthetic`` (eSpeak NG digits, offline), ``fsdd``, ``folder`` or
            ``speechcommands`` (see ``anyformer.speech.sources``).
        root: Where the source lives: for ``fsdd`` and ``speechcommands`` the dataset's folder,
            first in the lookup order of :mod:`anyformer.core.data` (None: ``$ANYFORMER_DATA``, the
            user cache, then a download); for ``folder`` the folder of clips.
        split: ``official`` or ``speaker`` (hold ``test_speaker`` out).
        test_speaker: Speaker of the test set for ``split="speaker"``.
        sample_rate: Rate of the waveforms, in Hz.
        duration_s: Length every clip is cropped or padded to.
        batch_size: Clips per batch.
        num_workers: DataLoader worker processes.
        augment: Perturb training waveforms (random placement, shift, noise).
        val_fraction: Share of training clips held out for validation, for sources without an
            official validation set.
        seed: Seed of the validation draw, the shuffling, the augmentation and the synthetic set.
        synthetic_per_class: Clips per digit of the ``synthetic`` source.
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        split: str = "official",
        test_speaker: str | None = None,
        sample_rate: int = 8000,
        duration_s: float = 1.0,
        batch_size: int = 32,
        num_workers: int = 0,
        augment: bool = True,
        val_fraction: float = 0.1,
        seed: int = 0,
        synthetic_per_class: int = 200,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source={source!r} is not one of {list(SOURCES)}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
        if split == "speaker" and test_speaker is None:
            raise ValueError("split='speaker' needs test_speaker")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        self.save_hyperparameters()
        self.source = source
        self.root = None if root is None else Path(root)
        self.split = split
        self.test_speaker = test_speaker
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.augment = augment
        self.val_fraction = val_fraction
        self.seed = seed
        self.synthetic_per_class = synthetic_per_class
        # Frames = tokens: the spectrogram geometry is fixed here, the normalization measured later.
        self._base_spectrogram = SpectrogramConfig(sample_rate=sample_rate, duration_s=duration_s)
        self._clips: ClipSet | None = None
        self._parts: dict[str, list[int]] | None = None
        self._spectrogram: SpectrogramConfig | None = None
        self.datasets: dict[str, ClipDataset] = {}

    @property
    def num_classes(self) -> int:
        """Number of classes of the source."""
        return len(self.class_names)

    @property
    def class_names(self) -> list[str]:
        """Name of each class index."""
        return self._load()[0].class_names

    @property
    def spectrogram_config(self) -> SpectrogramConfig:
        """Front end for the model, normalized with statistics of the training clips."""
        if self._spectrogram is None:
            clips, parts = self._load()
            train = parts["train"]
            generator = torch.Generator().manual_seed(self.seed)
            sample = [train[i] for i in torch.randperm(len(train), generator=generator)[:NORMALIZATION_CLIPS]]
            n_samples = self._base_spectrogram.n_samples
            waves = torch.stack([fit_duration(clips.waves[i], n_samples) for i in sample])  # (N, T)
            self._spectrogram = fit_normalization(self._base_spectrogram, waves)
            logger.info("Log-mel mean %.3f, std %.3f", self._spectrogram.mean, self._spectrogram.std)
        return dataclasses.replace(self._spectrogram)

    def prepare_data(self) -> None:
        """Download or synthesize the source once, before the processes split up."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        """Build the train, val and test datasets."""
        clips, parts = self._load()
        n_samples = self._base_spectrogram.n_samples
        wave_augment = WaveAugment(WaveAugmentConfig(), self._base_spectrogram.sample_rate) if self.augment else None
        self.datasets = {
            "train": ClipDataset(clips, parts["train"], n_samples, wave_augment, self.seed),
            "val": ClipDataset(clips, parts["val"], n_samples),
            "test": ClipDataset(clips, parts["test"], n_samples),
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last partial batch is kept."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader("test", shuffle=False)

    def _loader(self, part: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        return DataLoader(
            self.datasets[part],
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            # Seeds the shuffling and the workers' augmentation streams.
            generator=torch.Generator().manual_seed(self.seed),
        )

    def _load(self) -> tuple[ClipSet, dict[str, list[int]]]:
        """Load the clips and split them, once; everything else reads this."""
        if self._clips is None or self._parts is None:
            self._clips = load_source(
                self.source,
                root=self.root,
                sample_rate=self._base_spectrogram.sample_rate,
                seed=self.seed,
                synthetic_per_class=self.synthetic_per_class,
            )
            self._parts = split_indices(self._clips, self.split, self.test_speaker, self.val_fraction, self.seed)
            sizes = {part: len(indices) for part, indices in self._parts.items()}
            logger.info("%s clips per part (%s split): %s", self.source, self.split, sizes)
        return self._clips, self._parts
