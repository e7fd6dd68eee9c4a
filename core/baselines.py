"""The convolutional block of the CNN baselines (``anyformer.speech.cnn``, ``anyformer.vision.cnn``): the yardsticks
the transformers are compared with. Shape notation: B batch, C channels, H x W (or F x T) grid."""

from __future__ import annotations

from torch import nn


def conv_block(in_channels: int, out_channels: int, *, ceil_mode: bool = False) -> nn.Sequential:
    """conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool: (B, C, H, W) -> (B, C', H // 2, W // 2).

    Args:
        in_channels: C.
        out_channels: C'.
        ceil_mode: pool to ``ceil(H / 2) x ceil(W / 2)`` instead, so an odd last row or column is
            kept and any size (even 1x1) goes through any number of blocks.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),  # BN has the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, ceil_mode=ceil_mode),
    )
