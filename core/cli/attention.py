"""``anyformer attention``: draw where a checkpoint's attention goes, for one input.

    anyformer attention --ckpt runs/gpt_shakespeare_char/checkpoints/last.ckpt "ROMEO: But soft" --out gpt.png
    anyformer attention --ckpt runs/bert_finetune_sst2/checkpoints/last.ckpt "a gorgeous film" --out bert.png
    anyformer attention --ckpt runs/seq2seq_demo/checkpoints/last.ckpt "the value is returned" --out seq2seq.png
    anyformer attention --ckpt runs/vit_digits/checkpoints/last.ckpt digit.png --out vit.png --layer 2
    anyformer attention --ckpt runs/speech_fsdd/checkpoints/last.ckpt clip.wav --out speech.png
    anyformer attention --ckpt runs/dt_cartpole/checkpoints/last.ckpt --out dt.png
    anyformer attention --ckpt runs/vit_digits/checkpoints/last.ckpt --run-name attention_vit

With ``--run-name NAME`` (instead of, or besides, ``--out``) the figure is drawn to
``runs/NAME/figure.png`` and the run recorded in ``runs/NAME/run.json``: a comparison lists such
runs under ``figures:`` and ``anyformer report`` places them beside RESULTS.md.

The command dispatches on the checkpoint's task (:data:`FIGURES`, import paths resolved only when
used, so the core imports no domain package); each domain draws its own figure:

- ``gpt``, ``bert``, ``bert-classify``: every head's attention in one layer (default: the last)
  over a sentence (INPUT; default a built-in line), decoded tokens on both axes;
- ``seq2seq``: every head's attention in one layer (default: the last of each stack) of the encoder
  over the source, of the decoder over its input and across, from the decoder to the source, for
  a source sentence (INPUT; default a built-in line) and its greedy translation, or a given target
  (INPUT ``source ||| target``);
- ``vit``: the image and the attention rollout of its summary over the patches, through layers
  1..L (INPUT an image; default the first test image of the built-in dataset the checkpoint was
  trained on, when it is on disk);
- ``speech``: the log-mel spectrogram with the rollout over its patches (INPUT an audio file;
  default the first test clip of the dataset ``fsdd`` of ``anyformer.core.data``, when it is on disk);
- ``dt``: every head's attention in one layer over the interleaved R, s, a tokens of K steps
  (INPUT a trajectories ``.npz`` of ``anyformer collect``, whose first episode is drawn; default a
  greedy K-step rollout in the checkpoint's environment).

Exit codes: 0 when the figure was written; 2 for a bad checkpoint, input, layer or output path
(one line on stderr, no file written).
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.cli.tasks import resolve
from anyformer.core.train import run_record
from anyformer.core.train.atomic import atomic_open
from anyformer.core.train.checkpoint import load_task

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PROG = "anyformer attention"

FIGURES: dict[str, str] = {
    "gpt": "anyformer.text.figure:gpt_figure",
    "bert": "anyformer.text.figure:bert_figure",
    "bert-classify": "anyformer.text.figure:bert_figure",
    "seq2seq": "anyformer.text.figure:seq2seq_figure",
    "vit": "anyformer.vision.figure:vit_figure",
    "speech": "anyformer.speech.figure:speech_figure",
    "dt": "anyformer.rl.figure:dt_figure",
}
"""Checkpoint task -> ``module:function(module, source, layer) -> Figure``: ``module`` is the
loaded TaskModule, ``source`` the INPUT argument (None: the task's default input), ``layer`` the
1-based ``--layer`` (None: the last). The function raises UsageError for a bad input."""


@dataclass
class LayerAttention:
    """One layer's attention probabilities over one sequence, ready to draw."""

    probs: Tensor
    """(H, Tq, Tk): row q of head h is how query q spreads over the keys (each row sums to 1)."""
    labels: list[str]
    """What each query position is: a decoded token, ``R3``, ``s3``, ..."""
    layer: int
    """Index of the layer, 0 = first."""
    n_layers: int
    key_labels: list[str] | None = None
    """What each key position is, when the keys are another sequence (cross-attention); None: ``labels``."""


def layer_index(n_layers: int, layer: int | None) -> int:
    """The 0-based index of the 1-based ``--layer`` (None: the last layer).

    Raises:
        UsageError: ``layer`` outside 1..n_layers.
    """
    if layer is None:
        return n_layers - 1
    if not 1 <= layer <= n_layers:
        raise UsageError(f"--layer {layer} is out of range: the checkpoint has layers 1..{n_layers}")
    return layer - 1


def figure_title(task: str, layers: str, what: str) -> str:
    """``"<task> checkpoint, <layers>"`` over ``what`` is shown: the start of every figure's title."""
    return f"{task} checkpoint, {layers}\n{what}"


def rollout_span(index: int, n_layers: int) -> str:
    """``"rollout through layers 1-3 of 4"`` for the 0-based last layer ``index``."""
    span = f"layers 1-{index + 1}" if index else "layer 1"
    return f"rollout through {span} of {n_layers}"


def _tick_label(label: str) -> str:
    # A "$" would start matplotlib's math mode; escaped, it is drawn as itself.
    return label.replace("$", r"\$")


def head_grid(attention: LayerAttention, title: str, *, group: int = 1) -> Figure:
    """One heatmap per head (rows: queries, columns: keys), the labels on both axes.

    Args:
        attention: what to draw.
        title: the figure's title.
        group: draw a thin line every ``group`` positions (3 for the R, s, a tokens of a step).
    """
    fig = _new_figure(*_grid_inches(attention))
    _draw_heads(fig, attention, group)
    _suptitle(fig, title)
    return fig


def head_grids(panels: Sequence[tuple[str, LayerAttention]], title: str) -> Figure:
    """Several :func:`head_grid` panels stacked in one figure, each under its own caption.

    Args:
        panels: (caption, attention) from top to bottom.
        title: the figure's title.
    """
    sizes = [_grid_inches(attention) for _, attention in panels]
    fig = _new_figure(max(width for width, _ in sizes), sum(height + 0.4 for _, height in sizes))
    subfigs = fig.subfigures(len(panels), 1, height_ratios=[height + 0.4 for _, height in sizes], squeeze=False)
    for subfig, (caption, attention) in zip(subfigs[:, 0], panels):
        _draw_heads(subfig, attention, 1)
        subfig.suptitle(caption, fontsize=10)
    _suptitle(fig, title)
    return fig


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height + 0.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _grid_inches(attention: LayerAttention) -> tuple[float, float]:
    """(width, height) in inches of a near-square grid of heads: 2 x 2 for 4 heads, 3 x 3 for 8."""
    n_heads, n_queries, n_keys = attention.probs.shape
    columns = math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / columns)
    side = min(7.0, max(3.0, 0.12 * max(n_queries, n_keys) + 1.2))  # inches per panel: room for the labels
    return side * columns + 1.0, side * rows


