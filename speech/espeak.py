"""Offline text-to-speech with eSpeak NG, through the ``espeakng-loader`` wheel.

The wheel ships ``libespeak-ng`` and its voice data; this module calls the C API with ctypes
(``espeak_Initialize`` in synchronous mode plus a synthesis callback that collects the samples).

eSpeak keeps random state (breath noise, pitch flutter) in C globals that persist from one
utterance to the next; neither ``espeak_ng_SetRandSeed`` nor re-initialising resets them all,
so the same utterance synthesized twice in one process differs. A fresh process replaying the
same list of utterances is byte-identical, so ``render`` runs the whole list in a new Python
process (this module run as a script; it imports only the standard library and the wheel).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import json
import os
import struct
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error code instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_PARAM_RANGE = 4
_RAND_SEED = 1

_MISSING_PACKAGE = "speech synthesis needs the espeakng-loader package: pip install espeakng-loader"

# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class EspeakError(RuntimeError):
    """eSpeak NG is missing or refused an utterance."""


@dataclass(frozen=True)
class Utterance:
    """One thing for eSpeak to say, and how."""

    text: str
    """Text to speak."""
    voice: str = "en"
    """eSpeak voice: a language (``en-us``, ``en-gb-scotland``) optionally with ``+variant`` (``+f3``)."""
    rate: int = 175
    """Speaking rate in words per minute (80-450)."""
    pitch: int = 50
    """Base pitch, 0-100."""
    pitch_range: int = 50
    """Pitch variation (intonation), 0-100; 0 is monotone."""


class _Espeak:
    """In-process handle on libespeak-ng. The library is global state: one handle per process."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError as error:
            raise EspeakError(_MISSING_PACKAGE) from error
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_DONT_EXIT)
        if self.sample_rate <= 0:
            raise EspeakError(f"espeak_Initialize failed with code {self.sample_rate} (data at {data_path!r})")
        self.lib.espeak_ng_SetRandSeed(_RAND_SEED)
        self._chunks: list[bytes] = []
        # Keep a reference: ctypes frees the trampoline when the Python object dies.
        self._callback = _SynthCallback(self._collect)
        self.lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples: int, events) -> int:  # C types: see _SynthCallback
        if n_samples > 0:
            self._chunks.append(ctypes.string_at(wav, 2 * n_samples))
        return 0  # 0 = continue synthesis

    def synthesize(self, utterance: Utterance) -> bytes:
        """Speak one utterance; returns 16-bit mono PCM (native byte order) at ``sample_rate``."""
        if self.lib.espeak_SetVoiceByName(utterance.voice.encode()) != 0:
            raise EspeakError(f"eSpeak has no voice {utterance.voice!r}")
        for parameter, value in (
            (_PARAM_RATE, utterance.rate),
            (_PARAM_PITCH, utterance.pitch),
            (_PARAM_RANGE, utterance.pitch_range),
        ):
            self.lib.espeak_SetParameter(parameter, value, 0)
        text = utterance.text.encode() + b"\0"
        self._chunks = []
        code = self.lib.espeak_Synth(text, len(text), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if code != 0:
            raise EspeakError(f"espeak_Synth failed with code {code} on {utterance}")
        return b"".join(self._chunks)


def espeak_version() -> str:
    """Version of the installed espeakng-loader wheel (and so of eSpeak NG and its voices)."""
    try:
        return importlib.metadata.version("espeakng-loader")
    except importlib.metadata.PackageNotFoundError as error:
        raise EspeakError(_MISSING_PACKAGE) from error


def render(utterances: list[Utterance]) -> tuple[int, list[bytes]]:
    """Synthesize utterances in a fresh process, so the result depends only on the list.

    Args:
        utterances: What to say, in order.

    Returns:
        The sample rate (22050 Hz for eSpeak NG) and one 16-bit PCM buffer (native byte order) per
        utterance.

    Raises:
        EspeakError: The library is missing, a voice does not exist, or synthesis failed.
    """
    request = json.dumps([asdict(u) for u in utterances]).encode()
    # Run this file as a script; -P keeps speech/ itself off the worker's sys.path.
    isolate = ["-P"] if sys.version_info >= (3, 11) else []
    done = subprocess.run(
        [sys.executable, *isolate, os.fspath(Path(__file__).resolve())],
        input=request,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise EspeakError(f"eSpeak worker failed: {done.stderr.decode(errors='replace').strip()}")
    return _decode(done.stdout, len(utterances))


def _encode(sample_rate: int, clips: list[bytes]) -> bytes:
    parts = [struct.pack("<ii", sample_rate, len(clips))]
    for pcm in clips:
        parts += [struct.pack("<i", len(pcm)), pcm]
    return b"".join(parts)


def _decode(payload: bytes, expected: int) -> tuple[int, list[bytes]]:
    sample_rate, count = struct.unpack_from("<ii", payload, 0)
    if count != expected:
        raise EspeakError(f"eSpeak worker returned {count} clips, expected {expected}")
    offset, clips = 8, []
    for _ in range(count):
        (size,) = struct.unpack_from("<i", payload, offset)
        clips.append(payload[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return sample_rate, clips


def _worker() -> None:
    """Read utterances as JSON on stdin, write the encoded clips to stdout."""
    utterances = [Utterance(**fields) for fields in json.loads(sys.stdin.buffer.read())]
    try:
        engine = _Espeak()
        clips = [engine.synthesize(u) for u in utterances]
    except EspeakError as error:
        sys.stderr.write(f"{error}\n")
        sys.exit(1)
    sys.stdout.buffer.write(_encode(engine.sample_rate, clips))


if __name__ == "__main__":
    _worker()
