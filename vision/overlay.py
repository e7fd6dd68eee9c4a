"""Drawing a patch-relevance map (``anyformer.core.rollout``) over the image it explains."""

from __future__ import annotations

import numpy as np
from PIL import Image
from torch import Tensor


def overlay_heatmap(image: Image.Image, heat: Tensor, min_side: int = 224, alpha: float = 0.5) -> Image.Image:
    """Blend a (Gh, Gw) map in [0, 1] (blue = low, red = high) over ``image``, upscaled to ``min_side``.

    Small images (8x8 digits) are enlarged with nearest-neighbour sampling so pixels stay visible.
    """
    width, height = image.size
    scale = max(1.0, min_side / min(width, height))
    size = (round(width * scale), round(height * scale))
    base = image.convert("RGB").resize(size, Image.Resampling.NEAREST)
    heat_img = Image.fromarray((heat.clamp(0, 1).cpu().numpy() * 255).astype(np.uint8))
    heat_arr = np.asarray(heat_img.resize(size, Image.Resampling.BILINEAR), dtype=np.float32) / 255  # (H, W)
    colors = np.stack([heat_arr, 0.25 * np.ones_like(heat_arr), 1 - heat_arr], axis=-1) * 255  # (H, W, 3)
    blended = (1 - alpha) * np.asarray(base, dtype=np.float32) + alpha * colors
    return Image.fromarray(blended.round().clip(0, 255).astype(np.uint8))
