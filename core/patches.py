"""Images as token sequences: cut into (possibly overlapping) patches, project each to D, prepend
[CLS], add 2-D positions (ViT, Dosovitskiy et al. 2021; AST, Gong et al. 2021).

Shape notation: B batch, C channels, H x W image, (Ph, Pw) patch size and (Sh, Sw) stride along
(height, width), (Gh, Gw) the patch grid, N = Gh * Gw patches, D width. Patches are numbered
row-major over the grid: token 1 + r*Gw + c covers rows [r*Sh, r*Sh + Ph) and columns
[c*Sw, c*Sw + Pw); token 0 is [CLS]. A patch's pixels are flattened in (row, column, channel)
order, as in MAE's ``patchify``.

A stride smaller than the patch makes neighbouring patches overlap, as in AST (16x16 patches,
stride 10). Either the patches tile the image exactly (``pad=False``, the ViT), or the image is
zero-padded at its bottom and right edges just enough for the grid to cover every row and column
(``pad=True``; zero is the mean of a normalized input).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anyformer.core.linear import Linear
from anyformer.core.positions import sinusoidal_table

POSITIONS = ("learned", "sinusoidal", "none")

Pair = tuple[int, int]


def to_pair(value: int | tuple[int, int] | list[int], name: str = "size") -> Pair:
    """``16`` -> ``(16, 16)``; ``(16, 8)`` stays (height, width); ValueError naming ``name`` otherwise."""
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name} must be >= 1 (one int, or a (height, width) pair), got {value!r}")
    return pair  # type: ignore[return-value]


def grid_length(length: int, patch: int, stride: int) -> int:
    """Patches along one axis of ``length`` cells: the fewest windows of ``patch`` cells, ``stride``
    apart from 0, that cover every cell, i.e. ``ceil(max(length - patch, 0) / stride) + 1``."""
    if min(length, patch, stride) < 1:
        raise ValueError(f"length, patch and stride must be >= 1, got {length}, {patch}, {stride}")
    return math.ceil(max(length - patch, 0) / stride) + 1


def _size_text(pair: Pair) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def patch_grid(size: Pair, patch: Pair, stride: Pair, *, pad: bool = False) -> tuple[Pair, Pair]:
    """The (Gh, Gw) grid of an (H, W) image and the (rows, columns) of zero padding it needs.

    Raises:
        ValueError: ``pad`` is False and the patches do not tile the image exactly.
    """
    grid = (grid_length(size[0], patch[0], stride[0]), grid_length(size[1], patch[1], stride[1]))
    padding = tuple((g - 1) * s + p - n for g, s, p, n in zip(grid, stride, patch, size))
    if pad or padding == (0, 0):
        return grid, padding  # type: ignore[return-value]
    if patch == stride:
        raise ValueError(
            f"image size {size[0]}x{size[1]} (HxW) is not divisible by the patch size {_size_text(patch)}; "
            f"use a size that is a multiple of {_size_text(patch)}"
        )
    raise ValueError(
        f"image size {size[0]}x{size[1]} (HxW) is not tiled exactly by {_size_text(patch)} patches every "
        f"{_size_text(stride)} (needs (H - Ph) and (W - Pw) multiples of the stride); pad the image"
    )


def patchify(images: Tensor, patch_size: int | Pair, stride: int | Pair | None = None, *, pad: bool = False) -> Tensor:
    """Cut images into the patches the tokenizer projects.

    Args:
        images: (B, C, H, W).
        patch_size: (Ph, Pw), or one int for square patches.
        stride: (Sh, Sw), or one int; None means ``patch_size`` (no overlap).
        pad: zero-pad the bottom and right edges as in :func:`patch_grid`.

    Returns:
        (B, N, Ph*Pw*C): row-major over the grid, each patch flattened as (row, column, channel).
    """
    patch = to_pair(patch_size, "patch_size")
    step = patch if stride is None else to_pair(stride, "stride")
    b, c, h, w = images.shape
    _, padding = patch_grid((h, w), patch, step, pad=pad)
    x = F.pad(images, (0, padding[1], 0, padding[0]))  # (B, C, H + pad_h, W + pad_w)
    x = F.unfold(x, kernel_size=patch, stride=step)  # (B, C*Ph*Pw, N), each patch (channel, row, column)
    x = x.reshape(b, c, patch[0] * patch[1], -1).permute(0, 3, 2, 1)  # (B, N, Ph*Pw, C)
    return x.reshape(b, x.shape[1], -1)


def unpatchify(
    patches: Tensor, image_size: int | Pair, patch_size: int | Pair, stride: int | Pair | None = None
) -> Tensor:
    """Inverse of :func:`patchify`: (B, N, Ph*Pw*C) -> (B, C, H, W) for an (H, W) ``image_size``.

    Each pixel is the mean of the patches covering it and any edge padding is dropped, so without
    overlap (stride = patch) this is the exact inverse; with overlap it is exact up to the rounding
    of that mean.
    """
    size, patch = to_pair(image_size, "image_size"), to_pair(patch_size, "patch_size")
    step = patch if stride is None else to_pair(stride, "stride")
    grid, padding = patch_grid(size, patch, step, pad=True)
    n, cells = grid[0] * grid[1], patch[0] * patch[1]
    if patches.ndim != 3 or patches.shape[1] != n or patches.shape[2] % cells:
        raise ValueError(
            f"patches of shape {tuple(patches.shape)} do not tile a {size[0]}x{size[1]} image with "
            f"{_size_text(patch)} patches every {_size_text(step)} (expected (B, {n}, {cells}) for one channel, "
            f"(B, {n}, {cells}*C) for C)"
        )
    b, c = patches.shape[0], patches.shape[2] // cells
    columns = patches.reshape(b, n, cells, c).permute(0, 3, 2, 1).reshape(b, c * cells, n)  # (B, C*Ph*Pw, N)
    padded = (size[0] + padding[0], size[1] + padding[1])
    total = F.fold(columns, padded, kernel_size=patch, stride=step)  # (B, C, H + pad_h, W + pad_w)
    count = F.fold(torch.ones_like(columns[:1, :cells]), padded, kernel_size=patch, stride=step)  # (1, 1, ...)
    return (total / count)[..., : size[0], : size[1]]


def resample_grid_positions(pos_embed: Tensor, old_grid: Pair, new_grid: Pair, num_prefix_tokens: int = 1) -> Tensor:
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


def sinusoidal_grid(grid: Pair, dim: int, base: float = 10000.0) -> Tensor:
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


def _sinusoidal_tokens(grid: Pair, dim: int) -> Tensor:
    """(1, 1 + Gh*Gw, D) sinusoidal positions with a zero [CLS] position first."""
    return torch.cat([torch.zeros(1, dim), sinusoidal_grid(grid, dim)])[None]


class PatchTokenizer(nn.Module):
    """Image (B, C, H, W) -> tokens (B, 1 + N, D): patch projection, [CLS], 2-D positions.

    The projection is ``Conv2d(C, D, kernel_size=(Ph, Pw), stride=(Sh, Sw))`` (timm's ``PatchEmbed``),
    a linear map of each ``patchify`` row; a builder may inject another ``proj`` that maps the
    (padded) image to the same (B, D, Gh, Gw) grid (a convolutional stem).

    ``learned`` positions are one (1, 1 + N, D) parameter with the [CLS] position first (timm's
    ``pos_embed`` layout), bicubically resampled when the input grid differs from the one built
    for; ``sinusoidal`` positions are computed for any grid (and are zero for [CLS]); ``none`` adds
    no positions (a bag of patches, the ablation baseline).

    Args:
        image_size: (H, W) or one side of a square image the model is built for.
        patch_size: (Ph, Pw), or one int for square patches.
        in_channels: C.
        dim: D.
        position: ``learned``, ``sinusoidal`` or ``none``.
        stride: (Sh, Sw), or one int; None means ``patch_size`` (no overlap).
        pad: zero-pad the bottom and right edges so the grid covers any size; False requires the
            patches to tile the image exactly.
        proj: replaces the linear patch projection.
    """

    def __init__(
        self,
        image_size: int | Pair,
        patch_size: int | Pair,
        in_channels: int,
        dim: int,
        position: str = "learned",
        *,
        stride: int | Pair | None = None,
        pad: bool = False,
        proj: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"PatchTokenizer position={position!r} is not one of {list(POSITIONS)}")
        self.image_size = to_pair(image_size, "image_size")
        self.patch_size = to_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else to_pair(stride, "patch_stride")
        self.in_channels, self.position, self.pad = in_channels, position, pad
        self.grid_size = self.grid(self.image_size)
        self.num_patches = math.prod(self.grid_size)
        self.proj = proj or nn.Conv2d(in_channels, dim, kernel_size=self.patch_size, stride=self.stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.cls_token, std=1e-6)
        self.pos_embed = None
        if position == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        elif position == "sinusoidal":
            self.register_buffer("sin_table", _sinusoidal_tokens(self.grid_size, dim), persistent=False)

    def grid(self, size: Pair) -> Pair:
        """The (Gh, Gw) patch grid of an (H, W) image; ValueError when the patches cannot cover it."""
        return patch_grid(tuple(size), self.patch_size, self.stride, pad=self.pad)[0]  # type: ignore[arg-type]

    def check_images(self, images: Tensor) -> Pair:
        """The patch grid of ``images``; ValueError naming the shape (or the NaN/inf pixels) when it
        cannot be tokenized."""
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"expected images of shape (B, {self.in_channels}, H, W) "
                f"({self.in_channels} channel{'s' if self.in_channels > 1 else ''}), got {tuple(images.shape)}"
            )
        grid = self.grid(tuple(images.shape[-2:]))
        # A NaN pixel would silently turn every logit of its image into NaN. The check costs one
        # reduction over the pixels; training already syncs on the loss every step. Skipped while
        # compiling or exporting: a data-dependent branch splits the graph and stops torch.export.
        if not torch.compiler.is_compiling() and not torch.isfinite(images).all():
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise ValueError(f"{bad} of {images.shape[0]} images hold NaN or infinite pixels; expected finite values")
        return grid

    def positions(self, grid: Pair) -> Tensor:
        """(1, 1 + Gh*Gw, D) positions, [CLS] first, for a (Gh, Gw) patch grid."""
        if self.pos_embed is not None:
            return resample_grid_positions(self.pos_embed, self.grid_size, grid)
        if grid == self.grid_size:
            return self.sin_table
        return _sinusoidal_tokens(grid, self.sin_table.shape[-1]).to(self.sin_table.device)

    def embed_patches(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, N, D): one projected vector per patch, before [CLS] and positions."""
        self.check_images(images)
        _, padding = patch_grid(tuple(images.shape[-2:]), self.patch_size, self.stride, pad=self.pad)  # type: ignore[arg-type]
        x = F.pad(images, (0, padding[1], 0, padding[0]))  # (B, C, H + pad_h, W + pad_w)
        x = self.proj(x)  # (B, D, Gh, Gw)
        return x.flatten(2).transpose(1, 2)  # (B, N, D), row-major over (Gh, Gw)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 1 + N, D), [CLS] first; any H and W the patches cover."""
        x = self.embed_patches(images)
        grid = self.grid(tuple(images.shape[-2:]))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, D)
        if self.position == "none":
            return x
        return x + self.positions(grid).to(x.dtype)

    def patch_map(self, values: Tensor, size: Pair | None = None) -> Tensor:
        """Spread per-patch values back over the image: each pixel gets the mean of the patches
        covering it (for drawing attention over overlapping patches).

        Args:
            values: (B, N), row-major over the grid of an image of ``size``.
            size: (H, W); None means the size the tokenizer is built for.

        Returns:
            (B, H, W).
        """
        n_cells = self.patch_size[0] * self.patch_size[1]
        patches = values.float()[:, :, None].expand(-1, -1, n_cells)  # (B, N, Ph*Pw): each patch constant
        return unpatchify(patches, size or self.image_size, self.patch_size, self.stride)[:, 0]


