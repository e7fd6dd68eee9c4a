"""The image side of ``anyformer attention``: a ViT's attention rollout (``anyformer.core.rollout``) over
the patches of one image, next to the image itself.

Without an INPUT image the first test image of the checkpoint's dataset is drawn. The checkpoint
does not name its dataset, so it is recognised among the built-in sources by its class names and
normalization statistics (which the checkpoint keeps); MNIST, Fashion-MNIST and CIFAR-10 are only
read from disk (where :mod:`anyformer.core.data` finds them: ``$ANYFORMER_DATA`` or the user
cache), never downloaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from anyformer.core.cli.attention import figure_title, layer_index, rollout_span
from anyformer.core.cli.errors import UsageError
from anyformer.core.data import DataError
from anyformer.core.patches import to_pair
from anyformer.vision.classify import IMAGE_MODES, read_image, vit_rollout
from anyformer.vision.overlay import overlay_heatmap

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from anyformer.core.train.base import TaskModule


def _matches(values: list[float], expected: list[float]) -> bool:
    return len(values) == len(expected) and np.allclose(values, expected, atol=1e-6)


def default_test_image(module: TaskModule) -> tuple[Image.Image, str]:
    """The first test image of the built-in dataset the checkpoint was trained on.

    Returns:
        The image (8-bit gray or RGB, at the dataset's size) and a description such as ``"digits test image 0"``.

    Raises:
        UsageError: the dataset is not a built-in one, or its test split is not on disk.
    """
    from anyformer.vision.data import SOURCES, TORCHVISION, ImageDataModule, load_digits_tensors

    channels = module.config.in_channels
    for source in SOURCES:
        if source == "imagefolder":
            continue
        data = ImageDataModule(source=source, channels=channels, download=False)  # reads no file
        same_stats = _matches(data.mean, module.mean) and _matches(data.std, module.std)
        if same_stats and data.class_names == module.class_names:
            break
    else:
        raise UsageError(
            "no INPUT image given and the checkpoint's dataset is none of the built-in sources "
            f"{[name for name in SOURCES if name != 'imagefolder']}; give an image file"
        )
    if source == "digits":
        images = load_digits_tensors()[2]  # (N, 1, 8, 8) uint8, the test split
    else:
        try:
            folder = data.data_folder()  # download=False: found on disk or DataUnavailableError
            images = torch.as_tensor(TORCHVISION[source](str(folder), train=False, download=False).data)
        except (DataError, RuntimeError) as err:  # RuntimeError: torchvision's "Dataset not found"
            raise UsageError(
                f"no INPUT image given and the {source} test split is not on disk ({err}); "
                "it is never downloaded here; give an image file"
            ) from None
        images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)  # (N, C, H, W)
    first = images[0].numpy()
    image = Image.fromarray(first[0]) if first.shape[0] == 1 else Image.fromarray(first.transpose(1, 2, 0))
    height, width = to_pair(module.config.image_size)
    image = image.convert(IMAGE_MODES[channels]).resize((width, height), Image.Resampling.BILINEAR)
    return image, f"{source} test image 0"


def vit_figure(module: TaskModule, source: str | None, layer: int | None) -> Figure:
    """``anyformer attention`` for a ``vit`` checkpoint; ``source`` is an image file."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cfg = module.config
    index = layer_index(cfg.transformer.n_layers, layer)  # a bad --layer fails before any file is read
    if source is None:
        image, name = default_test_image(module)
    else:
        image, name = read_image(source, cfg.in_channels, to_pair(cfg.image_size), cfg.patch_size), source
    heat, logits = vit_rollout(module, image, layer)
    prob, label = logits.softmax(-1).max(-1)
    overlay = overlay_heatmap(image, heat)

    fig = Figure(figsize=(8, 4.6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(image.convert("RGB").resize(overlay.size, Image.Resampling.NEAREST))
    left.set_title(f"{name}\npredicted {module.class_names[int(label)]} ({float(prob):.2f})", fontsize=9)
    right.imshow(overlay)
    summary = "[CLS] token" if cfg.pool == "cls" else "mean of the patch tokens"
    right.set_title(f"relevance of each patch to the {summary}\n(red high, blue low)", fontsize=9)
    for ax in (left, right):
        ax.axis("off")
    layers = rollout_span(index, cfg.transformer.n_layers)
    fig.suptitle(figure_title(module.task_name, layers, "attention over the patches, heads averaged"), fontsize=10)
    return fig
