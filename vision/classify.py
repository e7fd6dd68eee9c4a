"""The image side of ``anyformer classify`` (``anyformer.core.cli.classify`` dispatches on the
checkpoint's task): label images with a ``vit`` or ``vision-cnn`` checkpoint, optionally drawing
the ViT's attention rollout over each image.

    anyformer classify --ckpt runs/vit_digits/checkpoints/last.ckpt digit.png --top-k 3 --attention-map map.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from anyformer.core.attention import AttentionMaps
from anyformer.core.cli.attention import layer_index
from anyformer.core.cli.classify import attention_map_path, error
from anyformer.core.cli.errors import UsageError
from anyformer.core.patches import patch_grid, to_pair
from anyformer.core.rollout import patch_relevance
from anyformer.core.train.atomic import atomic_open
from anyformer.core.train.base import TaskModule
from anyformer.core.train.checkpoint import load_task
from anyformer.vision.overlay import overlay_heatmap
from anyformer.vision.vit import ViT

IMAGE_MODES = {1: "L", 3: "RGB"}
IMAGE_TASKS = ("vit", "vision-cnn")


def _is_wide_mode(mode: str) -> bool:
    """32-bit int/float and 16-bit gray images (``I``, ``F``, ``I;16*``): PIL clips them to 8 bits
    when converting to L or RGB, so every pixel above 255 would silently turn white."""
    return mode in ("I", "F") or mode.startswith("I;")


class InputError(UsageError):
    """A file that cannot be classified; the message names it."""


def read_image(
    path: str | Path, channels: int, size: tuple[int, int] | None, patch_size: int | tuple[int, int]
) -> Image.Image:
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
            patch = to_pair(patch_size)
            patch_grid((image.height, image.width), patch, patch)
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


@torch.no_grad()
def vit_rollout(module: TaskModule, image: Image.Image, layer: int | None = None) -> tuple[Tensor, Tensor]:
    """Attention rollout of the image summary through layers 1..L, read from the model's own
    ``forward_features(..., maps=...)``.

    Args:
        module: a ``vit`` module.
        image: an image with the model's channels and a size its patches cover.
        layer: L, 1-based (None: every layer).

    Returns:
        The (Gh, Gw) relevance of each patch, scaled to [0, 1], and the (num_classes,) logits.
    """
    model = module.model
    index = layer_index(model.cfg.transformer.n_layers, layer)
    maps = AttentionMaps()
    model.eval()
    logits = model.forward_head(model.forward_features(to_tensor(image, module.mean, module.std), maps=maps))
    grid = model.tokenizer.grid((image.height, image.width))
    relevance = patch_relevance(maps.self_attn[: index + 1], grid, model.cfg.pool, model.num_prefix_tokens)
    return relevance[0], logits[0]


def classify_images(args: argparse.Namespace) -> int:
    """Print the top-k labels of each image; optionally (ViT) write attention-rollout overlays."""
    module = load_task(args.ckpt, tasks=IMAGE_TASKS)
    model, cfg = module.model, module.model.cfg
    is_vit = isinstance(model, ViT)
    if args.attention_map and not is_vit:
        raise UsageError(f"--attention-map needs a 'vit' checkpoint; {args.ckpt} is {module.task_name!r}")
    patch_size = cfg.patch_size if is_vit else 1  # the CNN takes any size
    size = None if args.keep_size else to_pair(cfg.image_size)
    top_k = min(args.top_k, cfg.num_classes)
    status = 0
    for path in args.inputs:
        try:
            image = read_image(path, cfg.in_channels, size, patch_size)
        except InputError as err:
            error(str(err))
            status = 2
            continue
        if args.attention_map:
            heat, logits = vit_rollout(module, image)
        else:
            with torch.no_grad():
                logits = model(to_tensor(image, module.mean, module.std))[0]
        probs, indices = logits.softmax(dim=-1).topk(top_k)
        print(path)
        for prob, index in zip(probs.tolist(), indices.tolist()):
            print(f"  {prob:.4f}  {module.class_names[index]}")
        if args.attention_map:
            out = attention_map_path(args.attention_map, path, len(args.inputs) > 1)
            try:
                image_format = Image.registered_extensions().get(out.suffix.lower(), "PNG")
                with atomic_open(out) as file:  # a failed write never leaves half a PNG behind
                    overlay_heatmap(image, heat).save(file, format=image_format)
            except (OSError, ValueError) as err:
                error(f"{out}: cannot write the attention map ({err})")
                status = 2
                continue
            print(f"  attention map: {out}")
    return status
