"""``anyformer classify``: label files with a classifier checkpoint: images (``vit``, ``vision-cnn``),
sentences (``anyformer.text.classify``) or audio clips (``anyformer.speech.classify``).

The command dispatches on the checkpoint's task (``HANDLERS``); this module handles images.

    anyformer classify --ckpt runs/vit_digits/checkpoints/last.ckpt digit.png --top-k 3 --attention-map map.png

Exit codes: 0 when every file was classified, 2 for a bad checkpoint or any unreadable file
(the other files are still classified).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.errors import ArgumentParser, UsageError, reports_usage_errors
from anyformer.core.train.atomic import atomic_open
from anyformer.core.train.checkpoint import CheckpointError, load_task, read_checkpoint
from anyformer.vision.rollout import overlay_heatmap, patch_relevance
from anyformer.vision.tokenizer import check_divisible, to_2tuple
from anyformer.vision.vit import ViT

PROG = "anyformer classify"
IMAGE_MODES = {1: "L", 3: "RGB"}
IMAGE_TASKS = ("vit", "vision-cnn")


def _is_wide_mode(mode: str) -> bool:
    """32-bit int/float and 16-bit gray images (``I``, ``F``, ``I;16*``): PIL clips them to 8 bits
    when converting to L or RGB, so every pixel above 255 would silently turn white."""
    return mode in ("I", "F") or mode.startswith("I;")


class InputError(UsageError):
    """A file that cannot be classified; the message names it."""


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


def _error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(message.split())}", file=sys.stderr)  # one line


def read_image(path: str | Path, channels: int, size: tuple[int, int] | None, patch_size: int) -> Image.Image:
    """Open an image as the model's channels, resized to (H, W) ``size`` (None: keep its size).

    Raises:
        InputError: missing, corrupt or non-image file, a 16/32-bit or float image, or (keeping the
            size) a side not divisible by the patch.
    """
    if channels not in IMAGE_MODES:
        raise InputError(f"{path}: the model expects {channels} channels; only 1 (gray) or 3 (RGB) images are read")
    try:
        with Image.open(path) as opened:
            if _is_wide_mode(opened.mode):
                raise InputError(
                    f"{path}: image mode {opened.mode!r} (16-bit, 32-bit or float pixels) is not supported; "
                    "expected an 8-bit image (gray, RGB, RGBA or palette)"
                )
            image = opened.convert(IMAGE_MODES[channels])  # reads (and so checks) every pixel
    except InputError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None
    if size is None:
        try:
            check_divisible((image.height, image.width), patch_size)
        except ValueError as err:
            raise InputError(f"{path}: {err}") from None
        return image
    return image.resize((size[1], size[0]), Image.Resampling.BILINEAR)


def to_tensor(image: Image.Image, mean: list[float], std: list[float]) -> Tensor:
    """PIL image -> (1, C, H, W) float, scaled to [0, 1] and normalized like the training data."""
    pixels = torch.from_numpy(np.array(image, dtype=np.float32) / 255)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)  # (C, H, W)
    mean_t, std_t = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return ((pixels - mean_t) / std_t)[None]


def attention_map_path(out: str, input_path: str, several: bool) -> Path:
    """Where the attention map of ``input_path`` goes: ``out``, or ``OUT_<input stem>.png`` with several inputs."""
    path = Path(out)
    return path.with_name(f"{path.stem}_{Path(input_path).stem}{path.suffix or '.png'}") if several else path


def classify_images(args: argparse.Namespace) -> int:
    """Print the top-k labels of each image; optionally (ViT) write attention-rollout overlays."""
    module = load_task(args.ckpt, tasks=IMAGE_TASKS)
    model, cfg = module.model, module.model.cfg
    is_vit = isinstance(model, ViT)
    if args.attention_map and not is_vit:
        raise UsageError(f"--attention-map needs a 'vit' checkpoint; {args.ckpt} is {module.task_name!r}")
    patch_size = cfg.patch_size if is_vit else 1  # the CNN takes any size
    size = None if args.keep_size else to_2tuple(cfg.image_size)
    top_k = min(args.top_k, cfg.num_classes)
    status = 0
    for path in args.inputs:
        try:
            image = read_image(path, cfg.in_channels, size, patch_size)
        except InputError as err:
            _error(str(err))
            status = 2
            continue
        maps = AttentionMaps() if args.attention_map else None
        pixels = to_tensor(image, module.mean, module.std)
        with torch.no_grad():
            logits = model(pixels) if maps is None else model.forward_head(model.forward_features(pixels, maps=maps))
        probs, indices = logits.softmax(dim=-1)[0].topk(top_k)
        print(path)
        for prob, index in zip(probs.tolist(), indices.tolist()):
            print(f"  {prob:.4f}  {module.class_names[index]}")
        if maps is not None:
            grid = check_divisible((image.height, image.width), cfg.patch_size)
            heat = patch_relevance(maps.self_attn, grid, cfg.pool)[0]
            out = attention_map_path(args.attention_map, path, len(args.inputs) > 1)
            try:
                image_format = Image.registered_extensions().get(out.suffix.lower(), "PNG")
                with atomic_open(out) as file:  # a failed write never leaves half a PNG behind
                    overlay_heatmap(image, heat).save(file, format=image_format)
            except (OSError, ValueError) as err:
                _error(f"{out}: cannot write the attention map ({err})")
                status = 2
                continue
            print(f"  attention map: {out}")
    return status


# task name in the checkpoint -> handler
def _classify_text(args: argparse.Namespace) -> int:
    from anyformer.text.classify import classify_text_args  # lazy: keeps the image path light

    return classify_text_args(args)


def _classify_audio(args: argparse.Namespace) -> int:
    from anyformer.speech.classify import classify_audio_files

    return classify_audio_files(args)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "vit": classify_images,
    "vision-cnn": classify_images,
    "bert-classify": _classify_text,
    "text-bow": _classify_text,
    "speech": _classify_audio,
    "speech-cnn": _classify_audio,
}


@reports_usage_errors(PROG)
def main(argv: list[str] | None = None) -> int:
    """Entry point of ``anyformer classify``; returns the exit code."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.top_k < 1:
        _error(f"--top-k must be >= 1, got {args.top_k}")
        return 2
    try:
        task = read_checkpoint(args.ckpt)["anyformer"]["task"]
        handler = HANDLERS.get(task)
        if handler is None:
            raise CheckpointError(
                f"{args.ckpt} is a {task!r} checkpoint; classify handles {sorted(HANDLERS)} checkpoints for now"
            )
        return handler(args)
    except CheckpointError as err:
        _error(str(err))
        return 2
