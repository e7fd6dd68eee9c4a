"""Speech datasets as one uniform list of clips with labels, speakers and official splits.

``load_source`` picks one of the sources in ``SOURCES``:

- ``fsdd``: Free Spoken Digit Dataset, ``{digit}_{speaker}_{index}.wav``; official test set =
  index 0-4 of every speaker and digit.
- ``folder``: any folder of wav files, labelled by sub-folder name or by the file-name prefix
  before the first ``_``; official test set = speakers whose name hashes to 0 mod 10.
- ``speechcommands``: Google Speech Commands v0.02, downloaded by torchaudio; official
  validation and test lists. Clips are read from disk on access (100k+ files).
- ``synthetic``: spoken digits synthesized by eSpeak NG (``anyformer.speech.synth``); official test set =
  the first tenth of every digit's clips.

Preloaded sources (``fsdd``, ``folder``) skip an unreadable clip (not audio, truncated, empty, NaN
samples) with a warning that counts them and names the first few, as long as at most
``MAX_UNREADABLE`` of the clips are unreadable; more means a wrong or damaged folder, and the load
fails with the first clip's error (one line, naming the file).

``fsdd`` and ``speechcommands`` are the datasets ``fsdd`` and ``speech_commands`` of
:mod:`anyformer.core.data`: read from ``root`` when given, else ``$ANYFORMER_DATA``, else the
user cache, else downloaded into that cache (and verified).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.datasets

from anyformer.core.data import resolve
from anyformer.speech.audio import AudioError, load_audio
from anyformer.speech.synth import DIGIT_WORDS, plan_digits, synthesize_digits

logger = logging.getLogger(__name__)

FSDD_TEST_INDICES = range(5)
OFFICIAL_PARTS = ("train", "val", "test")
SOURCES = ("fsdd", "folder", "speechcommands", "synthetic")
MAX_UNREADABLE = 0.1
"""The largest fraction of a preloaded source's clips that may be unreadable and skipped."""


@dataclass
class ClipSet:
    """All clips of a source, with what the splits need to know about each."""

    waves: Sequence[torch.Tensor]
    """Waveforms (T,) at the requested sample rate; lengths vary."""
    labels: list[int]
    """Class index of each clip."""
    speakers: list[str]
    """Speaker of each clip (eSpeak voice variant for synthetic clips)."""
    official: list[str]
    """Part of each clip under the source's official split: ``train``, ``val`` or ``test``."""
    class_names: list[str]
    """Name of each class index."""

    def __post_init__(self) -> None:
        sizes = {len(self.waves), len(self.labels), len(self.speakers), len(self.official)}
        if len(sizes) != 1:
            raise ValueError(f"ClipSet fields have different lengths: {sorted(sizes)}")
        if not self.waves:
            raise ValueError("ClipSet is empty")
        unknown = set(self.official) - set(OFFICIAL_PARTS)
        if unknown:
            raise ValueError(f"ClipSet.official has parts {sorted(unknown)}; allowed {list(OFFICIAL_PARTS)}")


class LazyWaves(Sequence[torch.Tensor]):
    """Waveforms read from disk when indexed, for datasets too large to preload."""

    def __init__(self, paths: Sequence[Path], sample_rate: int) -> None:
        self.paths = list(paths)
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        return load_audio(self.paths[index], self.sample_rate)


def load_source(source: str, *, root: Path | None, sample_rate: int, seed: int, synthetic_per_class: int) -> ClipSet:
    """Load one of ``SOURCES``.

    Args:
        source: Name of the source.
        root: Where the source lives: the dataset's folder (first in the data lookup order) for
            ``fsdd`` and ``speechcommands``, the folder of clips for ``folder``; ``synthetic`` ignores it.
        sample_rate: Rate of the waveforms, in Hz.
        seed: Seed of the synthetic set.
        synthetic_per_class: Clips per digit of the synthetic set.

    Returns:
        Every clip of the source.
    """
    if source == "synthetic":
        return load_synthetic(synthetic_per_class, seed, sample_rate)
    loaders = {"fsdd": load_fsdd, "folder": load_folder, "speechcommands": load_speechcommands}
    if source not in loaders:
        raise ValueError(f"source={source!r} is not one of {list(SOURCES)}")
    return loaders[source](root, sample_rate)


def load_fsdd(root: Path | None, sample_rate: int) -> ClipSet:
    """Free Spoken Digit Dataset, preloaded (2,500 short clips of the pinned recordings)."""
    paths = _wav_files(resolve("fsdd", root))
    labels, speakers, official = [], [], []
    for path in paths:
        fields = path.stem.split("_")
        if len(fields) != 3 or not fields[0].isdigit() or not fields[2].isdigit():
            raise ValueError(f"{path}: FSDD file names look like {{digit}}_{{speaker}}_{{index}}.wav")
        labels.append(int(fields[0]))
        speakers.append(fields[1])
        official.append("test" if int(fields[2]) in FSDD_TEST_INDICES else "train")
    waves, kept = _read_clips(paths, sample_rate)
    return ClipSet(waves, *_keep(kept, labels, speakers, official), list(DIGIT_WORDS))


