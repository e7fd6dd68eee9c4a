"""Small CNN image classifier: the yardstick the ViT is compared with (task ``vision-cnn``).

Blocks of conv3x3 -> BatchNorm -> ReLU -> 2x2 max-pool (``anyformer.core.baselines``), then a global average
over the image, dropout and a linear head. Pooling rounds up, so odd sides lose no pixel row and
any image size works, also at inference with ``anyformer classify --keep-size``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import Tensor, nn

from anyformer.core.baselines import conv_block
from anyformer.core.patches import to_pair


@dataclass
class ImageCNNConfig:
    """A convolutional image classifier."""

    image_size: int | tuple[int, int] = 28
    """Side of the training images, or (H, W); linked from the data module by the CLI. The network takes
    any size; ``anyformer classify`` resizes images to this one, as training did."""
    in_channels: int = 1
    """Image channels (1 grayscale, 3 RGB); linked from the data module."""
    num_classes: int = 10
    """Number of classes; linked from the data module."""
    channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    """Output channels of each conv block; every block halves the height and width (rounding up)."""
    dropout: float = 0.1
    """Dropout before the linear head."""

    def __post_init__(self) -> None:
        for name in ("in_channels", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageCNNConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        size = to_pair(self.image_size, "ImageCNNConfig.image_size")  # validates
        self.image_size = self.image_size if isinstance(self.image_size, int) else size
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"ImageCNNConfig.channels must be a non-empty list of ints >= 1, got {self.channels!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ImageCNNConfig.dropout must be in [0, 1), got {self.dropout!r}")


class ImageCNN(nn.Module):
    """Images (B, C, H, W) -> class logits (B, num_classes)."""

    def __init__(self, cfg: ImageCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        widths = [cfg.in_channels, *cfg.channels]
        self.blocks = nn.Sequential(*(conv_block(a, b, ceil_mode=True) for a, b in itertools.pairwise(widths)))
        self.dropout = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(widths[-1], cfg.num_classes)

    def forward_features(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images, any H and W -> (B, C') pooled features."""
        x = self.blocks(images)  # (B, C', ceil(H / 2^k), ceil(W / 2^k))
        return x.mean(dim=(2, 3))  # (B, C')

    def forward_head(self, features: Tensor) -> Tensor:
        """(B, C') features -> (B, num_classes) logits."""
        return self.head(self.dropout(features))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) normalized images -> (B, num_classes) logits."""
        return self.forward_head(self.forward_features(images))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
