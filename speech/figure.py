"""The audio side of ``anyformer attention``: the log-mel spectrogram of one clip with the attention
rollout (``anyformer.core.rollout``) of the clip summary over its patches, through layers 1..L.

The clip is read as ``anyformer classify`` reads it (``anyformer.speech.classify.load_clip``); without
an INPUT, the first test clip of the Free Spoken Digit Dataset (the dataset ``fsdd`` of
``anyformer.core.data``) is drawn when it is on disk; it is never downloaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor

from anyformer.core.cli.attention import figure_title, layer_index, rollout_span
from anyformer.core.cli.errors import UsageError
from anyformer.core.data import DataError, resolve
from anyformer.core.rollout import attention_rollout
from anyformer.speech.classify import attention_map_figure, load_clip, spectrogram_attention, spectrogram_heat
from anyformer.speech.sources import FSDD_TEST_INDICES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from anyformer.core.train.base import TaskModule


def default_clip(root: Path | None = None) -> Path:
    """The first FSDD test clip (``{digit}_{speaker}_{index}.wav`` with a test index), by name.

    Args:
        root: A folder of FSDD clips; None: the dataset ``fsdd`` as :mod:`anyformer.core.data` finds
            it on disk (``$ANYFORMER_DATA`` or the user cache; never downloaded).

    Raises:
        UsageError: no such clip under ``root``, or FSDD is not on disk.
    """
    if root is None:
        try:
            root = resolve("fsdd", download=False)
        except DataError as err:
            raise UsageError(
                f"no INPUT audio file given and no FSDD test clip on disk ({err}); give an audio file"
            ) from None
    clips = sorted(root.glob("*_*_*.wav")) if root.is_dir() else []
    indices = [path.stem.rpartition("_")[2] for path in clips]
    tests = [path for path, index in zip(clips, indices) if index.isdigit() and int(index) in FSDD_TEST_INDICES]
    if not tests:
        raise UsageError(f"no INPUT audio file given and no FSDD test clip under {root}; give an audio file")
    return tests[0]


def speech_rollout(module: TaskModule, wave: Tensor, layer: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Attention rollout of the clip summary through layers 1..L, spread over the spectrogram.

    Args:
        module: a ``speech`` module.
        wave: (samples,) one clip, as ``load_clip`` gives it.
        layer: L, 1-based (None: every layer).

    Returns:
        The (F, T) log-mel spectrogram, the (F, T) relevance in [0, 1] (see
        ``anyformer.speech.classify.spectrogram_heat``) and the (num_classes,) logits.
    """
    index = layer_index(module.config.transformer.n_layers, layer)
    spec, attentions, logits = spectrogram_attention(module.model, wave)
    return spec, spectrogram_heat(module.model, attention_rollout(attentions[: index + 1])), logits


def speech_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``speech`` checkpoint; ``source`` is an audio file."""
    index = layer_index(module.config.transformer.n_layers, layer)  # a bad --layer fails before any file is read
    path = default_clip() if source is None else Path(source)
    spec, heat, logits = speech_rollout(module, load_clip(path, module), layer)
    prob, label = logits.float().softmax(-1).max(-1)
    layers = rollout_span(index, module.config.transformer.n_layers)
    summary = "[CLS] token" if module.config.pool == "cls" else "mean of the patch tokens"
    title = figure_title(module.task_name, layers, f"relevance of each patch to the {summary}")
    title += f"\n{path.name}: predicted {module.class_names[int(label)]} ({float(prob):.2f})"
    duration_s = module.config.spectrogram.duration_s
    return attention_map_figure(
        spec, heat, duration_s=duration_s, title=title, label="attention rollout (heads averaged)"
    )
