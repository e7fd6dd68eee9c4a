"""The image classifier: the core ViT (``anyformer.core.vit``) with image defaults and the optional
convolutional stem (``anyformer.vision.stem``). timm weights in and out: ``anyformer.vision.timm``.
"""

from __future__ import annotations

from dataclasses import dataclass

from anyformer.core import vit as core_vit
from anyformer.core.patches import ShiftedPatchProjection, to_pair
from anyformer.vision.stem import STEMS, ConvStem


@dataclass
class ViTConfig(core_vit.ViTConfig):
    """An image classifier over patches; the fields it adds choose the tokenizer's projection."""

    image_size: int | tuple[int, int] = 28
    """Side of a square input image, or (H, W); linked from the data module by the CLI."""
    patch_size: int | tuple[int, int] = 4
    """Side P of a square patch, or (Ph, Pw); must divide the image size unless ``pad``."""
    in_channels: int = 1
    """Image channels (1 grayscale, 3 RGB); linked from the data module."""
    num_classes: int = 10
    """Number of classes; linked from the data module."""
    stem: str = "patch"
    """Tokenizer: ``patch`` (linear PxP patch projection, the ViT), ``conv`` (strided 3x3 convolutions
    to the same token grid, the hybrid ViT of Xiao et al. 2021; square P a power of two, no stride) or
    ``spt`` (Shifted Patch Tokenization, Lee et al. 2021: the patch and its four half-patch diagonal
    shifts, layer-normalized, projected linearly)."""
    stem_width: int = 32
    """Channels of the conv stem's first block (doubled at each of its log2(P) blocks)."""
    stem_depth: int = 1
    """Conv3x3 blocks per resolution of the conv stem: 1 (the paper's stem), or more (stride-1 blocks)."""

    def __post_init__(self) -> None:
        if self.stem not in STEMS:
            raise ValueError(f"ViTConfig.stem={self.stem!r} is not one of {list(STEMS)}")
        super().__post_init__()
        if self.stem == "conv":
            patch = to_pair(self.patch_size)
            stride = patch if self.patch_stride is None else to_pair(self.patch_stride)
            if patch[0] != patch[1] or patch[0] < 2 or patch[0] & (patch[0] - 1) or stride != patch:
                raise ValueError(
                    "ViTConfig.stem='conv' needs a patch_size that is a power of two >= 2, square and without "
                    f"patch_stride; got patch_size={self.patch_size!r}, patch_stride={self.patch_stride!r}"
                )


class ViT(core_vit.ViT):
    """Images (B, C, H, W) -> class logits (B, num_classes); ``stem='conv'`` tokenizes with a ``ConvStem``,
    ``stem='spt'`` with a ``ShiftedPatchProjection``."""

    def __init__(self, cfg: ViTConfig) -> None:
        stem = None
        if cfg.stem == "conv":
            side = to_pair(cfg.patch_size)[0]
            stem = ConvStem(cfg.in_channels, cfg.transformer.dim, side, cfg.stem_width, cfg.stem_depth)
        elif cfg.stem == "spt":
            stem = ShiftedPatchProjection(cfg.in_channels, cfg.transformer.dim, cfg.patch_size, cfg.patch_stride)
        super().__init__(cfg, proj=stem)
