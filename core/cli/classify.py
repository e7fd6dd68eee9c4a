"""``anyformer classify``: label files with a classifier checkpoint: images (``vit``, ``vision-cnn``),
sentences (``bert-classify``, ``text-bow``) or audio clips (``speech``, ``speech-cnn``).

The command reads the checkpoint's task and hands the parsed arguments to that domain's handler,
named by import path (``HANDLERS``) so the CLI layer, not a domain, knows every domain.

    anyformer classify --ckpt runs/vit_digits/checkpoints/last.ckpt digit.png --top-k 3 --attention-map map.png

Exit codes: 0 when every file was classified, 2 for a bad checkpoint or any unreadable file
(the other files are still classified).
"""

from __future__ import annotations

import sys
from pathlib import Path

from anyformer.core.cli.errors import ArgumentParser, reports_usage_errors
from anyformer.core.cli.tasks import resolve
from anyformer.core.train.checkpoint import CheckpointError, read_checkpoint

PROG = "anyformer classify"

# task name in the checkpoint -> ``module:function`` taking the parsed arguments, returning the exit code
HANDLERS: dict[str, str] = {
    "vit": "anyformer.vision.classify:classify_images",
    "vision-cnn": "anyformer.vision.classify:classify_images",
    "bert-classify": "anyformer.text.classify:classify_text_args",
    "text-bow": "anyformer.text.classify:classify_text_args",
    "speech": "anyformer.speech.classify:classify_audio_files",
    "speech-cnn": "anyformer.speech.classify:classify_audio_files",
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Classify files with a checkpoint (images, sentences, audio).")
    parser.add_argument("--ckpt", required=True, help="checkpoint of a classifier's fit (e.g. runs/.../last.ckpt)")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="images (PNG, JPEG, ...)")
    parser.add_argument("--top-k", type=int, default=5, help="how many labels to print per file (default 5)")
    parser.add_argument(
        "--attention-map", metavar="OUT.png",
        help="write the attention rollout over the patches, overlaid on the image (ViT only); with "
        "several inputs, OUT_<input stem>.png per input",
    )  # fmt: skip
    parser.add_argument(
        "--keep-size", action="store_true",
        help="feed images at their own size (learned positions are resampled) instead of resizing "
        "them to the model's image size; for a ViT each side must then be a multiple of the patch size",
    )  # fmt: skip
    return parser


def error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)  # one line


def attention_map_path(out: str, input_path: str, several: bool) -> Path:
    """Where the attention map of ``input_path`` goes: ``out``, or ``OUT_<input stem>.png`` with several inputs."""
    path = Path(out)
    return path.with_name(f"{path.stem}_{Path(input_path).stem}{path.suffix or '.png'}") if several else path


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``anyformer classify``; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        error(f"--top-k must be >= 1, got {args.top_k}")
        return 2
    try:
        task = read_checkpoint(args.ckpt)["anyformer"]["task"]
        handler = HANDLERS.get(task)
        if handler is None:
            raise CheckpointError(
                f"{args.ckpt} is a {task!r} checkpoint; classify handles {sorted(HANDLERS)} checkpoints for now"
            )
        return resolve(handler)(args)
    except CheckpointError as err:
        error(str(err))
        return 2
