"""The audio side of ``anyformer classify``: label audio files with a ``speech`` or ``speech-cnn``
checkpoint, and draw where the transformer's [CLS] token looks.

    anyformer classify --ckpt runs/speech_fsdd/checkpoints/last.ckpt clip.wav --top-k 3 --attention-map map.png

The command line (its parser and ``main``) is ``anyformer.core.cli.classify``'s, which dispatches here on
the checkpoint's task.

Each file is read with ``anyformer.speech.audio.load_audio`` (any rate, any channel count: averaged to
mono, resampled to the model's rate), then ``duration_s`` of it is kept as the checkpoint's
``spectrogram.crop`` says (the middle, or the window around the energy centroid; a shorter clip is
zero-padded), exactly as validation clips are. Exit codes: 0 when every file was
classified, 2 for a bad checkpoint or any unreadable file (the other files are still classified).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.classify import PROG, attention_map_path
from anyformer.core.cli.errors import UsageError, report
from anyformer.core.rollout import summary_weights
from anyformer.core.train.atomic import atomic_open
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import CheckpointError, load_task
from anyformer.speech.audio import AudioError, fit_duration, load_audio
from anyformer.speech.speech import SpeechTransformer

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TASKS = ("speech", "speech-cnn")


def load_clip(path: str | Path, module: TaskModule) -> Tensor:
    """Read ``path`` as the (samples,) waveform the model expects; AudioError names a bad file."""
    spectrogram = module.config.spectrogram
    wave = load_audio(path, spectrogram.sample_rate)
    return fit_duration(wave, spectrogram.n_samples, spectrogram.crop)


def top_labels(module: TaskModule, logits: Tensor, top_k: int) -> list[list[tuple[str, float]]]:
    """(B, num_classes) logits -> per clip, the ``top_k`` (class name, probability) pairs, best first."""
    probs, indices = logits.float().softmax(dim=-1).topk(min(top_k, logits.shape[-1]), dim=-1)
    return [
        [(module.class_names[i], p) for p, i in zip(row_p, row_i)]
        for row_p, row_i in zip(probs.tolist(), indices.tolist())
    ]


@torch.no_grad()
def classify_audio(module: TaskModule, paths: Sequence[str | Path], top_k: int = 5) -> list[list[tuple[str, float]]]:
    """Top labels of each audio file.

    Args:
        module: a ``speech`` or ``speech-cnn`` module, e.g. from ``anyformer.core.train.checkpoint.load_task``.
        paths: audio files (WAV, FLAC, OGG, ...).
        top_k: labels per file.

    Returns:
        Per file, the ``top_k`` (class name, probability) pairs, most probable first.

    Raises:
        AudioError: a file is missing, corrupt or not audio; the message names it.
    """
    if not paths:
        return []
    waves = torch.stack([load_clip(path, module) for path in paths])  # (B, samples)
    module.eval()
    return top_labels(module, module.model(waves), top_k)


@torch.no_grad()
def spectrogram_attention(model: SpeechTransformer, wave: Tensor) -> tuple[Tensor, list[Tensor], Tensor]:
    """Run one clip through the transformer, keeping every layer's attention.

    Args:
        model: the transformer.
        wave: (samples,) one clip.

    Returns:
        The (F, T) log-mel spectrogram, per layer (first to last) the (1, H, 1+N, 1+N) attention
        probabilities, and the (num_classes,) logits.
    """
    model.eval()
    maps = AttentionMaps()
    image = model.image(wave[None])  # (1, 1, F, T)
    logits = model.vit.forward_head(model.vit.forward_features(image, maps=maps))
    return image[0, 0], maps.self_attn, logits[0]


def spectrogram_heat(model: SpeechTransformer, attention: Tensor) -> Tensor:
    """Spread where the clip summary looks over the spectrogram.

    Args:
        model: the transformer (its patch layout and pooling).
        attention: (1, 1+N, 1+N) token-to-token weights: one layer's, heads averaged, or a rollout.

    Returns:
        (F, T) rescaled to [0, 1]: the [CLS] row (or the mean of the patch rows for ``pool='mean'``);
        each cell holds the mean over the patches covering it.
    """
    heat = model.vit.tokenizer.patch_map(summary_weights(attention.float(), model.cfg.pool))[0]  # (1, N) -> (F, T)
    heat = heat - heat.min()
    return heat / heat.max().clamp_min(1e-12)


def cls_attention(model: SpeechTransformer, wave: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Where the clip summary looks, in the last layer (mean over heads), spread over the spectrogram.

    Returns:
        (F, T) log-mel spectrogram, (F, T) attention in [0, 1] (see :func:`spectrogram_heat`), and
        the (num_classes,) logits.
    """
    spec, attentions, logits = spectrogram_attention(model, wave)
    return spec, spectrogram_heat(model, attentions[-1].float().mean(dim=1)), logits


