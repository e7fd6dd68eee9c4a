"""Synthetic spoken digits: the offline default speech dataset.

Contents: the ten English words "zero" ... "nine" (label i is the word for digit i, as in the
Free Spoken Digit Dataset), ``n_per_class`` clips each, spoken by eSpeak NG (formant synthesis,
via the ``espeakng-loader`` wheel). Every clip draws independently, from a seeded generator:

- an accent, one of the 8 English eSpeak languages in ``ACCENTS`` (British RP and default,
  Scottish, Lancastrian, West Midlands, American, New York, Caribbean);
- a voice variant, one of the 24 in ``VARIANTS`` (7 male, 5 female, 4 Klatt-synthesizer and
  8 named voices); the variant plays the role of the speaker;
- a speaking rate of 120-220 words per minute, a base pitch of 25-75 and an intonation range
  of 20-80 (eSpeak's 0-100 scales);
- a peak amplitude of 0.3-0.9 and white noise at 15-40 dB SNR.

Clips are resampled from eSpeak's 22.05 kHz to ``sample_rate`` (8 kHz by default, FSDD's rate)
and last about 0.2-0.8 s. The same ``(n_per_class, seed, sample_rate)`` always yields the same
clips; a generated set is cached in ``~/.cache/anyformer/speech_synth_<hash>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torchaudio.transforms as AT

from anyformer.core.train.atomic import atomic_open
from anyformer.speech.augment import add_noise
from anyformer.speech.espeak import Utterance, espeak_version, render

logger = logging.getLogger(__name__)

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = ("en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us", "en-us-nyc", "en-029")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4",
    "Andy", "Annie", "belinda", "benjamin", "david", "linda", "steph", "travis",
)  # fmt: skip
RATE_WPM = (120, 220)
PITCH = (25, 75)
PITCH_RANGE = (20, 80)
PEAK = (0.3, 0.9)
SNR_DB = (15.0, 40.0)
RECIPE_VERSION = 1
"""Bump when the recipe above changes, so stale caches are not reused."""
CACHE_DIR = Path.home() / ".cache" / "anyformer"


@dataclass(frozen=True)
class SyntheticClip:
    """The recipe of one synthetic clip."""

    utterance: Utterance
    """What eSpeak says, with which voice, rate and pitch."""
    label: int
    """Digit spoken, 0-9."""
    speaker: str
    """Voice variant, e.g. ``f3``."""
    index: int
    """Position of the clip among the clips of its label."""
    peak: float
    """Peak amplitude after scaling."""
    snr_db: float
    """Signal-to-noise ratio of the added white noise."""


def plan_digits(n_per_class: int, seed: int) -> list[SyntheticClip]:
    """Draw the recipes of a synthetic digit set, in the order ``synthesize_digits`` returns clips.

    Args:
        n_per_class: Clips per digit.
        seed: Seed of the draw.

    Returns:
        ``10 * n_per_class`` recipes, labels cycling 0, 1, ..., 9, 0, 1, ...
    """
    if n_per_class <= 0:
        raise ValueError(f"n_per_class must be > 0, got {n_per_class}")
    generator = torch.Generator().manual_seed(seed)

    def integer(low_high: tuple[int, int]) -> int:
        return int(torch.randint(low_high[0], low_high[1] + 1, (), generator=generator))

    def real(low_high: tuple[float, float]) -> float:
        return low_high[0] + (low_high[1] - low_high[0]) * float(torch.rand((), generator=generator))

    plan = []
    for index in range(n_per_class):
        for label, word in enumerate(DIGIT_WORDS):
            accent = ACCENTS[integer((0, len(ACCENTS) - 1))]
            variant = VARIANTS[integer((0, len(VARIANTS) - 1))]
            utterance = Utterance(
                text=word,
                voice=f"{accent}+{variant}",
                rate=integer(RATE_WPM),
                pitch=integer(PITCH),
                pitch_range=integer(PITCH_RANGE),
            )
            plan.append(SyntheticClip(utterance, label, variant, index, real(PEAK), real(SNR_DB)))
    return plan


def synthesize_digits(
    n_per_class: int,
    seed: int,
    *,
    sample_rate: int = 8000,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> tuple[list[torch.Tensor], list[int]]:
    """Synthesize (or load from cache) the spoken-digit set described in the module docstring.

    Args:
        n_per_class: Clips per digit.
        seed: Seed of the voices, prosody, levels and noise.
        sample_rate: Rate of the returned waveforms, in Hz.
        cache: Read and write the cache file.
        cache_dir: Folder of the cache; ``CACHE_DIR`` (``~/.cache/anyformer``) when None.

    Returns:
        Waveforms of shape (T,) (float32, lengths vary) and their labels (0-9), in the order of
        ``plan_digits(n_per_class, seed)``.

    Raises:
        EspeakError: espeakng-loader is not installed or eSpeak failed.
    """
    path = Path(cache_dir or CACHE_DIR) / f"speech_synth_{_cache_key(n_per_class, seed, sample_rate)}.pt"
    if cache and path.is_file():
        logger.info("Loading synthetic digits from %s", path)
        stored = torch.load(path, weights_only=True)
        return stored["waves"], stored["labels"]
    plan = plan_digits(n_per_class, seed)
    logger.info("Synthesizing %d spoken digits with eSpeak NG", len(plan))
    espeak_rate, pcm_clips = render([clip.utterance for clip in plan])
    resample = AT.Resample(espeak_rate, sample_rate)
    noise = torch.Generator().manual_seed(seed)
    waves = []
    for clip, pcm in zip(plan, pcm_clips, strict=True):
        wave = torch.frombuffer(bytearray(pcm), dtype=torch.int16).float() / 32768  # (T,)
        wave = resample(wave)
        wave = wave * (clip.peak / wave.abs().max().clamp_min(1e-8))
        waves.append(add_noise(wave, torch.tensor(clip.snr_db), noise))
    labels = [clip.label for clip in plan]
    if cache:
        _save_atomically({"waves": waves, "labels": labels}, path)
        logger.info("Cached synthetic digits in %s", path)
    return waves, labels


def _cache_key(n_per_class: int, seed: int, sample_rate: int) -> str:
    recipe = {
        "recipe": RECIPE_VERSION,
        "espeakng_loader": espeak_version(),
        "n_per_class": n_per_class,
        "seed": seed,
        "sample_rate": sample_rate,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def _save_atomically(obj: object, path: Path) -> None:
    """Write to a temporary file next to ``path`` and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path) as file:
        torch.save(obj, file)