def _draw_heads(fig: Any, attention: LayerAttention, group: int) -> None:
    """Draw the heads of ``attention`` into ``fig`` (a Figure or SubFigure), with one colour bar."""
    probs = attention.probs.float().cpu()
    n_heads, n_queries, n_keys = probs.shape
    columns = math.ceil(math.sqrt(n_heads))
    axes = fig.subplots(math.ceil(n_heads / columns), columns, squeeze=False)
    font = 8 if max(n_queries, n_keys) <= 24 else 6
    query_labels = [_tick_label(label) for label in attention.labels]
    key_labels = [_tick_label(label) for label in (attention.key_labels or attention.labels)]
    top = float(probs.max())  # one colour scale for all heads, stretched so near-uniform attention still shows
    image = None
    for head, ax in enumerate(axes.flat):
        if head >= n_heads:
            ax.axis("off")
            continue
        image = ax.imshow(probs[head].numpy(), cmap="viridis", vmin=0.0, vmax=top, interpolation="nearest")
        ax.set_xticks(range(n_keys), key_labels[:n_keys], rotation=90, fontsize=font)
        ax.set_yticks(range(n_queries), query_labels[:n_queries], fontsize=font)
        ax.set_title(f"head {head + 1}", fontsize=10)
        ax.set_xlabel("key (attended to)", fontsize=8)
        ax.set_ylabel("query", fontsize=8)
        if group > 1:
            for edge in range(group, max(n_queries, n_keys), group):
                ax.axvline(edge - 0.5, color="white", linewidth=0.4)
                ax.axhline(edge - 0.5, color="white", linewidth=0.4)
    fig.colorbar(image, ax=axes, label="attention probability", shrink=0.8)


def _suptitle(fig: Figure, title: str) -> None:
    width = int(fig.get_figwidth() * 100 / 8.5)  # characters of an 11 pt title that fit across the figure
    fig.suptitle("\n".join(textwrap.fill(line, width) for line in title.splitlines()), fontsize=11)


def save_png(fig: Figure, out: str | Path) -> None:
    """Write ``fig`` as a PNG atomically: a failed write leaves no half file behind."""
    with atomic_open(out) as file:
        fig.savefig(file, format="png")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, description="Draw a checkpoint's attention for one input (text, image, audio or trajectory)."
    )
    parser.add_argument("--ckpt", required=True, help=f"checkpoint of a {', '.join(FIGURES)} fit")
    parser.add_argument(
        "input", nargs="?", metavar="INPUT",
        help="a sentence (gpt, bert, bert-classify; seq2seq: a source, or 'source ||| target'), an image (vit), "
        "an audio file (speech) or a trajectories .npz (dt); default: a built-in sentence, the dataset's first "
        "test image or clip, a short rollout",
    )  # fmt: skip
    parser.add_argument(
        "--out", metavar="FIGURE.png", help="the PNG to write (with --run-name, default runs/NAME/figure.png)"
    )
    parser.add_argument("--run-name", help="draw into runs/RUN_NAME/figure.png and record the run in its run.json")
    parser.add_argument(
        "--layer", type=int, metavar="L",
        help="layer to draw, 1 = first (default: the last); for vit and speech, the rollout runs through layers 1..L",
    )  # fmt: skip
    return parser


@reports_usage_errors(PROG)
def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``anyformer attention``; returns the exit code (2: bad input, one line on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    typed = ["anyformer", PROG.split()[-1], *argv]
    run_dir = run_record.evaluation_dir(args.run_name, typed) if args.run_name is not None else None
    started = run_record.utc_now()
    if args.out is None and run_dir is None:
        raise UsageError("give --out FIGURE.png, or --run-name NAME to draw into runs/NAME/figure.png")
    out = Path(args.out) if args.out is not None else run_dir / run_record.FIGURE_FILE
    if args.out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a file name such as {out / 'attention.png'}")
    module = load_task(args.ckpt, tasks=tuple(FIGURES))  # CheckpointError is a UsageError
    fig = resolve(FIGURES[module.task_name])(module, args.input, args.layer)
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)  # only now: a bad input leaves no empty run folder
    try:
        save_png(fig, out)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot write the figure ({err})") from None
    print(f"attention figure: {out}")
    if run_dir is not None:
        if out != run_dir / run_record.FIGURE_FILE:
            save_png(fig, run_dir / run_record.FIGURE_FILE)
        run_record.record_evaluation(run_dir, typed, {}, started, run_record.utc_now())
        print(f"recorded in {run_dir / run_record.RUN_FILE}")
    return 0