def attention_map_figure(
    spec: Tensor, heat: Tensor, *, duration_s: float, title: str = "",
    label: str = "[CLS] attention (last layer)", alpha: float = 0.5,
) -> Figure:  # fmt: skip
    """An (8 x 4 inch, 100 dpi) figure of the log-mel spectrogram (gray) with ``heat`` (F, T) in [0, 1] overlaid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    extent = (0.0, duration_s, 0.0, float(spec.shape[0]))  # time in s, mel band
    ax.imshow(spec.cpu().numpy(), origin="lower", aspect="auto", cmap="gray", extent=extent)
    overlay = ax.imshow(
        heat.cpu().numpy(), origin="lower", aspect="auto", cmap="inferno", alpha=alpha, vmin=0, vmax=1, extent=extent
    )
    fig.colorbar(overlay, ax=ax, label=label)
    ax.set(xlabel="time (s)", ylabel="mel band", title=title)
    return fig


def save_attention_map(
    spec: Tensor, heat: Tensor, out: str | Path, *, duration_s: float, title: str = "", alpha: float = 0.5
) -> None:
    """Write a PNG of :func:`attention_map_figure`.

    The file is written to a temporary name in the same folder, then renamed into place.
    """
    fig = attention_map_figure(spec, heat, duration_s=duration_s, title=title, alpha=alpha)
    with atomic_open(out) as file:
        fig.savefig(file, format="png")


def classify_audio_files(args: argparse.Namespace) -> int:
    """``anyformer classify`` for speech checkpoints: print the top-k labels of each file.

    Reads ``args.ckpt``, ``args.inputs``, ``args.top_k`` and ``args.attention_map`` (None or an
    output PNG; with several inputs, ``OUT_<input stem>.png`` per input).

    Returns:
        0 when every file was classified, 2 when a file (or the checkpoint) could not be used;
        each problem is one line on stderr naming the file.
    """
    try:
        module = load_task(args.ckpt, tasks=TASKS)
    except CheckpointError as err:
        return report(PROG, err)
    attention_map = getattr(args, "attention_map", None)
    if attention_map and not isinstance(module.model, SpeechTransformer):
        wrong = f"--attention-map needs a 'speech' (transformer) checkpoint; {args.ckpt} is {module.task_name!r}"
        return report(PROG, UsageError(wrong))
    status = 0
    for path in args.inputs:
        try:
            wave = load_clip(path, module)
        except AudioError as err:
            status = report(PROG, err)
            continue
        if attention_map:
            spec, heat, logits = cls_attention(module.model, wave)
            labels = top_labels(module, logits[None], args.top_k)[0]
        else:
            labels = classify_audio(module, [path], args.top_k)[0]
        print(path)
        for name, prob in labels:
            print(f"  {prob:.4f}  {name}")
        if attention_map:
            out = attention_map_path(attention_map, path, len(args.inputs) > 1)
            title = f"{Path(path).name}: {labels[0][0]} ({labels[0][1]:.2f})"
            try:
                save_attention_map(spec, heat, out, duration_s=module.config.spectrogram.duration_s, title=title)
            except (OSError, ValueError) as err:
                status = report(PROG, UsageError(f"{out}: cannot write the attention map ({err})"))
                continue
            print(f"  attention map: {out}")
    return status
