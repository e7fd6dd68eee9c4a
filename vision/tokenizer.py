"""Images as token sequences: cut into PxP patches, project each to D, prepend [CLS], add 2-D positions.

Shape notation: B batch, C channels, H x W image, P patch size, (Gh, Gw) = (H/P, W/P) the patch
grid, N = Gh * Gw patches, D width. Patches are numbered row-major over the grid (token 1 + r*Gw + c
is the patch in grid row r, column c; token 0 is [CLS]) and a patch's pixels are flattened in
(row, column, channel) order, as in MAE's ``patchify``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.positions import sinusoidal_table
from anyformer.vision.stem import STEMS, ConvStem

POSITIONS = ("learned", "sinusoidal", "none")


def to_2tuple(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``28`` -> ``(28, 28)``; ``(32, 48)`` stays (H, W)."""
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def check_divisible(image_size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """The (Gh, Gw) patch grid of an (H, W) image; ValueError if P does not divide H and W."""
    height, width = image_size
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"image size {height}x{width} (HxW) is not divisible by the patch size {patch_size}; "
            f"use a size that is a multiple of {patch_size}"
        )
    return height // patch_size, width // patch_size


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping patches.

    Args:
        images: (B, C, H, W), H and W multiples of ``patch_size``.
        patch_size: P.

    Returns:
        (B, N, P*P*C): row-major over the grid, each patch flattened as (row, column, channel).
    """
    b, c, h, w = images.shape
    gh, gw = check_divisible((h, w), patch_size)
    p = patch_size
    x = images.reshape(b, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, Gh, Gw, P, P, C)
    return x.reshape(b, gh * gw, p * p * c)


def unpatchify(patches: Tensor, patch_size: int, image_size: int | tuple[int, int]) -> Tensor:
    """Exact inverse of :func:`patchify`: (B, N, P*P*C) -> (B, C, H, W) for an (H, W) ``image_size``."""
    b, n, patch_dim = patches.shape
    (h, w), p = to_2tuple(image_size), patch_size
    gh, gw = check_divisible((h, w), p)
    if n != gh * gw or patch_dim % (p * p):
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not tile a {h}x{w} image with {p}x{p} patches "
            f"(expected (B, {gh * gw}, {p}*{p}*C))"
        )
    c = patch_dim // (p * p)
    x = patches.reshape(b, gh, gw, p, p, c)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, Gh, P, Gw, P)
    return x.reshape(b, c, h, w)


def resample_grid_positions(
    pos_embed: Tensor, old_grid: tuple[int, int], new_grid: tuple[int, int], num_prefix_tokens: int = 1
) -> Tensor:
    """Bicubically resize a learned position grid, as timm's ``resample_abs_pos_embed``.

    Args:
        pos_embed: (1, prefix + Gh*Gw, D) with the prefix ([CLS]) positions first; they are kept.
        old_grid: (Gh, Gw) the embedding was trained for.
        new_grid: (Gh', Gw') wanted.

    Returns:
        (1, prefix + Gh'*Gw', D); ``pos_embed`` itself when the grids are equal.
    """
    if tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)  # (1, D, Gh, Gw)
    grid = F.interpolate(grid, size=new_grid, mode="bicubic", antialias=True)  # (1, D, Gh', Gw')
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(pos_embed.dtype)  # (1, Gh'*Gw', D)
    return torch.cat([prefix, grid], dim=1)


def sinusoidal_grid(grid: tuple[int, int], dim: int, base: float = 10000.0) -> Tensor:
    """Fixed 2-D sinusoidal positions: the first half of the channels encodes the row, the rest the column.

    Returns:
        (Gh*Gw, D), row-major over the grid.
    """
    gh, gw = grid
    row_dim = dim // 2
    rows = sinusoidal_table(torch.arange(gh), row_dim, base)  # (Gh, D/2)
    cols = sinusoidal_table(torch.arange(gw), dim - row_dim, base)  # (Gw, D - D/2)
    rows = rows[:, None, :].expand(gh, gw, row_dim)
    cols = cols[None, :, :].expand(gh, gw, dim - row_dim)
    return torch.cat([rows, cols], dim=-1).reshape(gh * gw, dim)


class PatchTokenizer(nn.Module):
    """Image (B, C, H, W) -> tokens (B, 1 + N, D): patch projection, [CLS], 2-D positions.

    The projection is ``Conv2d(C, D, kernel_size=P, stride=P)`` (timm's ``PatchEmbed``), which is
    a linear map of each ``patchify`` row; with ``stem="conv"`` it is a :class:`ConvStem` giving the
    same (Gh, Gw) grid of tokens from overlapping strided convolutions (the hybrid ViT).

    ``learned`` positions are one (1, 1 + N, D) parameter with the [CLS] position first (timm's
    ``pos_embed`` layout), bicubically resampled when the input grid differs from the training one;
    ``sinusoidal`` positions are computed for any grid (and are zero for [CLS]); ``none`` adds no
    positions (a bag of patches, the ablation baseline).

    Args:
        image_size: (H, W) or one side of a square image the model is built for.
        patch_size: P, the side of a square patch.
        in_channels: C.
        dim: D.
        position: ``learned``, ``sinusoidal`` or ``none``.
        stem: ``patch`` (linear patch projection) or ``conv`` (:class:`ConvStem`; P a power of two).
        stem_width: channels of the conv stem's first block.
        stem_depth: conv3x3 blocks per resolution of the conv stem.
    """

    def __init__(
        self,
        image_size: int | tuple[int, int],
        patch_size: int,
        in_channels: int,
        dim: int,
        position: str = "learned",
        stem: str = "patch",
        stem_width: int = 32,
        stem_depth: int = 1,
    ) -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"PatchTokenizer position={position!r} is not one of {list(POSITIONS)}")
        if stem not in STEMS:
            raise ValueError(f"PatchTokenizer stem={stem!r} is not one of {list(STEMS)}")
        self.image_size, self.patch_size, self.in_channels = to_2tuple(image_size), patch_size, in_channels
        self.grid_size = check_divisible(self.image_size, patch_size)
        self.num_patches = math.prod(self.grid_size)
        self.position = position
        if stem == "patch":
            self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        else:
            self.proj = ConvStem(in_channels, dim, patch_size, stem_width, stem_depth)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        if position == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif position == "sinusoidal":
            self.pos_embed = None
            table = torch.cat([torch.zeros(1, dim), sinusoidal_grid(self.grid_size, dim)])[None]  # (1, 1+N, D)
            self.register_buffer("sin_table", table, persistent=False)
        else:
            self.pos_embed = None

    def check_images(self, images: Tensor) -> tuple[int, int]:
        """The patch grid of ``images``; ValueError naming the shape (or the NaN/inf pixels) when it
        cannot be tokenized."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, H, W) "
                f"({self.in_channels} channel{'s' if self.in_channels > 1 else ''}), got {tuple(images.shape)}"
            )
        grid = check_divisible(tuple(images.shape[-2:]), self.patch_size)
        # A NaN pixel would silently turn every logit of its image into NaN. The check costs one
        # reduction over the pixels; training already syncs on the loss every step.
        if not torch.isfinite(images).all():
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise ValueError(f"{bad} of {images.shape[0]} images hold NaN or infinite pixels; expected finite values")
        return grid

    def positions(self, grid: tuple[int, int]) -> Tensor:
        """(1, 1 + Gh*Gw, D) positions, [CLS] first, for a (Gh, Gw) patch grid."""
        if self.pos_embed is not None:
            return resample_grid_positions(self.pos_embed, self.grid_size, grid)
        if grid == self.grid_size:
            return self.sin_table
        dim = self.sin_table.shape[-1]
        table = torch.cat([torch.zeros(1, dim), sinusoidal_grid(grid, dim)])[None]
        return table.to(self.sin_table.device)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N, D), [CLS] first; H and W any multiples of P."""
        grid = self.check_images(images)
        x = self.proj(images)  # (B, D, Gh, Gw)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        if self.position == "none":
            return x
        return x + self.positions(grid).to(x.dtype)
