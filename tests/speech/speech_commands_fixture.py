"""A small folder laid out like Google Speech Commands v0.02, for tests that must not download 2.3 GB.

    <root>/SpeechCommands/speech_commands_v0.02/<word>/<speaker>_nohash_<n>.wav   16 kHz mono
    <root>/SpeechCommands/speech_commands_v0.02/validation_list.txt, testing_list.txt
    <root>/SpeechCommands/speech_commands_v0.02/_background_noise_/*.wav

Each word is a tone of its own frequency (with a little noise), so a model can learn the labels;
speaker ``s1`` is the validation list, ``s2`` the testing list, the others train (the real lists
also keep each speaker in one part).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16_000
EXTRA_WORDS = ("bed", "cat", "happy")
"""Non-keywords: they become ``_unknown_`` in the 12-class task."""


def make_speech_commands(
    root: Path, words: tuple[str, ...] | None = None, speakers: int = 4, takes: int = 2, seed: int = 0
) -> Path:
    """Write the folder under ``root`` and return ``root`` (the folder ``--data.root`` takes)."""
    from anyformer.speech.sources import KWS_WORDS

    words = words or (*KWS_WORDS, *EXTRA_WORDS)
    rng = np.random.default_rng(seed)
    folder = root / "SpeechCommands" / "speech_commands_v0.02"
    lists: dict[str, list[str]] = {"s1": [], "s2": []}
    for w, word in enumerate(words):
        (folder / word).mkdir(parents=True, exist_ok=True)
        for s in range(speakers):
            for take in range(takes):
                # Some clips are shorter than a second, as in the real set.
                n = RATE if take % 2 == 0 else int(0.7 * RATE)
                t = np.arange(n) / RATE
                wave = 0.5 * np.sin(2 * np.pi * (200 + 150 * w) * t) + 0.01 * rng.standard_normal(n)
                name = f"{word}/s{s}_nohash_{take}.wav"
                sf.write(folder / name, wave.astype(np.float32), RATE)
                if f"s{s}" in lists:
                    lists[f"s{s}"].append(name)
    (folder / "validation_list.txt").write_text("".join(f"{name}\n" for name in lists["s1"]))
    (folder / "testing_list.txt").write_text("".join(f"{name}\n" for name in lists["s2"]))
    noise = folder / "_background_noise_"
    noise.mkdir(parents=True, exist_ok=True)
    sf.write(noise / "white_noise.wav", (0.1 * rng.standard_normal(3 * RATE)).astype(np.float32), RATE)
    sf.write(noise / "running_tap.wav", (0.05 * rng.standard_normal(2 * RATE)).astype(np.float32), RATE)
    return root
