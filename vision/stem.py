"""Convolutional stem: the patch projection replaced by a few strided 3x3 convolutions.

Xiao et al. 2021, "Early Convolutions Help Transformers See Better": a stem of stride-2 3x3
convolutions (BatchNorm, ReLU) followed by a 1x1 convolution to the model width produces the
same (Gh, Gw) token grid as the PxP patch projection, with a few percent more compute, and makes
ViTs train faster and less sensitively to the learning rate. It is the hybrid ViT's tokenizer;
the patch projection stays the default (it is what timm weights load into).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

STEMS = ("patch", "conv", "spt")
"""Tokenizer projections: linear patches, the conv stem here, Shifted Patch Tokenization (core.patches)."""


class ConvStem(nn.Module):
    """(B, C, H, W) -> (B, D, H/P, W/P) with log2(P) stride-2 conv3x3-BN-ReLU blocks and a 1x1 conv.

    The channels start at ``width`` and double at each stride-2 block, as in the paper's stems;
    ``depth - 1`` stride-1 conv3x3-BN-ReLU blocks follow each stride-2 one at its resolution
    (a deeper, more CNN-like stem for small images, where the encoder sees few tokens).

    Args:
        in_channels: C.
        dim: D.
        patch_size: P, a power of two >= 2 (each stride-2 block halves the height and width).
        width: channels of the first block.
        depth: conv3x3 blocks per resolution (1: the paper's stem).
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, width: int = 32, depth: int = 1) -> None:
        super().__init__()
        if patch_size < 2 or patch_size & (patch_size - 1):
            raise ValueError(
                f"the conv stem halves the image log2(P) times, so patch_size must be a power of two >= 2, "
                f"got {patch_size}; use stem='patch' for other sizes"
            )
        if width < 1 or depth < 1:
            raise ValueError(f"conv stem width and depth must be >= 1, got width={width}, depth={depth}")
        layers: list[nn.Module] = []
        channels = in_channels
        for block in range(int(math.log2(patch_size))):
            out = width * 2**block
            for stride in [2] + [1] * (depth - 1):
                layers += [
                    nn.Conv2d(channels, out, kernel_size=3, stride=stride, padding=1, bias=False),  # BN has the bias
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        layers.append(nn.Conv2d(channels, dim, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)
