"""Lightning data module for spoken-word classification.

Batches are ``{"waveform": (B, T) float32, "label": (B,) int64}`` with T fixed by
``duration_s``. The model computes the spectrogram itself (``anyformer.speech.features``), so it can
apply SpecAugment on the device; this module only perturbs waveforms for the training split when
``augment`` is on: the voice of the whole clip (speed, pitch, VTLP; ``voice_augment``), its placement
in the window, then the window (time shift, gain, reverberation, noise; ``wave_augment``).

Leave-one-speaker-out (``split="speaker"``) can validate on another unseen speaker
(``val_speaker``), so checkpoint choice and early stopping see new-voice accuracy; and eSpeak NG
voices (``synthetic_voices``) can join the training speakers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from anyformer.core.train.data_order import ShuffledBatches, batch_loader, placement
from anyformer.speech.audio import fit_duration
from anyformer.speech.augment import VoiceAugment, VoiceAugmentConfig, WaveAugment, WaveAugmentConfig
from anyformer.speech.features import SpectrogramConfig, fit_normalization
from anyformer.speech.sources import SOURCES, ClipSet, load_source, load_synthetic
from anyformer.speech.synth import DIGIT_WORDS

logger = logging.getLogger(__name__)

SPLITS = ("official", "speaker")
NEXT_SPEAKER = "next"
"""``val_speaker`` value: the speaker after ``test_speaker`` in sorted order (wrapping round), so
holding each speaker out in turn rotates the validation speaker too."""
NORMALIZATION_CLIPS = 2000
"""Training clips (at most) over which the feature mean and std are measured."""


class ClipDataset(Dataset):
    """Fixed-length clips drawn from a ``ClipSet``, optionally augmented.

    The augmentations draw from torch's global generator, which the training loader seeds for
    every item from (seed, epoch, place) (:mod:`anyformer.core.train.data_order`), so a resumed fit
    replays them; in DataLoader workers without it, torch seeds each worker's from the loader's generator.
    """

    def __init__(
        self,
        clips: ClipSet,
        indices: Sequence[int],
        n_samples: int,
        augment: WaveAugment | None = None,
        crop: str = "center",
        voice: VoiceAugment | None = None,
    ) -> None:
        self.clips = clips
        self.indices = list(indices)
        self.n_samples = n_samples
        self.augment = augment
        self.crop = crop
        self.voice = voice

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.indices[item]
        wave = self.clips.waves[index]
        if self.augment is None and self.voice is None:
            wave = fit_duration(wave, self.n_samples, self.crop)
        else:
            generator = None  # torch's global generator, seeded per item by the training loader
            if self.voice is not None:
                wave = self.voice(wave, generator)
            # Centre-cropped models train on random placements; energy-centred ones on the energy
            # placement, jittered by the augmentation's time shift.
            wave = fit_duration(wave, self.n_samples, "random" if self.crop == "center" else self.crop, generator)
            if self.augment is not None:
                wave = self.augment(wave, generator)
        return {"waveform": wave, "label": torch.tensor(self.clips.labels[index], dtype=torch.long)}


def split_indices(
    clips: ClipSet,
    split: str,
    test_speaker: str | None,
    val_fraction: float,
    seed: int,
    val_speaker: str | None = None,
) -> dict[str, list[int]]:
    """Assign every clip to ``train``, ``val`` or ``test``.

    Args:
        clips: All clips of a source.
        split: ``official``: the source's own test (and validation, if any) set; ``speaker``:
            every clip of ``test_speaker`` is the test set.
        test_speaker: Speaker held out by the ``speaker`` split.
        val_fraction: Share of the non-test clips drawn at random for validation, when the
            source defines no validation set and no ``val_speaker`` is given.
        seed: Seed of that draw.
        val_speaker: ``speaker`` split only: every clip of this speaker is the validation set and
            none is trained on (``"next"``: the speaker after ``test_speaker`` in sorted order);
            None draws ``val_fraction`` of the training speakers' clips.

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
        if val_speaker == NEXT_SPEAKER:
            val_speaker = speakers[(speakers.index(test_speaker) + 1) % len(speakers)]
        if val_speaker is not None and (val_speaker not in speakers or val_speaker == test_speaker):
            others = [speaker for speaker in speakers if speaker != test_speaker]
            raise ValueError(f"val_speaker must be {NEXT_SPEAKER!r} or one of {others}; got {val_speaker!r}")
        test = [i for i, speaker in enumerate(clips.speakers) if speaker == test_speaker]
        val = [i for i, speaker in enumerate(clips.speakers) if speaker == val_speaker]
        rest = [i for i, speaker in enumerate(clips.speakers) if speaker not in (test_speaker, val_speaker)]
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
        val_speaker: Speaker of the validation set for ``split="speaker"``, trained on neither
            (``next``: the one after ``test_speaker`` in sorted order); None: ``val_fraction`` of the
            training speakers' clips.
        sample_rate: Rate of the waveforms, in Hz.
        duration_s: Length every clip is cropped or padded to.
        batch_size: Clips per batch.
        num_workers: DataLoader worker processes.
        augment: Perturb training waveforms (random placement, ``voice_augment``, ``wave_augment``).
        voice_augment: Speed, pitch and VTLP perturbation of training clips (None: all off).
        wave_augment: Time shift, gain, reverberation and noise of training windows (None: the defaults).
        n_mels: Mel bands of the front end.
        n_fft: FFT size and window of the front end, in samples (256 = 32 ms at 8 kHz).
        hop_length: Samples between frames (80 = 10 ms at 8 kHz); the frames are the time axis of the patches.
        compression: ``log`` or ``pcen`` (see ``SpectrogramConfig``).
        utterance_norm: ``none`` or ``cmvn`` (per-clip band normalisation).
        deltas: Delta orders stacked under the static bands (0-2).
        n_cepstra: 0 for log-mel bands, else that many mel-frequency cepstral coefficients (MFCC).
        crop: ``center`` or ``energy``: where the window sits in a clip at validation, test and
            ``anyformer classify`` (it travels in the checkpoint's spectrogram config).
        val_fraction: Share of training clips held out for validation, for sources without an
            official validation set.
        seed: Seed of the validation draw, the shuffling, the augmentation and the synthetic set.
        synthetic_per_class: Clips per digit of the ``synthetic`` source.
        synthetic_voices: Clips per digit of eSpeak NG speech added to the training set of a digit
            source (``fsdd``) as extra speakers; never validated or tested on (0: none).
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
        val_speaker: str | None = None,
        voice_augment: VoiceAugmentConfig | None = None,
        wave_augment: WaveAugmentConfig | None = None,
        n_mels: int = 64,
        n_fft: int = 256,
        hop_length: int = 80,
        compression: str = "log",
        utterance_norm: str = "none",
        deltas: int = 0,
        crop: str = "center",
        synthetic_voices: int = 0,
        n_cepstra: int = 0,
    ) -> None:
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"source={source!r} is not one of {list(SOURCES)}")
        if split not in SPLITS:
            raise ValueError(f"split={split!r} is not one of {list(SPLITS)}")
        if split == "speaker" and test_speaker is None:
            raise ValueError("split='speaker' needs test_speaker")
        if val_speaker is not None and split != "speaker":
            raise ValueError("val_speaker needs split='speaker'")
        if synthetic_voices < 0:
            raise ValueError(f"synthetic_voices must be >= 0, got {synthetic_voices!r}")
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
        self.val_speaker = val_speaker
        self.voice_augment = voice_augment or VoiceAugmentConfig()
        self.wave_augment = wave_augment or WaveAugmentConfig()
        self.synthetic_voices = synthetic_voices
        # Frames = tokens: the spectrogram geometry is fixed here, the normalization measured later.
        self._base_spectrogram = SpectrogramConfig(
            sample_rate=sample_rate, duration_s=duration_s, n_mels=n_mels, n_fft=n_fft, hop_length=hop_length,
            compression=compression,
            utterance_norm=utterance_norm, deltas=deltas, crop=crop, n_cepstra=n_cepstra,
        )  # fmt: skip
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
            crop = self._base_spectrogram.crop
            waves = torch.stack([fit_duration(clips.waves[i], n_samples, crop) for i in sample])  # (N, T)
            self._spectrogram = fit_normalization(self._base_spectrogram, waves)
            logger.info("Log-mel mean %.3f, std %.3f", self._spectrogram.mean, self._spectrogram.std)
        return dataclasses.replace(self._spectrogram)

    def prepare_data(self) -> None:
        """Download or synthesize the source once, before the processes split up."""
        self._load()

    def setup(self, stage: str | None = None) -> None:
        """Build the train, val and test datasets."""
        clips, parts = self._load()
        n_samples, rate, crop = (self._base_spectrogram.n_samples, self._base_spectrogram.sample_rate,
                                 self._base_spectrogram.crop)  # fmt: skip
        wave_augment = WaveAugment(self.wave_augment, rate) if self.augment else None
        voice = VoiceAugment(self.voice_augment, rate) if self.augment and self.voice_augment.active else None
        self.datasets = {
            "train": ClipDataset(clips, parts["train"], n_samples, wave_augment, crop, voice),
            "val": ClipDataset(clips, parts["val"], n_samples, crop=crop),
            "test": ClipDataset(clips, parts["test"], n_samples, crop=crop),
        }

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the last partial batch is kept. Epoch ``e``'s order and
        augmentations are functions of ``(seed, e)`` (:mod:`anyformer.core.train.data_order`)."""
        if not self.datasets:
            self.setup()
        train = self.datasets["train"]
        sampler = ShuffledBatches(len(train), self.batch_size, seed=self.seed, **placement(self))
        return batch_loader(train, sampler, num_workers=self.num_workers)

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
            self._parts = split_indices(
                self._clips, self.split, self.test_speaker, self.val_fraction, self.seed, self.val_speaker
            )
            if self.synthetic_voices:
                self._clips, self._parts = self._add_synthetic(self._clips, self._parts)
            sizes = {part: len(indices) for part, indices in self._parts.items()}
            logger.info("%s clips per part (%s split): %s", self.source, self.split, sizes)
        return self._clips, self._parts

    def _add_synthetic(self, clips: ClipSet, parts: dict[str, list[int]]) -> tuple[ClipSet, dict[str, list[int]]]:
        """``clips`` plus ``synthetic_voices`` eSpeak clips per digit, appended to the training part only."""
        if clips.class_names != list(DIGIT_WORDS):
            raise ValueError(
                f"synthetic_voices needs a spoken-digit source (classes {list(DIGIT_WORDS)}); {self.source!r} differs"
            )
        extra = load_synthetic(self.synthetic_voices, self.seed, self._base_spectrogram.sample_rate)
        start = len(clips.waves)
        merged = ClipSet(
            [*clips.waves, *extra.waves], clips.labels + extra.labels,
            clips.speakers + [f"espeak-{speaker}" for speaker in extra.speakers],
            clips.official + ["train"] * len(extra.waves), clips.class_names,
        )  # fmt: skip
        logger.info("Added %d eSpeak NG clips to the training set", len(extra.waves))
        return merged, {**parts, "train": parts["train"] + list(range(start, start + len(extra.waves)))}