def load_folder(root: Path | None, sample_rate: int) -> ClipSet:
    """Wav files labelled by sub-folder (``root/yes/a_1.wav``) or prefix (``root/yes_a_1.wav``).

    The speaker is the file-name field after the label (or the first field under a labelled
    sub-folder); a file name without one is its own speaker.
    """
    if root is None:
        raise ValueError("source='folder' needs root: a folder of wav files")
    paths = _wav_files(root)
    names, speakers = [], []
    for path in paths:
        relative = path.relative_to(root)
        fields = path.stem.split("_")
        if len(relative.parts) > 1:
            names.append(relative.parts[0])
        else:
            names.append(fields.pop(0))
        speakers.append(fields[0] if fields else path.stem)
    class_names = sorted(set(names))
    label_of = {name: label for label, name in enumerate(class_names)}
    labels = [label_of[name] for name in names]
    # Speech Commands' rule: a stable hash of the speaker keeps each speaker in one part.
    official = ["test" if zlib.crc32(speaker.encode()) % 10 == 0 else "train" for speaker in speakers]
    waves, kept = _read_clips(paths, sample_rate)
    return ClipSet(waves, *_keep(kept, labels, speakers, official), class_names)


def load_speechcommands(root: Path | None, sample_rate: int) -> ClipSet:
    """Google Speech Commands v0.02 (35 words), downloaded by torchaudio on first use (2.3 GB)."""
    root = resolve("speech_commands", root)  # the folder to hand torchaudio
    paths, names, speakers, official = [], [], [], []
    for part, subset in (("train", "training"), ("val", "validation"), ("test", "testing")):
        dataset = torchaudio.datasets.SPEECHCOMMANDS(
            root, folder_in_archive="SpeechCommands", download=True, subset=subset
        )
        for n in range(len(dataset)):
            # get_metadata reads no audio: torchaudio's own loader needs torchcodec.
            relative_path, _, name, speaker, _ = dataset.get_metadata(n)
            paths.append(root / "SpeechCommands" / relative_path)
            names.append(name)
            speakers.append(speaker)
            official.append(part)
    class_names = sorted(set(names))
    label_of = {name: label for label, name in enumerate(class_names)}
    labels = [label_of[name] for name in names]
    return ClipSet(LazyWaves(paths, sample_rate), labels, speakers, official, class_names)


def load_synthetic(n_per_class: int, seed: int, sample_rate: int) -> ClipSet:
    """Spoken digits from eSpeak NG (cached, see ``anyformer.speech.synth``)."""
    waves, labels = synthesize_digits(n_per_class, seed, sample_rate=sample_rate)
    plan = plan_digits(n_per_class, seed)
    n_test = max(1, n_per_class // 10)
    official = ["test" if clip.index < n_test else "train" for clip in plan]
    return ClipSet(waves, labels, [clip.speaker for clip in plan], official, list(DIGIT_WORDS))


def _read_clips(paths: list[Path], sample_rate: int) -> tuple[list[torch.Tensor], list[int]]:
    """(waveforms of the readable clips, their indices in ``paths``); see ``MAX_UNREADABLE``.

    Raises:
        AudioError: more than ``MAX_UNREADABLE`` of the clips are unreadable (the first one's error).
    """
    waves, kept, errors = [], [], []
    for index, path in enumerate(paths):
        try:
            waves.append(load_audio(path, sample_rate))
        except AudioError as error:
            errors.append(error)
            continue
        kept.append(index)
    if not errors:
        return waves, kept
    if len(errors) > MAX_UNREADABLE * len(paths):
        raise AudioError(
            f"{len(errors)} of {len(paths)} clips are unreadable (more than {MAX_UNREADABLE:.0%}), "
            f"the first: {errors[0]}"
        )
    names = ", ".join(str(error) for error in errors[:3]) + (", ..." if len(errors) > 3 else "")
    logger.warning("Skipped %d unreadable clips of %d: %s", len(errors), len(paths), names)
    return waves, kept


def _keep(kept: list[int], *columns: list) -> list[list]:
    """Each column restricted to the rows ``kept``."""
    return [[column[index] for index in kept] for column in columns]


def _wav_files(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of audio clips")
    # Hidden folders (a download in progress, ``.fetch-*``) never hold clips.
    paths = sorted(
        path
        for path in root.rglob("*")
        if path.suffix.lower() == ".wav" and path.is_file() and not _hidden(path.relative_to(root))
    )
    if not paths:
        raise FileNotFoundError(f"{root}: holds no .wav files")
    logger.info("Loading %d clips from %s", len(paths), root)
    return paths


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
