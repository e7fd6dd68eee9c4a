"""Speech datasets as one uniform list of clips with labels, speakers and official splits.

``load_source`` picks one of the sources in ``SOURCES``:

- ``fsdd``: Free Spoken Digit Dataset, ``{digit}_{speaker}_{index}.wav``; official test set =
  index 0-4 of every speaker and digit.
- ``folder``: any folder of wav files, labelled by sub-folder name or by the file-name prefix
  before the first ``_``; official test set = speakers whose name hashes to 0 mod 10.
- ``speechcommands``: Google Speech Commands v0.02, downloaded by torchaudio; official
  validation and test lists. Clips are read from disk on access (100k+ files).
- ``speechcommands12``: the same clips as the 12-class keyword-spotting task of the literature
  (Warden 2018; TensorFlow's ``speech_commands`` example): the ten words in ``KWS_WORDS``,
  ``_unknown_`` (a seeded draw from the other 25 words, 10% of each part's keyword clips) and
  ``_silence_`` (as many one-second windows cut from the recordings in ``_background_noise_``,
  at a seeded random level), in the official validation and test lists' parts.
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
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
import torch
import torchaudio.datasets

from anyformer.core.data import resolve
from anyformer.speech.audio import AudioError, load_audio
from anyformer.speech.synth import DIGIT_WORDS, plan_digits, synthesize_digits

logger = logging.getLogger(__name__)

FSDD_TEST_INDICES = range(5)
OFFICIAL_PARTS = ("train", "val", "test")
SOURCES = ("fsdd", "folder", "speechcommands", "speechcommands12", "synthetic")
KWS_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
"""The ten keywords of the 12-class task; the two other classes are ``UNKNOWN`` and ``SILENCE``."""
UNKNOWN, SILENCE = "_unknown_", "_silence_"
KWS_EXTRA_SHARE = 0.1
"""Unknown-word and silence clips per part, each as a share of the part's keyword clips (TensorFlow's 10%)."""
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
    """Waveforms read from disk when indexed, for datasets too large to preload.

    A clip may be a window of a longer file: ``segments[i] = (start_s, duration_s, gain)`` (None: the whole file).
    """

    def __init__(
        self,
        paths: Sequence[Path],
        sample_rate: int,
        segments: Sequence[tuple[float, float, float] | None] | None = None,
    ) -> None:
        self.paths = list(paths)
        self.sample_rate = sample_rate
        self.segments = list(segments) if segments is not None else [None] * len(self.paths)
        if len(self.segments) != len(self.paths):
            raise ValueError(f"LazyWaves got {len(self.paths)} paths but {len(self.segments)} segments")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        wave = load_audio(self.paths[index], self.sample_rate)
        segment = self.segments[index]
        if segment is None:
            return wave
        start_s, duration_s, gain = segment
        start = round(start_s * self.sample_rate)
        return wave[start : start + round(duration_s * self.sample_rate)] * gain


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
    if source == "speechcommands12":
        return load_speechcommands(root, sample_rate, keywords=True, seed=seed)
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


def load_speechcommands(root: Path | None, sample_rate: int, keywords: bool = False, seed: int = 0) -> ClipSet:
    """Google Speech Commands v0.02, downloaded by torchaudio on first use (2.3 GB).

    Args:
        root: The folder holding ``SpeechCommands/speech_commands_v0.02`` (None: the data lookup order).
        sample_rate: Rate of the waveforms, in Hz (the recordings are 16 kHz).
        keywords: False: the 35 words; True: the 12-class keyword-spotting task (see the module docstring).
        seed: Seed of the unknown-word draw and of the silence windows.
    """
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
    if not keywords:
        class_names = sorted(set(names))
        label_of = {name: label for label, name in enumerate(class_names)}
        labels = [label_of[name] for name in names]
        return ClipSet(LazyWaves(paths, sample_rate), labels, speakers, official, class_names)
    return _keyword_task(root / "SpeechCommands" / "speech_commands_v0.02", paths, names, speakers, official,
                         sample_rate, seed)  # fmt: skip


def _keyword_task(
    folder: Path, paths: list[Path], names: list[str], speakers: list[str], official: list[str], sample_rate: int,
    seed: int,
) -> ClipSet:  # fmt: skip
    """The 12-class task: keywords kept, a share of the other words as unknown, noise windows as silence."""
    class_names = [*KWS_WORDS, UNKNOWN, SILENCE]
    generator = torch.Generator().manual_seed(seed)
    noise_files = sorted((folder / "_background_noise_").glob("*.wav"))
    if not noise_files:
        raise FileNotFoundError(f"{folder / '_background_noise_'}: no .wav files; the silence class is cut from them")
    noise_seconds = [sf.info(path).frames / sf.info(path).samplerate for path in noise_files]
    keep: list[int] = []
    labels: list[int] = []
    silence: list[tuple[Path, tuple[float, float, float], str]] = []
    for part in OFFICIAL_PARTS:
        in_part = [i for i, p in enumerate(official) if p == part]
        known = [i for i in in_part if names[i] in KWS_WORDS]
        unknown = [i for i in in_part if names[i] not in KWS_WORDS]
        n_extra = math.ceil(KWS_EXTRA_SHARE * len(known))
        drawn = [unknown[j] for j in torch.randperm(len(unknown), generator=generator)[:n_extra].tolist()]
        for i in sorted(known + drawn):
            keep.append(i)
            labels.append(class_names.index(names[i]) if names[i] in KWS_WORDS else class_names.index(UNKNOWN))
        for _ in range(n_extra):
            file = int(torch.randint(len(noise_files), (), generator=generator))
            start = float(torch.rand((), generator=generator)) * max(noise_seconds[file] - 1.0, 0.0)
            gain = float(torch.rand((), generator=generator))  # from silent to the recording's own level
            silence.append((noise_files[file], (start, 1.0, gain), part))
    waves = LazyWaves(
        [paths[i] for i in keep] + [path for path, _, _ in silence],
        sample_rate,
        [None] * len(keep) + [segment for _, segment, _ in silence],
    )
    n_silence = len(silence)
    return ClipSet(
        waves, labels + [class_names.index(SILENCE)] * n_silence,
        [speakers[i] for i in keep] + ["noise"] * n_silence,
        [official[i] for i in keep] + [part for _, _, part in silence], class_names,
    )  # fmt: skip


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