class ShiftedPatchProjection(nn.Module):
    """Shifted Patch Tokenization (Lee et al. 2021, "Vision Transformer for Small-Size Datasets"): a
    patch projection that also sees its neighbours.

    The image is stacked with four copies of itself shifted by half a patch along the diagonals
    (zeros shifted in: the mean of a normalized input), cut into patches, each flattened patch of the
    5C channels layer-normalized and linearly projected. Linear in the pixels but for the norm: no
    convolution. Maps (B, C, H, W) to the (B, D, Gh, Gw) grid a ``PatchTokenizer`` ``proj`` returns.

    Args:
        in_channels: C.
        dim: D.
        patch_size: (Ph, Pw), or one int.
        stride: (Sh, Sw), or one int; None means ``patch_size``.
    """

    SHIFTS = ((1, 1), (1, -1), (-1, 1), (-1, -1))
    """(down, right) signs of the four diagonal copies, in units of half a patch."""

    def __init__(self, in_channels: int, dim: int, patch_size: int | Pair, stride: int | Pair | None = None) -> None:
        super().__init__()
        self.patch_size = to_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else to_pair(stride, "patch_stride")
        patch_dim = (1 + len(self.SHIFTS)) * in_channels * self.patch_size[0] * self.patch_size[1]
        self.norm = nn.LayerNorm(patch_dim)
        self.proj = Linear(patch_dim, dim)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, D, Gh, Gw); the patches must tile the image (the tokenizer pads it first)."""
        half_h, half_w = self.patch_size[0] // 2, self.patch_size[1] // 2
        copies = [images]
        for down, right in self.SHIFTS:
            # F.pad's negative widths crop: pad one side by half a patch and crop the other.
            dx, dy = right * half_w, down * half_h
            copies.append(F.pad(images, (dx, -dx, dy, -dy)))  # (B, C, H, W), content moved by (dy, dx)
        stacked = torch.cat(copies, dim=1)  # (B, 5C, H, W)
        grid, _ = patch_grid(tuple(images.shape[-2:]), self.patch_size, self.stride)  # type: ignore[arg-type]
        x = self.proj(self.norm(patchify(stacked, self.patch_size, self.stride)))  # (B, N, D)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *grid)  # (B, D, Gh, Gw)
